"""Found vs alternatives over generate seeds (issue #29, item 5): does the chain's answer train better than what a
user would get without it, within the same budget?

    python benchmarks/found_vs.py --workdir runs/demo [--generate-seeds 0 1 2 3 4] [--train-seeds 0 1 2]
                                  [--workers 2] [--threads 1] [--out benchmarks/results/found_vs.jsonl]

On one pipeline run's pretrained stages (``--workdir``: zc … sg done, e.g. ``make demo``'s ``runs/demo``), for each
generate seed g: the run's own ``generate`` config (``<workdir>/pipeline/generate.yaml``) with ``seed: g`` and its
output in ``<workdir>/found_vs/generate-s<g>`` — **found**; and, from :func:`lightning_nas.compare.alternatives` with
seed g: **random** (the best by the run's objective of as many random in-budget networks as generate scored),
**random-no-proxy** (one uniform random in-budget network: over the generate seeds, the plain null's draws) and
**evo** (Evo(objective) after as many evaluations); **hand-picked** (``configs/archs/digits.json``, the network a user
would train without a search, possibly over budget) once, ``generate_seed`` null. Every network is trained with every
``--train-seeds`` seed with the run's resolved evaluate recipe (``<workdir>/pipeline/evaluate.yaml``) for 15 epochs,
its test accuracy taken after epoch 5 and after epoch 15 of the same run (the cosine schedule is the 15-epoch one's,
as in ``data/graphnet_digits``): two rows per training.

Rows (``--out``, one JSON line each, the issue's contract): ``name``, ``generate_seed``, ``train_seed``, ``epochs``,
``test_metric``, ``grad_norm_at_init``, ``params``, ``macs``, ``objective``, plus ``selection`` (how the run's
generate chose among its candidates, :func:`selection_label`; with a final selection, random and evo get the same
one, :mod:`lightning_nas.compare`), ``spec``, ``answer`` (generate's
path, found only), ``seconds``, ``commit``. Resumable: a rerun skips the (name, generate_seed, train_seed, spec)
trainings already there; another machine's generators may give other architectures for the same seeds (issue #30),
and those are trained as new rows (``spec`` tells them apart). ``--summary`` only rewrites the table
(``found_vs.md``): per name the mean test accuracy at 5 and 15 epochs and the mean paired difference found − name
over the (generate seed, train seed) pairs, with its standard error.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

OUT = REPO / "benchmarks" / "results" / "found_vs.jsonl"
HAND_PICKED = REPO / "configs" / "archs" / "digits.json"
EPOCHS, EARLY_EPOCH = 15, 5
NAMES = ("found", "hand-picked", "random", "random-no-proxy", "evo")


SHARED = ("hand-picked", "random-no-proxy")
"""Rows that do not depend on the run's final selection (the same networks whatever it is): every setting's table
counts them."""


def selection_label(select) -> str:
    """How the run's generate chose among its candidates (``none``: the objective's best; e.g. ``top10-train_loss``)
    — found, random and evo rows of different settings are different experiments."""
    return f"top{select.top_n}-{select.rank}" if select.top_n else "none"


def reuse(nets: list[dict], train_seeds: list[int], stored: list[dict], out: Path) -> None:
    """A network this run's setting chose that another setting's rows already trained (same name, seeds and spec: the
    same training) counts for this setting too: its rows are copied with this setting's fields (``reused_from``)."""
    have = {(r["name"], r["generate_seed"], r["train_seed"], spec_key(r["spec"]), setting(r)) for r in stored}
    copies = []
    for net in nets:
        if net["name"] in SHARED:
            continue
        for t in train_seeds:
            key = (net["name"], net["generate_seed"], t, spec_key(net["spec"]))
            if (*key, setting(net)) in have:
                continue
            for r in stored:
                if (r["name"], r["generate_seed"], r["train_seed"], spec_key(r["spec"])) == key:
                    copies.append({**r, **{k: net[k] for k in ("objective", "guard_hi", "selection", "score")
                                           if k in net}, "reused_from": setting(r)})
    if copies:
        with open(out, "a") as f:
            for row in copies:
                f.write(json.dumps(row) + "\n")
        print(f"[found-vs] {len(copies)} rows reused from another setting's identical trainings", flush=True)


def setting(row: dict) -> str:
    """The experiment a found/random/evo row belongs to: the run's objective (with the trainability guard's upper
    bound, ``guard_hi``, when guarded — the bound moved from 228 to 108 on 2026-12-07) and its final selection."""
    objective = row.get("objective") or "?"
    if row.get("guard_hi") is not None:
        objective += f" (‖∇θL‖ ≤ {row['guard_hi']:.0f})"
    return f"{objective}, selection {row.get('selection', 'none')}"


def spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def networks(workdir: Path, generate_seeds: list[int], log=print) -> list[dict]:
    """The networks to train: one entry per (name, generate seed), the hand-picked one once."""
    import yaml

    from lightning_nas.compare import _evaluator, alternatives, run_select
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.space.arch import Arch
    from lightning_nas.space.network import task_network
    from lightning_nas.zc.trainability import init_grad_norm

    resolved = workdir / "pipeline" / "generate.yaml"
    if not resolved.is_file():
        raise FileNotFoundError(f"{resolved}: no resolved generate config; run the pipeline through generate first "
                                "(make demo)")
    base = yaml.safe_load(resolved.read_text())
    evaluator, _ = _evaluator(workdir)
    selection = selection_label(run_select(workdir))
    out = []

    def entry(name, seed, arch, extra=None):
        evaluation = evaluator(arch) if name != "hand-picked" else None
        cost = evaluator.cost(task_network(evaluator.task, arch))
        out.append({"name": name, "generate_seed": seed, "spec": arch.to_json(), "objective": evaluator.objective,
                    "guard_hi": evaluator.trainable.hi if evaluator.trainable is not None else None,
                    "score": evaluation.score if evaluation is not None else None,
                    "grad_norm_at_init": init_grad_norm(arch, evaluator.task), "params": cost["params"],
                    "macs": cost["macs"], "selection": selection, **(extra or {})})

    cache = workdir / "found_vs" / "networks.json"  # a resume trains the same networks without searching again
    cached = json.loads(cache.read_text()) if cache.is_file() else []
    if {n["generate_seed"] for n in cached if n["name"] == "found"} >= set(generate_seeds):
        return [n for n in cached if n["generate_seed"] in (*generate_seeds, None)]
    for g in generate_seeds:
        gen_out = workdir / "found_vs" / f"generate-s{g}"
        if not (gen_out / "arch.json").is_file():
            config = GenerateConfig(**{**base, "seed": g, "out": str(gen_out), "wandb": False})
            run_generate(config)
        metrics = json.loads((gen_out / "metrics.json").read_text())
        entry("found", g, Arch.load(gen_out / "arch.json"), {"answer": metrics.get("answer")})
        alts = alternatives(workdir, HAND_PICKED, seed=g, log=log, draws=1)
        for name in ("random", "random-no-proxy", "evo"):
            arch = alts[name][0] if isinstance(alts[name], list) else alts[name]
            entry(name, g, arch)
        if g == generate_seeds[0]:
            entry("hand-picked", None, alts["hand-picked"])
        log(f"[found-vs] generate seed {g}: networks ready")
    cache.write_text(json.dumps(out) + "\n")
    return out


