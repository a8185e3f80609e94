"""The one command table (lightning_nas.stages) stays in sync with the CLI, the pipeline and the configs, and RunDir
names every artifact and the stage that writes it."""

from __future__ import annotations

import importlib
from pathlib import Path

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


# ---- the import graph: one way, no cycle -----------------------------------------------------------------------------
ROOTS = ("lightning_nas", "datamodules", "callbacks")


def import_graph(base: Path) -> dict[str, set[str]]:
    """Module → the project modules it imports (AST; function-local imports included; ``from pkg import name``
    points at the submodule ``pkg.name`` when there is one, else at the package)."""
    import ast

    files = {}
    for root in ROOTS:
        for f in (base / root).rglob("*.py"):
            parts = f.relative_to(base).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {name: set() for name in files}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    module = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                      + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_imports_run_one_way_with_no_cycle():
    graph = import_graph(REPO)
    assert "lightning_nas.models.ccnf" in graph and "datamodules.graph_zc" in graph  # the scan sees the project

    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
    forbidden = ("lightning_nas.models", "lightning_nas.cli", "lightning_nas.lightning_cli", "callbacks")
    for module, imports in graph.items():
        if module.startswith("datamodules"):  # data only: never a model, the command line or a callback
            assert not [m for m in imports if m.startswith(forbidden)], module
        if module.startswith("lightning_nas") and module != "lightning_nas.lightning_cli":
            assert not [m for m in imports if m.startswith("callbacks")], module
    # the search-space package is the bottom layer: it imports nothing of the stages above it
    assert not [m for s in graph if s.startswith("lightning_nas.space") for m in graph[s]
                if m.startswith(("lightning_nas.zc", "lightning_nas.models", "lightning_nas.search", "datamodules"))]
