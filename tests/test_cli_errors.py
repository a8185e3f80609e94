"""What a new user sees for bad inputs: every command turns a validation error into one ``error:`` line on stderr and
exit code 2 (no traceback unless ``LIGHTNING_NAS_DEBUG=1``); a checkpoint of the wrong kind names both kinds; a
``clusters.json`` of the wrong shape, with NaN, empty, not JSON or of another archive is refused naming the file and
the cluster stage to rerun; ``--help`` names the program ``python -m lightning_nas <command>`` and cites only files
the repository has.

Only two real subprocesses (they pay the imports); the other commands run in-process through the same entry point
(``main(argv, exit_on_error=True)`` is what ``python -m lightning_nas`` runs). The checkpoints are written by the
modules' own ``on_save_checkpoint`` without training: the checks read only the record and the settings."""

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from lightning_nas.cli import DEBUG_ENV, main
from tests.conftest import REPO

ZC_NORMALISER = {"names": ["naswot", "snip_ssnr", "params", "flops"], "log": [0, 0, 1, 1],
                 "mean": [810.0, 6e5, 14.0, 18.0], "std": [5.0, 1e5, 0.5, 0.5]}


def assert_one_error(code, stderr: str, *fragments: str) -> str:
    """Exit code 2, exactly one line starting with ``error:``, no traceback; returns that line."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_in_process(capsys, *argv: str) -> tuple[int | None, str]:
    """``python -m lightning_nas *argv`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(argv), exit_on_error=True)
    return exit_.value.code, capsys.readouterr().err


def save_checkpoint(module, path):
    """A checkpoint as Lightning writes it (weights, hyperparameters, the module's own ``lightning_nas`` record)."""
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A run directory with a small archive (probe ``p`` and its normaliser), and untrained G-VAE, CCNF, SG and
    classifier checkpoints, the G-VAE/CCNF made for that archive."""
    from lightning_nas.archive import Archive
    from lightning_nas.hl_tokenizer import HLTokenizer
    from lightning_nas.models import ClassifierModule, SGModule
    from lightning_nas.models.ccnf import CCNFModule
    from lightning_nas.models.gvae import ENCODING_VERSION, GVAEModule

    root = tmp_path_factory.mktemp("cli_errors")
    with Archive(root / "archive.sqlite", op_set="graphnet") as archive:
        archive.add_probe("p", "gaussian", 0, torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
        archive.set_normaliser("p", ZC_NORMALISER)
    torch.manual_seed(0)
    space = {"op_set": "graphnet", "encoding": ENCODING_VERSION}
    gvae = GVAEModule(hidden=8, latent=4, layers=1, zc_dims=4)
    gvae.space, gvae.normaliser = dict(space), dict(ZC_NORMALISER)
    ccnf = CCNFModule(latent_dim=4, cond_dim=4, hidden=8, layers=1)
    ccnf.space = {**space, "latent": 4, "zc_dims": 4}
    sg = SGModule(hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8, max_positions=128,
                  tokenizer=HLTokenizer(2).to_dict())
    classifier = ClassifierModule(str(REPO / "configs" / "archs" / "digits.json"), num_classes=10, in_channels=1)
    return {"root": root, "archive": root / "archive.sqlite",
            **{name: save_checkpoint(m, root / f"{name}.ckpt")
               for name, m in {"gvae": gvae, "ccnf": ccnf, "sg": sg, "classifier": classifier}.items()}}


# ---- python -m lightning_nas: real processes -------------------------------------------------------------------------
def test_stage_commands_print_one_error_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    commands = {  # run side by side: each pays the imports once
        "no archive": (["cluster", "--workdir", str(tmp_path / "nowhere")], ["nowhere/archive.sqlite", "zc stage"]),
        "negative candidates": (["generate", "--candidates", "-3", "--budget.params", "1M"], ["candidates", "-3"]),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "lightning_nas", *argv], cwd=REPO, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (argv, _) in commands.items()}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert_one_error(proc.returncode, stderr, *commands[name][1])


# ---- the same entry point in-process -------------------------------------------------------------------------------
def test_usage_errors_of_every_stage_command(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    cases = [
        (["zc", "--config", f"{missing}.yaml"], "missing.yaml"),  # jsonargparse's own error
        (["cluster", "--k_min", "5", "--k_max", "4"], "k_min"),
        (["search", "--workdir", missing], "no archive"),
        (["search", "--population", "0"], "population"),
        (["generate", "--workdir", missing, "--budget.params", "1M"], "no archive"),
        (["export", "--ckpt", f"{missing}.ckpt", "--format", "pt2"], "missing.ckpt"),
        (["export", "--ckpt", f"{missing}.ckpt", "--format", "pt2", "--input_shape", "3,x"], "input_shape"),
        (["pipeline", "--until", "nope"], "until"),
        (["report", missing], "missing"),
        (["serch"], "unknown command 'serch'"),
    ]
    for argv, fragment in cases:
        code, stderr = run_in_process(capsys, *argv)
        assert_one_error(code, stderr, fragment)
        assert not (tmp_path / "missing").exists(), f"{argv[0]} created the missing directory it was pointed at"


def test_lightning_commands_report_invalid_values_in_one_line(tmp_path, capsys, monkeypatch):
    import logging

    monkeypatch.setattr(sys, "argv", ["lightning_nas"])
    # Lightning's log handler may hold the closed capture stream of an earlier in-process test; its complaint
    # ("--- Logging error ---" and a traceback of the logging module) is no output of the command
    monkeypatch.setattr(logging, "raiseExceptions", False)
    common = ["--config", str(REPO / "configs" / "evaluate" / "digits.yaml"), "--trainer.logger=false",
              f"--trainer.default_root_dir={tmp_path}"]
    code, stderr = run_in_process(capsys, "fit", *common, f"--model.init_args.arch={tmp_path / 'nowhere.json'}")
    assert_one_error(code, stderr, "nowhere.json")
    code, stderr = run_in_process(capsys, "evaluate", *common, "--model.init_args.weight_init=banana")
    assert_one_error(code, stderr, "weight_init")
    code, stderr = run_in_process(capsys, "test", "--config", str(tmp_path / "none.yaml"))
    assert_one_error(code, stderr, "none.yaml")


def test_debug_switch_keeps_the_traceback_and_library_calls_raise(tmp_path, capsys, monkeypatch):
    argv = ["cluster", "--workdir", str(tmp_path)]
    with pytest.raises(FileNotFoundError, match="no archive"):
        main(argv)  # from Python: the exception itself
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError, match="no archive"):
        main(argv, exit_on_error=True)


def test_only_the_projects_own_validation_errors_are_usage_errors():
    import numpy as np

    from lightning_nas.cli import is_usage_error
    from lightning_nas.cluster.stage import ClusterStageConfig

    with pytest.raises(ValueError) as ours:
        ClusterStageConfig(k_min=5, k_max=4)
    with pytest.raises(ValueError) as library:  # a bug of ours reaching numpy keeps its traceback
        np.ones(2) @ np.ones(3)
    with pytest.raises(ValueError) as builtin:  # not a `raise` of the project's code either
        a, b = [1, 2, 3]
    assert is_usage_error(ours.value) and is_usage_error(FileNotFoundError(2, "No such file", "x.yaml"))
    assert not any(is_usage_error(e) for e in (library.value, builtin.value, KeyError("x"), RuntimeError("x")))


# ---- checkpoints of the wrong kind ---------------------------------------------------------------------------------
def test_wrong_kind_of_checkpoint_names_both_kinds(artifacts, capsys):
    from lightning_nas.models import CCNFModule, GVAEModule, SGModule

    with pytest.raises(ValueError, match=r"classifier.ckpt is a trained network \(ClassifierModule\) checkpoint, "
                                         r"but a G-VAE checkpoint \(GVAEModule\) is expected"):
        GVAEModule.from_checkpoint(artifacts["classifier"])
    with pytest.raises(ValueError, match=r"gvae.ckpt is a G-VAE checkpoint, but a SG .* checkpoint \(SGModule\)"):
        SGModule.from_checkpoint(artifacts["gvae"])
    with pytest.raises(ValueError, match=r"sg.ckpt is a SG .* checkpoint, but a CCNF checkpoint \(CCNFModule\)"):
        CCNFModule.from_checkpoint(artifacts["sg"])
    with pytest.raises(ValueError, match=r"ccnf.ckpt is a CCNF checkpoint, but a G-VAE checkpoint"):
        GVAEModule.from_checkpoint(artifacts["ccnf"])
    assert GVAEModule.from_checkpoint(artifacts["gvae"]).normaliser == ZC_NORMALISER  # the right kind still loads
    code, stderr = run_in_process(capsys, "generate", "--workdir", str(artifacts["root"]), "--sg",
                                  str(artifacts["gvae"]), "--budget.params", "1M")
    assert_one_error(code, stderr, "is a G-VAE checkpoint", "SGModule")


# ---- clusters.json -------------------------------------------------------------------------------------------------
def test_clusters_json_is_checked_when_loaded(artifacts, tmp_path, capsys):
    from lightning_nas.archive import Archive
    from lightning_nas.cluster import write_clusters
    from lightning_nas.generator import CellGenerator

    good = tmp_path / "cluster" / "clusters.json"
    record = write_clusters(good, [[0.0] * 4, [1.0] * 4], archive=artifacts["archive"], gvae=artifacts["gvae"])
    assert record["version"] == 2 and record["source"]["probe_id"] == "p" and len(record["source"]["gvae_sha256"]) == 16
    generator = CellGenerator.load(artifacts["gvae"], artifacts["ccnf"], good, archive=artifacts["archive"])
    assert generator.cluster_condition(1).tolist() == [1.0] * 4

    def refused(data, *patterns, **kwargs):
        path = tmp_path / "cluster" / "bad.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        with pytest.raises(ValueError) as err:
            CellGenerator.load(artifacts["gvae"], artifacts["ccnf"], path, **kwargs)
        message = str(err.value)
        assert message.startswith(str(path)) and "python -m lightning_nas cluster --config" in message, message
        for pattern in patterns:
            assert re.search(pattern, message), message

    refused({**record, "means": [[0.0] * 3] * 2}, "means of dimension 3.*4-dimensional")
    refused({**record, "means": [[math.nan] * 4, [1.0] * 4]}, "means: 4 NaN")
    refused({}, "not a clusters.json of the cluster stage")
    refused('{"means": [[0.0, ', "not valid JSON")
    refused({**record, "weights": [0.5]}, "weights: expected 2")
    refused({**record, "version": 99}, "version 99 is newer")
    other = write_clusters(tmp_path / "other.json", record["means"], probe_id="p",
                           normaliser={**ZC_NORMALISER, "mean": [800.0, 6e5, 14.0, 18.0]})
    refused(other, "another normalised ZC space.*another archive")
    with Archive(tmp_path / "elsewhere.sqlite", op_set="graphnet") as archive:
        archive.add_probe("q", "gaussian", 1, torch.ones(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    refused(record, "probe p, which .*elsewhere.sqlite does not hold", archive=tmp_path / "elsewhere.sqlite")
    retrained = tmp_path / "retrained.ckpt"
    checkpoint = torch.load(artifacts["gvae"], weights_only=True)
    checkpoint["state_dict"] = {k: v + 1 for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, retrained)
    with pytest.raises(ValueError, match="computed with the G-VAE .*gvae.ckpt"):
        CellGenerator.load(retrained, clusters=good)
    # written before the source record (version 1): probe and normaliser are still checked, nothing else is needed
    legacy = {k: v for k, v in record.items() if k not in ("version", "source")}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert CellGenerator.load(artifacts["gvae"], clusters=tmp_path / "legacy.json").clusters["means"] == record["means"]

    # through a command: one line naming the file
    (tmp_path / "cluster" / "bad.json").write_text("{}")
    code, stderr = run_in_process(capsys, "search", "--workdir", str(artifacts["root"]), "--gvae",
                                  str(artifacts["gvae"]), "--ccnf", str(artifacts["ccnf"]), "--clusters",
                                  str(tmp_path / "cluster" / "bad.json"))
    assert_one_error(code, stderr, "bad.json: not a clusters.json", "python -m lightning_nas cluster --config")


# ---- --help ----------------------------------------------------------------------------------------------------------
HELP_COMMANDS = {"evaluate": ["evaluate"], "lightning": ["fit", "test"],
                 "stages": ["cluster", "search", "generate", "export", "pipeline", "report"]}
CITED = re.compile(r"(?<![\w/<>{}.-])((?:configs|benchmarks|datamodules|callbacks|lightning_nas|tests)/[\w./-]*\w"
                   r"|[A-Z][A-Z_]+\.md|\b[A-Z]{4,}(?= §))")
OUTPUTS = {"REPORT.md"}  # files a command writes, not documents it cites


@pytest.mark.parametrize("commands", [
    *HELP_COMMANDS.values(),
    ["zc"]],
    ids=[*HELP_COMMANDS, "zc"])
def test_help_names_the_command_and_cites_existing_files(commands, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["__main__.py"])  # what LightningCLI would otherwise name the program
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code in (0, None)
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m lightning_nas {command} ") and "__main__" not in out, out[:300]
        missing = sorted(c for c in set(CITED.findall(out)) - OUTPUTS
                         if not (REPO / c).exists() and not (REPO / f"{c}.md").exists())
        assert not missing, f"{command} --help cites {missing}, which the repository does not have"
        if command == "evaluate":
            assert "fit, then test" in out and "--ckpt_path" in out


class _Payload:
    """A pickled object whose unpickling would call ``print`` (a stand-in for code a crafted file could run)."""

    def __reduce__(self):
        return (print, ("unpickled: code ran",))


def _bad_checkpoints(root, good):
    """Hostile (a pickled callable), truncated (half of a real checkpoint) and empty files."""
    (root / "hostile.ckpt").parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "payload": _Payload()}, root / "hostile.ckpt")
    data = good.read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (root / "empty.ckpt").write_bytes(b"")
    return {"hostile": (root / "hostile.ckpt", "refused: it holds pickled Python objects"),
            "truncated": (root / "truncated.ckpt", "truncated or another format"),
            "empty": (root / "empty.ckpt", "is empty (0 bytes)")}


def test_bad_checkpoints_give_one_paragraph_through_every_command_and_loader(artifacts, tmp_path, capsys,
                                                                            monkeypatch):
    """#30 (c), (d): fit/test/predict/evaluate --ckpt_path and the module loaders refuse a hostile, truncated or
    empty checkpoint in one line, rc 2, never repeating torch's advice to load with weights_only=False."""
    import logging

    from lightning_nas.models.classifier import network_from_checkpoint
    from lightning_nas.models.gvae import GVAEModule

    monkeypatch.setattr(sys, "argv", ["lightning_nas"])
    monkeypatch.setattr(logging, "raiseExceptions", False)
    bad = _bad_checkpoints(tmp_path / "bad", artifacts["classifier"])
    common = ["--config", str(REPO / "configs" / "evaluate" / "digits.yaml"), "--trainer.logger=false",
              f"--trainer.default_root_dir={tmp_path / 'run'}"]
    for command in ("fit", "test", "predict", "evaluate"):
        for path, fragment in bad.values():
            code, stderr = run_in_process(capsys, command, *common, f"--ckpt_path={path}")
            line = assert_one_error(code, stderr, path.name, fragment)
            assert "weights_only=False" not in stderr and "unpickled: code ran" not in stderr, line
    for path, fragment in bad.values():
        with pytest.raises(ValueError, match=re.escape(fragment)) as err:
            network_from_checkpoint(path)
        assert "weights_only=False" not in str(err.value)
        with pytest.raises(ValueError, match=re.escape(fragment)):
            GVAEModule.from_checkpoint(path)
    # evaluate --ckpt_path last: a cut-off last.ckpt of a killed run is checked too
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_bytes(artifacts["classifier"].read_bytes()[:100])
    code, stderr = run_in_process(capsys, "evaluate", *common, "--ckpt_path=last")
    assert_one_error(code, stderr, "last.ckpt", "truncated")


def test_an_empty_archive_file_and_impossible_cell_counts_say_what_to_do(tmp_path, capsys):
    """#30 (e), (f): a zero-byte archive.sqlite names the zc stage to run; ``unlabelled: 0`` states the rule broken."""
    (tmp_path / "archive.sqlite").write_bytes(b"")
    code, stderr = run_in_process(capsys, "cluster", "--workdir", str(tmp_path))
    assert_one_error(code, stderr, "archive.sqlite is empty", "run the zc stage")
    assert (tmp_path / "archive.sqlite").stat().st_size == 0  # nothing written into it
    code, stderr = run_in_process(capsys, "zc", "--workdir", str(tmp_path / "zc"), "--unlabelled", "0",
                                  "--labelled", "0")
    assert_one_error(code, stderr, "unlabelled: 0", "at least 1")
    code, stderr = run_in_process(capsys, "zc", "--workdir", str(tmp_path / "zc"), "--unlabelled", "10",
                                  "--labelled", "20")
    assert_one_error(code, stderr, "labelled: 20", "between 0 and unlabelled (10)")


def test_report_names_a_damaged_stage_file_and_recomputes_a_damaged_cache(tmp_path, capsys):
    """A stage's JSON cut short (a killed stage, an edit) stops ``report`` with one paragraph naming the file and the
    fix, rc 2; a damaged cache of the report's own studies is computed again instead."""
    from lightning_nas.report import _cached

    run = tmp_path / "run"
    (run / "pipeline").mkdir(parents=True)
    (run / "pipeline" / "state.json").write_text('{"zc": {"fini')
    code, stderr = run_in_process(capsys, "report", str(run), "--compare_seeds", "[]")
    assert_one_error(code, stderr, "state.json: not valid JSON", "rerun the pipeline")
    cache = tmp_path / "study.json"
    cache.write_text('{"key": {"a"')
    assert _cached(cache, {"a": 1}, lambda: {"value": 2}, refresh=False) == {"value": 2}
    assert json.loads(cache.read_text()) == {"key": {"a": 1}, "result": {"value": 2}}
    assert _cached(cache, {"a": 1}, lambda: {"value": 3}, refresh=False) == {"value": 2}  # a sound cache is kept


def test_a_damaged_pipeline_state_is_one_paragraph(tmp_path, capsys):
    """``pipeline/state.json`` is written atomically, so only an edit damages it: the pipeline names it and the fix
    (rc 2) before any stage runs, and leaves the file for the user to look at."""
    state = tmp_path / "run" / "pipeline" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"zc": ')
    code, stderr = run_in_process(capsys, "pipeline", "--config", str(REPO / "configs" / "pipeline" / "tiny.yaml"),
                                  "--workdir", str(tmp_path / "run"))
    assert_one_error(code, stderr, "state.json: not valid JSON", "delete it and rerun")
    assert state.read_text() == '{"zc": ' and sorted(p.name for p in state.parent.iterdir()) == ["lock", "state.json"]


def test_a_full_disk_is_recognised_through_sqlite_and_chained_errors(tmp_path):
    """SQLite's own full-disk error (a real one: the database may not grow past its page limit), an ENOSPC under
    another exception, and nothing else count as a full disk (``cli.find_disk_full``)."""
    import errno
    import sqlite3

    from lightning_nas.cli import find_disk_full

    db = sqlite3.connect(tmp_path / "a.sqlite")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    db.close()
    assert find_disk_full(full.value) is full.value
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
        except OSError as err:
            raise RuntimeError("writing the checkpoint failed") from err
    except RuntimeError as err:
        assert find_disk_full(err).errno == errno.ENOSPC
    assert find_disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert find_disk_full(ValueError("budget: params must be positive")) is None


def test_a_copy_cut_short_by_a_full_disk_is_removed(tmp_path, capsys, monkeypatch):
    """Lightning saves a checkpoint to a temporary file and moves it; a full disk stops the copy half-way. The error
    names the destination and removes the truncated file (a later ``--ckpt_path`` must not find it)."""
    import errno

    from lightning_nas import cli

    half = tmp_path / "best-epoch=0.ckpt"
    half.write_bytes(b"PK\x03\x04 truncated")

    def cut_short(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tmpabc"), None, str(half))

    monkeypatch.setattr(cli, "_dispatch", cut_short)
    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate"], exit_on_error=True)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: the disk is full")
    assert not half.exists() and f"writing {half} (the half-written file was removed)" in err
