"""The whole chain at micro sizes through the real code paths: every stage runs, reruns skip finished work, a changed
setting reruns that stage and the rest, and a pipeline killed with SIGKILL in the middle finishes on the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lightning_nas.pipeline import STAGES, PipelineConfig, resolve_stage, run_pipeline
from tests.conftest import REPO

DIGITS_16 = {"name": "digits", "input_size": 16}  # the network evaluate trains below: digits at 16 px
MICRO = {
    # every budget caps params and MACs, so the run time cannot depend on what a generator happens to produce
    "zc": {"config": "configs/zc/tiny.yaml",
           "set": {"unlabelled": 200, "labelled": 24, "workers": 1, "probe": {"source": "gaussian", "seed": 0,
                                                                                "batch_size": 4}}},
    "gvae": {"config": "configs/gvae.yaml",
             "set": {"trainer.max_epochs": 2, "trainer.logger": False, "model.init_args.hidden": 32,
                     "model.init_args.latent": 8, "model.init_args.layers": 2, "model.init_args.prior_samples": 20,
                     "data.init_args.labelled_batch_size": 16, "trainer.callbacks.1.init_args.every_n_epochs": 100}},
    "cluster": {"config": "configs/cluster/tiny.yaml", "set": {"k_max": 3, "n_init": 1}},
    "ccnf": {"config": "configs/ccnf.yaml",
             "set": {"trainer.max_epochs": 1, "trainer.logger": False, "model.init_args.latent_dim": 8,
                     "model.init_args.hidden": 16, "model.init_args.layers": 1, "model.init_args.gen_samples": 0,
                     "model.init_args.atol": 1e-3, "model.init_args.rtol": 1e-3}},
    "search": {"config": "configs/search/tiny.yaml",
               "set": {"population": 3, "iterations": 12, "wandb": False, "task": DIGITS_16,
                       "budgets": [{"name": "small", "max_params": 300000, "max_macs": 5000000}]}},
    "sg": {"config": "configs/sg.yaml",
           "set": {"trainer.max_epochs": 1, "trainer.logger": False, "model.init_args.hidden_size": 16,
                   "model.init_args.num_layers": 1, "model.init_args.num_heads": 1, "data.init_args.val_fraction": 0.3,
                   "data.init_args.budget_grid_size": 2}},
    "generate": {"config": "configs/generate/tiny.yaml",
                 "set": {"budget": {"params": "300k", "macs": "5M"}, "candidates": 3, "sequences": 1,
                         "task": DIGITS_16}},
    "evaluate": {"config": "configs/evaluate/digits.yaml",
                 "set": {"model.init_args.arch": "${workdir}/generate/arch.json", "trainer.max_epochs": 1,
                         "trainer.logger": False, "data.init_args.image_size": 16}},
}


def micro_config(tmp_path, **changes) -> PipelineConfig:
    stages = json.loads(json.dumps(MICRO))
    for stage, sets in changes.items():
        stages[stage]["set"].update(sets)
    for spec in stages.values():
        spec["config"] = str(REPO / spec["config"])
    return PipelineConfig(workdir=str(tmp_path / "run"), stages=stages)


@pytest.mark.slow
def test_pipeline_runs_every_stage_skips_finished_work_and_survives_kill_9(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    config_file = tmp_path / "micro.yaml"
    config = micro_config(tmp_path)
    config_file.write_text(yaml.safe_dump({"workdir": config.workdir, "stages": config.stages}))
    state = tmp_path / "run" / "pipeline" / "state.json"
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "lightning_nas", "pipeline", "--config", str(config_file)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:  # kill -9 once the CCNF stage has started
            if state.is_file() and "ccnf" in json.loads(state.read_text()):
                break
            time.sleep(0.2)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert running, (tmp_path / "stderr.log").read_text()[-3000:]
    killed = json.loads(state.read_text())
    assert killed["gvae"]["finished"] and not killed["ccnf"]["finished"]

    monkeypatch.setenv("WANDB_MODE", "disabled")
    log: list[str] = []
    result = run_pipeline(config, log=log.append)
    summary = result["stages"]
    assert [summary[s]["status"] for s in STAGES] == ["skipped"] * 3 + ["ran"] * 5, log
    assert result["architecture"]["params"] <= 1_000_000 and result["evaluation"]["task"] == "digits"
    assert summary["ccnf"]["reason"] == "the last attempt did not finish"
    run = tmp_path / "run"
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert metrics["task"] == "digits" and 0 <= metrics["test_metric"] <= 1
    generated = json.loads((run / "generate" / "metrics.json").read_text())
    assert generated["params"] <= 300_000 and generated["macs"] <= 5_000_000

    # nothing changed: nothing runs; a changed SG setting reruns sg and everything after it
    assert all(s["status"] == "skipped" for s in run_pipeline(config, log=log.append)["stages"].values())
    logging_only = micro_config(tmp_path, search={"wandb": True})  # what is logged is not what is computed
    assert all(s["status"] == "skipped" for s in run_pipeline(logging_only, log=log.append)["stages"].values())
    summary = run_pipeline(micro_config(tmp_path, sg={"trainer.max_epochs": 2}), log=log.append)["stages"]
    assert [summary[s]["status"] for s in STAGES] == ["skipped"] * 5 + ["ran"] * 3
    assert list((run / "pipeline" / "previous").glob("sg-*")), "the earlier SG run was not kept"
    assert (run / "pipeline" / "sg.yaml").is_file() and "max_epochs: 2" in (run / "pipeline" / "sg.yaml").read_text()
    searched = json.loads((run / "search" / "metrics.json").read_text())  # the SG learns from this search only
    sg_data = yaml.safe_load((run / "pipeline" / "sg.yaml").read_text())["data"]["init_args"]
    assert sg_data["runs"] == [v for k, v in searched.items() if k.startswith("run_")] and sg_data["runs"]

    # the W&B summary run (offline): the stage table and the final architecture's numbers
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_pipeline(micro_config(tmp_path, sg={"trainer.max_epochs": 2}), log=log.append)
    offline = list((run / "pipeline" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))

    # the report: every section, both studies at micro size, figures linked relative to the run directory
    from lightning_nas.report import ReportConfig, write_report

    settings = {"workdir": str(run), "table1_samples": 2, "table2_iterations": 2, "table2_population": 3,
                "latent_points": 30, "compare_seeds": [0], "compare_epochs": 1, "compare_draws": 2}
    write_report(ReportConfig(**settings), log=log.append)
    report = (run / "REPORT.md").read_text()
    for heading in ("## Stages", "## Final architecture", "## Table 1", "## Table 2", "## Clusters", "## Sequence",
                    "## Found vs alternatives"):
        assert heading in report
    compared = json.loads((run / "report" / "found_vs_alternatives.json").read_text())  # the contract of #20
    assert [r["name"] for r in compared] == ["found", "hand-picked", "random", "random-no-proxy", "evo"]
    for r in compared:
        draws = 2 if r["name"] == "random-no-proxy" else 1  # the no-proxy draws are trained once each
        assert {"params", "macs", "score", "objective", "test_metric_mean"} <= set(r) and r["draws"] == draws
        assert len(r["test_metrics"]) == draws and r["objective"] == generated["objective"] == "guarded_snip_ssnr"
        assert 0 <= r["test_metric_mean"] <= 1 and (r["name"] == "hand-picked" or r["within_budget"])
        assert r["grad_norm_at_init"] > 0
        # scored even when over the budget (unless the guard rejects every network of the row: a uniform random draw
        # may start untrainable)
        assert r["score"] is not None or r["rejected"] == draws
    assert [r for r in compared if r["name"] == "found"][0]["params"] == generated["params"]
    assert "| CCNF | " in report and "| HL-Evo(T-CET)+CCNF | " in report and "| Random(T-CET) | " in report
    assert f"test acc **{metrics['test_metric']:.4g}**" in report
    latency = json.loads((run / "report" / "latency.json").read_text())["result"]  # [hw]: host accuracy–latency
    assert "## Accuracy and latency on this machine" in report and "Latency budget satisfaction (host)" in report
    assert [t["name"] for t in latency["trained"]] == ["found", "hand-picked", "random", "evo"]
    assert all(t["latency_ms"] > 0 for t in latency["trained"]) and latency["history"]
    assert 0 <= latency["within"] <= len(latency["measured_ms"]) <= min(20, latency["admitted"])
    assert latency["budget_ms"] in [h["latency_ms"] for h in latency["history"]]
    for link in ("report/latent_map.png", "cluster/bic_aic.png", "search/pareto_small.png", "generate/arch.png",
                 "report/latency_pareto.png"):
        assert f"]({link})" in report and (run / link).is_file(), link
    studies = (run / "report" / "table2.json").stat().st_mtime_ns
    write_report(ReportConfig(**settings), log=log.append)  # cached: the studies are not recomputed
    assert (run / "report" / "table2.json").stat().st_mtime_ns == studies


def test_pipeline_config_errors(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        PipelineConfig(stages={"zc": MICRO["zc"]})
    stages = {k: {**v, "config": str(REPO / v["config"])} for k, v in MICRO.items()}
    with pytest.raises(ValueError, match="until"):
        PipelineConfig(stages=stages, until="train")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        PipelineConfig(stages={**stages, "sg": {"config": "nowhere.yaml"}})


def test_a_second_pipeline_on_a_busy_run_directory_stops_at_once_with_rc_2(tmp_path):
    """Two pipelines on one run directory would overwrite each other's stages: while one holds the run directory
    (here this test, through the same lock), another stops before any stage with one ``error:`` paragraph naming the
    holder, rc 2, writing nothing; once the holder is gone the lock is free again."""
    from lightning_nas.pipeline import RunDirBusy, exclusive

    config = micro_config(tmp_path)
    meta = tmp_path / "run" / "pipeline"
    meta.mkdir(parents=True)
    written = tmp_path / "pipeline.yaml"
    written.write_text(yaml.safe_dump({"workdir": config.workdir, "stages": config.stages}))
    with exclusive(meta / "lock"):
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            run_pipeline(config, log=lambda _: None)
        cli = subprocess.run([sys.executable, "-m", "lightning_nas", "pipeline", "--config", str(written)],
                             capture_output=True, text=True, cwd=REPO, timeout=120,
                             env={**os.environ, "WANDB_MODE": "disabled"})
        assert cli.returncode == 2, cli.stderr[-2000:]
        assert cli.stderr.startswith("error: ") and "another pipeline is running" in cli.stderr
        assert "Traceback" not in cli.stderr and f"pid {os.getpid()}" in cli.stderr
    assert sorted(p.name for p in meta.iterdir()) == ["lock"]  # no stage started, no state written
    with exclusive(meta / "lock"):  # released: the next holder gets it
        assert (meta / "lock").read_text().startswith(f"pid {os.getpid()}")


def test_a_new_trainability_range_reruns_the_search(tmp_path, monkeypatch):
    """The guard's range is a package file, not a setting: it is part of the search and generate fingerprints, so a
    rerun after ``benchmarks/objectives.py --write-range`` searches again; the other stages do not see it."""
    import lightning_nas.zc.trainability as trainability
    from lightning_nas.pipeline import stage_fingerprint

    settings = {"objective": "guarded_tcet", "iterations": 10, "wandb": True}
    range_file = tmp_path / "trainable_range.json"
    range_file.write_text('{"measure": "grad_norm_at_init", "spaces": {"graphnet": {"lo": 0, "hi": 108}}}')
    monkeypatch.setattr(trainability, "RANGE_FILE", range_file)
    before = {name: stage_fingerprint(name, settings, "up") for name in ("search", "generate", "gvae")}
    assert stage_fingerprint("search", {**settings, "wandb": False}, "up") == before["search"]  # logging only
    range_file.write_text('{"measure": "grad_norm_at_init", "spaces": {"graphnet": {"lo": 0.3, "hi": 20.4}}}')
    after = {name: stage_fingerprint(name, settings, "up") for name in ("search", "generate", "gvae")}
    assert after["search"] != before["search"] and after["generate"] != before["generate"]
    assert after["gvae"] == before["gvae"]


def test_stage_settings_are_merged_and_overridden_with_omegaconf():
    """Files merged in order, paths re-rooted, dotted ``set`` keys (list items by index), ``${workdir}`` resolved;
    a list entered by a name is refused with the fix."""
    settings = resolve_stage("gvae", {"config": [str(REPO / "configs/gvae.yaml")],
                                      "set": {"trainer.max_epochs": 3,
                                              "trainer.callbacks.1.init_args.every_n_epochs": 7,
                                              "model.init_args.lr": "${workdir}/not-a-number"}}, "runs/x", "runs/tiny")
    assert settings["trainer"]["max_epochs"] == 3 and settings["trainer"]["default_root_dir"] == "runs/x/gvae"
    assert settings["trainer"]["callbacks"][1]["init_args"] == {"clusters": "runs/x/cluster/clusters.json",
                                                                 "every_n_epochs": 7}
    assert settings["trainer"]["callbacks"][0]["init_args"]["dirpath"] == "runs/x/gvae/checkpoints"
    assert settings["model"]["init_args"]["lr"] == "runs/x/not-a-number"
    with pytest.raises(ValueError, match="stages.gvae.set: .*by its index"):
        resolve_stage("gvae", {"config": str(REPO / "configs/gvae.yaml"),
                               "set": {"trainer.callbacks.init_args.every_n_epochs": 7}}, "runs/x", "runs/tiny")


def test_the_pipeline_objective_sets_search_and_generate_only():
    """One ``objective:`` for the chain: it replaces the search and generate stages' own, leaves the rest alone,
    and an unknown name is refused before anything runs."""
    spec = {"config": str(REPO / "configs/search/tiny.yaml"), "set": {}}
    assert resolve_stage("search", spec, "runs/x", "runs/tiny")["objective"] == "guarded_snip_ssnr"  # the stage's own
    assert resolve_stage("search", spec, "runs/x", "runs/tiny", "naswot")["objective"] == "naswot"
    generate = {"config": str(REPO / "configs/generate/tiny.yaml"), "set": {}}
    assert "objective" not in resolve_stage("generate", generate, "runs/x", "runs/tiny")  # null: follow the search
    assert resolve_stage("generate", generate, "runs/x", "runs/tiny", "naswot")["objective"] == "naswot"
    gvae = resolve_stage("gvae", {"config": str(REPO / "configs/gvae.yaml")}, "runs/x", "runs/tiny", "naswot")
    assert "objective" not in gvae
    stages = {k: {**v, "config": str(REPO / v["config"])} for k, v in MICRO.items()}
    with pytest.raises(ValueError, match="objective: unknown 'T-CET'"):
        PipelineConfig(stages=stages, objective="T-CET")


def test_stage_runs_log_to_wandb_offline_and_not_when_disabled(tmp_path, monkeypatch):
    """The non-Lightning stages' W&B runs (lightning_nas.tracking): settings, numbers and pictures in an offline run;
    nothing at all with WANDB_MODE=disabled."""
    from lightning_nas.cluster import ClusterFit, plot_curves
    from lightning_nas.tracking import log_stage

    picture = tmp_path / "curve.png"
    plot_curves(picture, ClusterFit(k=2, k_bic=2, k_aic=2, ks=[2, 3], bic=[1.0, 0.5], aic=[1.0, 0.4], weights=[],
                                    means=[], covariances=[], labels=[], log_likelihood=0.0, converged=[True, True],
                                    covariance_type="full", seed=0, n_init=1, tolerance=0.05, model=None))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log_stage("cluster", tmp_path / "off", {"k_max": 3}, {"k": 2})
    assert not (tmp_path / "off").exists() or not list((tmp_path / "off").rglob("*.wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    log_stage("cluster", tmp_path / "on", {"k_max": 3}, {"k": 2, "probe": "p", "bic": 0.5},
              {"bic_aic": picture, "missing": tmp_path / "nowhere.png"})
    runs = list((tmp_path / "on" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list(runs[0].rglob("*.png")), "the picture was not logged"


def test_a_stage_run_before_a_lightning_logger_keeps_the_process_offline(tmp_path):
    """Regression: a stage's W&B run opened first in a process (the pipeline's zc stage) must not leave wandb in
    online mode for the WandbLogger of a later training stage (that asked for an API key)."""
    code = (
        "from lightning_nas.tracking import log_stage\n"
        "from lightning.pytorch.loggers import WandbLogger\n"
        f"log_stage('zc', {str(tmp_path / 'zc')!r}, {{}}, {{'cells': 3}})\n"
        f"logger = WandbLogger(project='lightning-nas', save_dir={str(tmp_path / 'gvae')!r})\n"
        "logger.experiment.log({'x': 1.0}); logger.experiment.finish()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))  # no ~/.netrc, no API key
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "gvae" / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_one_config_and_seed_give_a_byte_identical_arch_json_in_two_processes(tmp_path):
    """#20 item 6: the micro chain (zc with 2 worker processes, whose finishing order varies) run twice in fresh
    processes gives the same archive contents, G-VAE weights and arch.json, byte for byte. #30 item 3: a third run
    whose generators (G-VAE, CCNF, SG) are trained from another seed — as another CPU's floating point would make
    them differ — still answers within the budget (params and MACs)."""
    import torch

    from lightning_nas.archive import Archive

    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    procs = {}
    other_seed = {"seed_everything": 7}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        config = micro_config(tmp_path / name, zc={"workers": 2}) if name != "c" else \
            micro_config(tmp_path / name, gvae=other_seed, ccnf=other_seed, sg=other_seed)
        config_file = tmp_path / name / "micro.yaml"
        config_file.write_text(yaml.safe_dump({"workdir": config.workdir, "stages": config.stages,
                                                "until": "generate"}))
        log = open(tmp_path / name / "stderr.log", "w")  # noqa: SIM115 (closed with the process below)
        procs[name] = (subprocess.Popen([sys.executable, "-m", "lightning_nas", "pipeline", "--config",
                                         str(config_file)], cwd=tmp_path / name, env=env,
                                        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True), log)
    try:
        for name, (proc, _) in procs.items():
            assert proc.wait(timeout=900) == 0, (tmp_path / name / "stderr.log").read_text()[-3000:]
    finally:  # a failure leaves no process running into the next test
        for proc, log in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # with the ranks it spawned
                proc.wait()
            log.close()
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    with Archive(a / "archive.sqlite", create=False) as x, Archive(b / "archive.sqlite", create=False) as y:
        probe = x.resolve_probe()
        assert x.zc(probe) == y.zc(probe) and x.get_normaliser(probe) == y.get_normaliser(probe)
        assert x.clusters(probe) == y.clusters(probe)
    gvae = [torch.load(run / "gvae" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (a, b)]
    assert all(torch.equal(gvae[0][k], gvae[1][k]) for k in gvae[0])
    assert (a / "generate" / "arch.json").read_bytes() == (b / "generate" / "arch.json").read_bytes()
    c = tmp_path / "c" / "run"
    other = [torch.load(c / "gvae" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]]
    assert not all(torch.equal(gvae[0][k], other[0][k]) for k in gvae[0])  # other generators indeed
    answer = json.loads((c / "generate" / "metrics.json").read_text())
    assert answer["answer"] in ("sg", "repaired", "search"), answer
    assert answer["params"] <= 300_000 and answer["macs"] <= 5_000_000


def test_the_sg_learns_from_the_current_search_runs_only(tmp_path):
    """A search rerun after an upstream change writes new run ids next to the old runs in the archive: the pipeline
    hands the sg stage the search stage's current run ids (an explicit list wins; no search metrics: unchanged)."""
    from lightning_nas.pipeline import with_search_runs
    from lightning_nas.stages import RunDir

    settings = {"data": {"class_path": "datamodules.HLSequenceDataModule", "init_args": {"archive": "a.sqlite"}},
                "model": {"class_path": "lightning_nas.models.SGModule"}}
    run = RunDir(tmp_path)
    assert with_search_runs(settings, run) == settings
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "metrics.json").write_text(json.dumps(
        {"evaluations": 4, "run_small": "hl-evo-small-s0-1", "run_big": "hl-evo-big-s0-2", "best_tcet_big": 1.0}))
    limited = with_search_runs(settings, run)
    assert limited["data"]["init_args"] == {"archive": "a.sqlite", "runs": ["hl-evo-small-s0-1", "hl-evo-big-s0-2"]}
    assert settings["data"]["init_args"] == {"archive": "a.sqlite"}  # not modified in place
    chosen = {**settings, "data": {**settings["data"], "init_args": {"archive": "a.sqlite", "runs": ["mine"]}}}
    assert with_search_runs(chosen, run) == chosen
