"""Every shipped LightningCLI config parses against the current classes (a renamed argument breaks this test, not a
user's run)."""

import pytest

from lightning_nas.cli import main
from tests.conftest import REPO

CONFIGS = [
    ["gvae.yaml"],
    ["gvae.yaml", "ablation/gvae_no_triplet.yaml"],
    ["gvae.yaml", "ablation/gvae_independent_decoder.yaml"],
    ["paper/gvae.yaml"],
    ["ccnf.yaml"],
    ["paper/ccnf.yaml"],
    ["sg.yaml"],
    ["paper/sg.yaml"],
    *[[f"evaluate/{p.name}"] for p in sorted((REPO / "configs" / "evaluate").glob("*.yaml"))],
]


@pytest.mark.parametrize("configs", CONFIGS, ids=["+".join(c) for c in CONFIGS])
def test_config_parses(configs, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lightning_nas"])
    args = ["fit"] + [a for c in configs for a in ("--config", str(REPO / "configs" / c))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path:" in printed and "trainer:" in printed


STAGE_CONFIGS = ["search/tiny.yaml", "search/paper.yaml", "generate/tiny.yaml", "generate/paper.yaml"]


@pytest.mark.parametrize("config", STAGE_CONFIGS)
def test_stage_config_builds_its_settings(config):
    import yaml

    from lightning_nas.generate import GenerateConfig
    from lightning_nas.search.stage import SearchStageConfig

    cls = {"search": SearchStageConfig, "generate": GenerateConfig}[config.split("/")[0]]
    settings = cls(**yaml.safe_load((REPO / "configs" / config).read_text()))
    assert settings.workdir.startswith("runs/")