def train(net: dict, train_seed: int, recipe: dict, threads: int) -> list[dict]:
    """Train one network once; its two rows (epochs 5 and 15)."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from graphnet_digits import EpochAccuracy, commit

    from lightning_nas.lightning_cli import EvaluateCLI
    from lightning_nas.select import training_config
    from lightning_nas.space.arch import Arch

    start = time.perf_counter()
    arch = Arch.from_json(net["spec"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        arch.save(root / "arch.json")
        tree, _, _ = training_config(copy.deepcopy(recipe), root / "arch.json", root,
                                     f"found-vs-{net['name']}-{net['generate_seed']}", train_seed)
        cli = EvaluateCLI(args=tree, run=False)
        callback = EpochAccuracy((EARLY_EPOCH, EPOCHS))
        cli.trainer.callbacks.append(callback)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = round(time.perf_counter() - start, 1)
    keep = ("name", "generate_seed", "objective", "guard_hi", "selection", "grad_norm_at_init", "params", "macs",
            "score", "answer", "spec")
    return [{**{k: net[k] for k in keep if k in net}, "train_seed": train_seed, "epochs": e,
             "test_metric": callback.test.get(e), "seconds": seconds, "commit": commit(), "threads": threads}
            for e in (EARLY_EPOCH, EPOCHS)]


def recipe_of(workdir: Path) -> dict:
    import yaml

    config = workdir / "pipeline" / "evaluate.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no resolved evaluate config; run the pipeline through evaluate first")
    base = yaml.safe_load(config.read_text())
    base.setdefault("trainer", {}).update({"max_epochs": EPOCHS, "logger": False, "enable_progress_bar": False,
                                           "enable_checkpointing": False})
    return base


def read_rows(path: Path) -> list[dict]:
    from lightning_nas.datasets.files import read_jsonl

    return read_jsonl(path) if path.is_file() else []


def summary(rows: list[dict]) -> str:
    """The table of the module docstring, one section per final-selection setting (``selection``; the newest
    first)."""
    lines = ["# Found vs alternatives over generate seeds", "",
             "Generated by `benchmarks/found_vs.py` from `found_vs.jsonl` (see its docstring). Test accuracy on "
             "digits in %, mean over every (generate seed, training seed); **found − name**: the mean paired "
             "difference over the pairs both have (± its standard error); ‖∇θL‖: median `grad_norm_at_init`. "
             "**selection**: how generate chose among its candidates — `none`, the objective's best; `topN-train_loss`,"
             " the objective's top N ranked by their first training losses (`lightning_nas.select`); random and evo "
             "get the same selection, hand-picked and random-no-proxy rows are shared by every setting (a setting: the "
             "objective, its guard's bound ‖∇θL‖ ≤ hi, and the selection; newest first).", ""]
    settings = list(dict.fromkeys(setting(r) for r in reversed(rows) if r["name"] not in SHARED))
    for each in settings:
        mine = [r for r in rows if r["name"] in SHARED or setting(r) == each]
        lines += [f"## {each}", ""] + _summary(mine)
    return "\n".join(lines)


def _summary(rows: list[dict]) -> list[str]:
    lines = []
    objective = {r["objective"] for r in rows}
    lines += [f"Objective: {', '.join(sorted(o for o in objective if o))}; generate seeds "
              f"{sorted({r['generate_seed'] for r in rows if r['generate_seed'] is not None})}, training seeds "
              f"{sorted({r['train_seed'] for r in rows})}.", ""]
    for epochs in (EARLY_EPOCH, EPOCHS):
        at = [r for r in rows if r["epochs"] == epochs and r["test_metric"] is not None]
        found = {(r["generate_seed"], r["train_seed"]): r["test_metric"] for r in at if r["name"] == "found"}
        found_by_seed = {}
        for (_, t), v in found.items():
            found_by_seed.setdefault(t, []).append(v)
        lines += [f"### {epochs} epochs", "", "| name | trainings | test acc | found − name | ‖∇θL‖ | params | MACs |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in NAMES:
            mine = [r for r in at if r["name"] == name]
            if not mine:
                continue
            diffs = []
            for r in mine:
                if name == "hand-picked":  # one network: paired with every found network of the same train seed
                    diffs += [f - r["test_metric"] for f in found_by_seed.get(r["train_seed"], [])]
                elif (r["generate_seed"], r["train_seed"]) in found and name != "found":
                    diffs.append(found[(r["generate_seed"], r["train_seed"])] - r["test_metric"])
            diff = f"{100 * diffs[0]:+.2f} (1)" if len(diffs) == 1 else "—"
            if len(diffs) >= 2:
                se = statistics.stdev(diffs) / math.sqrt(len(diffs))
                diff = f"{100 * statistics.fmean(diffs):+.2f} ± {100 * se:.2f} ({len(diffs)})"
            lines.append(f"| {name} | {len(mine)} | {100 * statistics.fmean(r['test_metric'] for r in mine):.2f} | "
                         f"{diff} | {statistics.median(r['grad_norm_at_init'] for r in mine):.3g} | "
                         f"{statistics.fmean(r['params'] for r in mine):.3g} | "
                         f"{statistics.fmean(r['macs'] for r in mine):.3g} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--generate-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true", help="only rewrite the table from the stored rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)  # beside the training workers: more threads than cores slow every process
    table = args.out.with_suffix(".md")
    if not args.summary:
        nets = networks(args.workdir, args.generate_seeds)
        recipe = recipe_of(args.workdir)
        stored = read_rows(args.out)
        done = {(r["name"], r["generate_seed"], r["train_seed"], spec_key(r["spec"])) for r in stored}
        reuse(nets, args.train_seeds, stored, args.out)
        # training seed outermost: a partial run already pairs every name on the first seeds
        todo = [(net, t) for t in args.train_seeds for net in nets
                if (net["name"], net["generate_seed"], t, spec_key(net["spec"])) not in done]
        print(f"[found-vs] {len(nets)} networks × {len(args.train_seeds)} training seeds: {len(todo)} trainings to "
              f"run -> {args.out}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(args.workers) as pool:
            futures = {pool.submit(train, net, t, recipe, args.threads): (net["name"], net["generate_seed"], t)
                       for net, t in todo}
            for n, future in enumerate(as_completed(futures), 1):
                try:
                    rows = future.result()
                except Exception as err:  # a network that cannot train: reported, the others go on
                    print(f"[found-vs] {futures[future]} failed: {err}", flush=True)
                    continue
                with open(args.out, "a") as f:
                    for row in rows:
                        f.write(json.dumps(row) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                r5, r15 = rows
                print(f"[found-vs] {n}/{len(todo)} {r5['name']} g{r5['generate_seed']} t{r5['train_seed']}: "
                      f"test@5 {r5['test_metric']:.3f} test@15 {r15['test_metric']:.3f} {r5['seconds']} s",
                      flush=True)
                table.write_text(summary(read_rows(args.out)) + "\n")
    table.write_text(summary(read_rows(args.out)) + "\n")
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
