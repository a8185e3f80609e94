"""The one command table (lightning_nas.stages) stays in sync with the CLI, the pipeline and the configs, and RunDir
names every artifact and the stage that writes it."""

from __future__ import annotations

import importlib

import pytest
import yaml

from lightning_nas.stages import BY_NAME, CHAIN, CLI_COMMANDS, COMMANDS, RunDir
from tests.conftest import REPO


def test_every_command_in_the_table_is_dispatched_and_documented(capsys):
    from lightning_nas.cli import HELP, main

    assert len(BY_NAME) == len(COMMANDS)  # names are unique
    for command in COMMANDS:
        module = importlib.import_module(command.module, "lightning_nas")
        assert callable(module.main), command.name
        if command.name in CLI_COMMANDS:
            assert f"  {command.name} " in HELP and command.help in HELP
            with pytest.raises(SystemExit) as exit_:  # the command's own parser answers --help
                main([command.name, "--help"])
            assert exit_.value.code in (0, None), command.name
    capsys.readouterr()
    with pytest.raises(ValueError, match="unknown command 'train'; choose from fit, validate, test, predict, zc"):
        main(["train"])


def test_the_pipeline_chain_is_the_table_s_chain_and_every_pipeline_config_names_it():
    from lightning_nas.pipeline import STAGES

    assert list(STAGES) == [c.name for c in CHAIN] == ["zc", "gvae", "cluster", "ccnf", "search", "sg", "generate",
                                                       "evaluate"]
    for name in ("tiny", "paper"):
        config = yaml.safe_load((REPO / "configs" / "pipeline" / f"{name}.yaml").read_text())
        assert list(config["stages"]) == list(STAGES), name
    for command in CHAIN:  # what a stage reads is written by a stage before it
        producers = [CHAIN.index(BY_NAME[RunDir.PRODUCER[r]]) for r in command.reads]
        assert all(p < CHAIN.index(command) for p in producers), command.name


def test_run_dir_names_artifacts_and_says_which_stage_to_run(tmp_path):
    run = RunDir(tmp_path)
    assert run.archive == tmp_path / "archive.sqlite" and run.gvae == tmp_path / "gvae" / "checkpoints" / "last.ckpt"
    assert run.artifact("cluster") == run.clusters and run.artifact("generate") == run.arch
    assert run.metrics("search") == tmp_path / "search" / "metrics.json"
    with pytest.raises(FileNotFoundError, match=r"archive.sqlite: no archive; run the zc stage first \(python -m "
                                                r"lightning_nas zc --config configs/zc/tiny.yaml"):
        run.require("archive")
    with pytest.raises(FileNotFoundError, match="run the cluster stage first"):
        run.require("clusters")
    run.archive.write_bytes(b"")
    assert run.require("archive") == run.archive
