"""Stage ``pipeline``: the whole chain in one run directory — zc → gvae → cluster → ccnf → search → sg → generate →
evaluate — each stage reading the previous stages' artifacts.

    python -m lightning_nas pipeline --config configs/pipeline/tiny.yaml [--workdir runs/demo] [--until sg]

Every stage is one of the shipped stage configs (``configs/zc/tiny.yaml``, ``configs/gvae.yaml``, …) with the path
prefix ``rewrite`` (``runs/tiny``) replaced by ``workdir`` and the pipeline's ``set`` overrides applied with OmegaConf
(dotted keys, e.g. ``trainer.max_epochs: 4``; ``${workdir}`` in a value is the run directory). The resolved settings
are written to
``<workdir>/pipeline/<stage>.yaml`` — that file is what the stage runs, and its digest, chained with the previous
stages' digests, is the stage's fingerprint.

**Skipping and resuming.** ``<workdir>/pipeline/state.json`` records each finished stage's fingerprint and time. A
stage whose fingerprint matches and whose artifact exists is skipped; a changed config, a missing artifact or a stage
that never finished reruns that stage *and every stage after it*, and the log says which and why. A killed pipeline
rerun with the same config finishes the job without redoing finished work: finished stages are skipped, and the stage
that was killed resumes where it stood — the zc and search stages continue from the archive, the training stages from
their ``last.ckpt`` (``--ckpt_path last``) when the killed attempt had the same fingerprint. Outputs of an earlier
config that a rerun would overwrite are moved to ``<workdir>/pipeline/previous/``, never deleted. One pipeline at a
time per run directory: a second one started on the same ``workdir`` stops at once with an error naming the running
one (an OS lock on ``<workdir>/pipeline/lock``, released when that process ends, even killed).

W&B: every stage's runs join the group ``pipeline-<workdir name>`` (``WANDB_RUN_GROUP``), each with its config,
metrics and pictures; a last run ``pipeline-summary`` of the same group holds the table of stages (status, seconds,
reason), the final architecture's cost and test metric and its picture (offline unless ``WANDB_MODE`` says
otherwise). With ``WANDB_MODE=disabled`` nothing is logged; ``wandb: false`` skips the summary run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .stages import CHAIN, RunDir

STAGES: dict[str, tuple[str, str]] = {c.name: (c.kind, c.artifact) for c in CHAIN}
"""name → (kind, artifact that proves the stage finished, relative to the workdir), in chain order: a view of
:data:`lightning_nas.stages.COMMANDS`."""


UNTRACKED = ("wandb",)  # settings that change what is logged, not what a stage computes: not in the fingerprint


@dataclass
class PipelineConfig:
    """Settings of the ``pipeline`` stage.

    Args:
        workdir: the run directory every stage writes into.
        rewrite: the path prefix of the stage configs replaced by ``workdir``.
        stages: per stage (all eight, or those up to ``until``), ``{config: <YAML of the stage, or a list of YAMLs
            merged in order (e.g. a task and a training recipe)>, set: {dotted.key: value}}`` (``${workdir}`` in a
            value: the run directory).
        objective: one search objective for the whole chain (:data:`lightning_nas.zc.objectives.OBJECTIVES`): the
            ``objective`` of the search and generate stages (the SG learns from that search's history, and the
            report's comparison ranks by what generate ranked by); ``null`` leaves each stage's own setting.
        until: stop after this stage (default: run all).
        wandb: log the summary run to W&B (the stages log through their own configs).
    """

    workdir: str = "runs/demo"
    rewrite: str = "runs/tiny"
    stages: dict[str, dict] = field(default_factory=dict)
    objective: str | None = None
    until: str | None = None
    wandb: bool = True

    def __post_init__(self):
        if self.objective is not None:
            from .zc.objectives import objective_for

            objective_for(self.objective)
        if self.until is not None and self.until not in STAGES:
            raise ValueError(f"until: {self.until!r}; choose from {', '.join(STAGES)}")
        chain = list(STAGES)[: list(STAGES).index(self.until) + 1] if self.until else list(STAGES)
        missing = [s for s in chain if s not in self.stages]
        unknown = sorted(set(self.stages) - set(STAGES))
        if missing or unknown:
            raise ValueError(f"stages: missing {missing}, unknown {unknown}; the chain is {', '.join(STAGES)}"
                             + (f" (up to until: {self.until})" if self.until else ""))
        for name, spec in self.stages.items():
            if not isinstance(spec, dict) or "config" not in spec or set(spec) - {"config", "set"}:
                raise ValueError(f"stages.{name}: expected {{config: <YAML path or list>, set: {{dotted.key: value}}}}")
            for path in _config_paths(spec):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"stages.{name}.config: {path} does not exist")


def _config_paths(spec: dict) -> list[str]:
    return [spec["config"]] if isinstance(spec["config"], str) else list(spec["config"])


OBJECTIVE_STAGES = ("search", "generate")
"""The stages whose ``objective`` the pipeline's ``objective`` sets."""


def resolve_stage(name: str, spec: dict, workdir: str, rewrite: str, objective: str | None = None) -> dict:
    """The settings a stage runs with (OmegaConf): its YAML files merged in order, re-rooted at ``workdir`` (every
    path value starting with ``rewrite``), then the ``set`` overrides applied as dotted keys (``a.b.c``; a list item
    by its index, ``trainer.callbacks.0.init_args.dirpath``), with ``${workdir}`` interpolated; ``objective`` (the
    pipeline's) replaces the stage's own for :data:`OBJECTIVE_STAGES`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    # yaml.safe_load keeps YAML's own types (OmegaConf's loader would read 1e-3 as a float where YAML reads a
    # string), so a stage sees exactly what it would read from the file itself
    config = OmegaConf.merge(*(OmegaConf.create(yaml.safe_load(Path(p).read_text()) or {})
                               for p in _config_paths(spec)))
    root = OmegaConf.create({"workdir": workdir, "stage": _rewrite(OmegaConf.to_container(config), rewrite, workdir)})
    try:
        for key, value in (spec.get("set") or {}).items():
            OmegaConf.update(root, f"stage.{key}", value, merge=False)  # a mapping value replaces
        resolved = OmegaConf.to_container(root, resolve=True)["stage"]
    except (OmegaConfBaseException, TypeError, IndexError) as err:  # e.g. a list entered by a name, not an index
        raise ValueError(f"stages.{name}.set: {err}".splitlines()[0] + " (a list item is set by its index: "
                         "trainer.callbacks.0.init_args.dirpath)") from None
    if STAGES[name][0] == "stage":
        resolved["workdir"] = workdir
    if objective is not None and name in OBJECTIVE_STAGES:
        resolved["objective"] = objective
    return resolved


def _rewrite(value: Any, old: str, new: str) -> Any:
    """``value`` with every string starting with ``old`` re-rooted at ``new`` (recursively)."""
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, old, new) for k, v in value.items()}
    return value


def with_search_runs(settings: dict, run: RunDir) -> dict:
    """The sg stage's settings with its history limited to the search stage's current runs (``run_<budget>`` of
    ``search/metrics.json``): a search rerun after an upstream change (say a new CCNF) writes new run ids next to the
    old runs, which stay in the archive, and the SG must learn from this chain's search only. An explicit
    ``data.init_args.runs`` wins; without a search ``metrics.json`` the settings are returned unchanged."""
    data = settings.get("data") or {}
    args = data.get("init_args") or {}
    path = run.metrics("search")
    if not str(data.get("class_path", "")).endswith("HLSequenceDataModule") or args.get("runs") is not None \
            or not path.is_file():
        return settings
    runs = [v for k, v in json.loads(path.read_text()).items() if k.startswith("run_") and isinstance(v, str)]
    return {**settings, "data": {**data, "init_args": {**args, "runs": runs}}}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_fingerprint(name: str, settings: dict, upstream: str = "") -> str:
    """The digest of a stage's settings (logging-only keys left out) chained with ``upstream`` (the previous
    stage's); for the stages that score with an objective (:data:`OBJECTIVE_STAGES`) also the shipped trainability
    range (``lightning_nas/zc/trainable_range.json``): a new range changes what a guarded search keeps, so it reruns
    the search and everything after it."""
    from .zc.trainability import RANGE_FILE

    text = yaml.safe_dump({k: v for k, v in settings.items() if k not in UNTRACKED}, sort_keys=True)
    if name in OBJECTIVE_STAGES and RANGE_FILE.is_file():
        text += RANGE_FILE.read_text()
    return _digest(upstream + text)


def _run(name: str, settings_path: Path, resume: bool) -> None:
    """Run one stage on its resolved settings file."""
    kind = STAGES[name][0]
    if kind == "lightning":
        from .lightning_cli import NASCLI

        NASCLI(args=["fit", "--config", str(settings_path), *(["--ckpt_path", "last"] if resume else [])])
    elif kind == "evaluate":
        from .lightning_cli import evaluate

        evaluate(["--config", str(settings_path), *(["--ckpt_path", "last"] if resume else [])])
    else:
        from .cli import main

        main([name, "--config", str(settings_path)])
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:  # one W&B run per stage, not one shared by all
        wandb.finish()


class RunDirBusy(ValueError):
    """Another pipeline holds the run directory (a usage error: one paragraph, rc 2)."""


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold ``lock`` (``fcntl.flock``, non-blocking) for the block, or raise :class:`RunDirBusy` naming the holder
    (its pid and start time, written in the file). The OS drops the lock when the holder's process ends — a killed
    pipeline leaves nothing to clean up. Where ``fcntl`` does not exist (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirBusy(f"{lock.parent.parent}: another pipeline is running in this run directory ({holder}); "
                             "wait for it to finish, stop it, or give this one another --workdir — two pipelines "
                             "on one run directory would overwrite each other's stages") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def run_pipeline(config: PipelineConfig, log=print) -> dict:
    """Run (or resume) the chain; returns ``{"stages": {stage: {"status": "ran" | "skipped", "seconds", "reason"}},
    "architecture": <generate's metrics>, "evaluation": <evaluate's metrics>}`` (also ``pipeline/summary.json``).
    One at a time per run directory (:func:`exclusive`)."""
    meta = RunDir(Path(config.workdir)).pipeline
    meta.mkdir(parents=True, exist_ok=True)
    with exclusive(meta / "lock"):
        return _run_pipeline(config, log)


def _run_pipeline(config: PipelineConfig, log) -> dict:
    workdir = Path(config.workdir)
    run = RunDir(workdir)
    meta = run.pipeline
    state_path = meta / "state.json"
    try:
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # written atomically: only an edit damages it
        raise ValueError(f"{state_path}: not valid JSON ({err}); delete it and rerun: every stage runs again (zc and "
                         "search resume from the archive, nothing stored is lost)") from None
    os.environ.setdefault("WANDB_RUN_GROUP", f"pipeline-{workdir.name}")
    os.environ.setdefault("WANDB_MODE", "offline")  # one mode for every stage of this process

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, state_path)

    summary, upstream, dirty = {}, "", False
    for name in STAGES:
        settings = resolve_stage(name, config.stages[name], config.workdir, config.rewrite, config.objective)
        text = yaml.safe_dump(settings, sort_keys=True)
        fingerprint = stage_fingerprint(name, settings, upstream)
        upstream = fingerprint
        record = state.get(name, {})
        artifact = run.artifact(name)
        if not record:
            reason = "never run"
        elif dirty:
            reason = "an earlier stage reran"
        elif record.get("finished") and record.get("fingerprint") == fingerprint and artifact.exists():
            log(f"[pipeline] {name}: done before with the same settings, skipped")
            summary[name] = {"status": "skipped", "seconds": record.get("seconds", 0.0)}
            if config.until == name:
                break
            continue
        elif record.get("fingerprint") != fingerprint:
            reason = "its settings or an earlier stage's changed"
        elif not record.get("finished"):
            reason = "the last attempt did not finish"
        else:
            reason = f"its artifact {artifact} is missing"
        dirty = True
        resume = record.get("fingerprint") == fingerprint and not record.get("finished")
        if record and record.get("fingerprint") != fingerprint:  # keep an earlier config's outputs, out of the way
            folder = run.stage(name)
            if folder.exists():
                target = meta / "previous" / f"{name}-{record.get('fingerprint', 'unknown')}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(folder), target)
        if name == "sg":  # after the fingerprint: the run ids follow from the search stage's, which is in it
            text = yaml.safe_dump(with_search_runs(settings, run), sort_keys=True)
        settings_path = meta / f"{name}.yaml"
        settings_path.write_text(text)
        can_resume = resume and STAGES[name][0] in ("lightning", "evaluate") and \
            run.checkpoint(name).is_file()
        log(f"[pipeline] {name}: running ({reason}){' — resuming from last.ckpt' if can_resume else ''}")
        state[name] = {"fingerprint": fingerprint, "finished": False, "started": time.time()}
        save()
        start = time.perf_counter()
        _run(name, settings_path, can_resume)
        seconds = round(time.perf_counter() - start, 1)
        if not artifact.exists():
            raise RuntimeError(f"stage {name} finished without writing {artifact}")
        state[name].update(finished=True, seconds=seconds)
        save()
        summary[name] = {"status": "ran", "seconds": seconds, "reason": reason}
        log(f"[pipeline] {name}: finished in {seconds:.0f} s")
        if config.until == name:
            break
    result = {"stages": summary}
    generated, evaluated = run.metrics("generate"), run.metrics("evaluate")
    if "generate" in summary and generated.is_file():
        g = json.loads(generated.read_text())
        result["architecture"] = {k: g.get(k) for k in ("arch", "params", "macs", "flops", "objective", "score", "tcet",
                                                       "zc_evaluations")}
    if "evaluate" in summary and evaluated.is_file():
        e = json.loads(evaluated.read_text())
        result["evaluation"] = {k: e.get(k) for k in ("task", "test_metric_name", "test_metric", "epochs")}
    (meta / "summary.json").write_text(json.dumps(result, indent=2))
    if config.wandb:
        _log_summary(workdir, result)
    return result


def _log_summary(workdir: Path, result: dict) -> None:
    """The final W&B run of the group: the stage table, the architecture's cost and test metric, its picture."""
    from .tracking import stage_run

    run = stage_run("pipeline-summary", workdir / "pipeline", {"workdir": str(workdir)})
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["stage", "status", "seconds", "reason"])
    for name, record in result["stages"].items():
        table.add_data(name, record["status"], record["seconds"], record.get("reason", ""))
    numbers = {"total_seconds": sum(r["seconds"] for r in result["stages"].values())}
    for key, value in {**result.get("architecture", {}), **result.get("evaluation", {})}.items():
        if isinstance(value, int | float):
            numbers[f"final/{key}"] = value
    picture = RunDir(workdir).stage("generate") / "arch.png"
    run.log({"stages": table, **numbers,
             **({"final/architecture": wandb.Image(str(picture))} if picture.is_file() else {})})
    run.summary.update(numbers)
    run.finish()


def main(argv: list[str]) -> dict:
    from .cli import run_stage

    return run_stage(argv, PipelineConfig, run_pipeline, "pipeline", __doc__)
