"""Final selection by brief training (lightning_nas.select): the candidate that learns wins over the proxy's pick,
on validation data, with the evaluate config's data and settings."""

import json

import pytest

from lightning_nas.select import (
    SelectConfig,
    best_index,
    candidate_config,
    diverse_top,
    train_candidates,
    training_loss_candidates,
)
from lightning_nas.space.arch import Arch
from tests.conftest import REPO

DIGITS = str(REPO / "configs" / "evaluate" / "digits.yaml")
# a one-op network that can only average-pool its stem's 8 channels: it cannot learn the digits in 2 epochs
WEAK = {"stem": {"channels": 8, "stride": 1},
        "stages": [{"cell": {"ops": ["avg_pool_k3"], "edges": [[0, 1], [1, 2]]}, "channels": 8, "stride": 1,
                    "repeats": 1}]}


def test_training_keeps_the_candidate_that_learns_whatever_the_proxy_order(tmp_path):
    weak, strong = Arch.from_json(WEAK), Arch.load(REPO / "configs" / "archs" / "digits.json")
    config = SelectConfig(top_n=2, config=DIGITS, epochs=2, seed=0, set={"trainer.logger": False})
    results = train_candidates([weak, strong], config, tmp_path, log=lambda _: None)  # the weak one ranked first
    assert [r["val_metric_name"] for r in results] == ["val/acc"] * 2 and all(len(r["history"]) == 2 for r in results)
    assert results[1]["val_metric"] > results[0]["val_metric"] + 0.2 and best_index(results) == 1
    assert results[1]["val_metric"] == max(results[1]["history"])
    assert Arch.load(tmp_path / "candidate_1" / "arch.json") == strong
    assert not list(tmp_path.rglob("*.ckpt"))  # candidates keep no checkpoints
    # the same seed trains the same way: the same validation history
    again = train_candidates([strong], config, tmp_path / "again", log=lambda _: None)
    assert again[0]["history"] == results[1]["history"]


def test_training_loss_ranks_the_candidate_that_learns_first(tmp_path):
    """rank: train_loss — Σ of the first steps' training losses of the evaluate recipe's own run: the network that
    learns has the smaller sum and wins; the same seed gives the same losses; no validation pass, no checkpoint."""
    weak, strong = Arch.from_json(WEAK), Arch.load(REPO / "configs" / "archs" / "digits.json")
    config = SelectConfig(top_n=2, config=DIGITS, rank="train_loss", epochs=15, steps=12, seed=0,
                          set={"data.init_args.image_size": 32})
    results = training_loss_candidates([weak, strong], config, tmp_path, log=lambda _: None)
    assert [r["steps"] for r in results] == [12, 12] and all(len(r["losses"]) == 12 for r in results)
    assert all(r["train_loss_sum"] == pytest.approx(sum(r["losses"])) for r in results)
    # the strong one's loss falls during the steps; the weak one's barely moves
    assert results[1]["losses"][-1] < results[1]["losses"][0] - 0.3
    assert results[1]["train_loss_sum"] < results[0]["train_loss_sum"] and best_index(results) == 1
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("wandb"))
    again = training_loss_candidates([strong], config, tmp_path / "again", log=lambda _: None)
    assert again[0]["losses"] == results[1]["losses"]
    with pytest.raises(ValueError, match="select.steps: 100000 training steps asked"):
        training_loss_candidates([strong], SelectConfig(top_n=1, config=DIGITS, rank="train_loss", epochs=1,
                                                        steps=100_000, set={"data.init_args.image_size": 32}),
                                 tmp_path / "long", log=lambda _: None)


def test_diverse_top_takes_each_groups_best_before_any_second():
    # candidates 0, 1, 2 are CCNF draws of one HL architecture, 3 and 4 of another, 5 of a third
    groups = ["a", "a", "a", "b", "b", "c"]
    assert diverse_top(range(6), groups, 4) == [0, 3, 5, 1]
    assert diverse_top([4, 0, 1, 3, 2, 5], groups, 6) == [4, 0, 5, 1, 3, 2]
    assert diverse_top(range(6), list(range(6)), 3) == [0, 1, 2]  # every candidate its own group: the plain ranking
    assert diverse_top([], [], 3) == []


def test_candidate_config_overrides_and_minimised_metrics(tmp_path):
    tree, monitor, mode = candidate_config(SelectConfig(top_n=1, config=DIGITS, epochs=4, seed=7,
                                                        set={"data.init_args.image_size": 32}),
                                           tmp_path / "arch.json", tmp_path, 3)
    assert (monitor, mode) == ("val/acc", "max") and tree["seed_everything"] == 7
    assert tree["trainer"]["max_epochs"] == 4 and tree["trainer"]["enable_checkpointing"] is False
    assert tree["trainer"]["logger"]["init_args"]["name"] == "select-3"  # each candidate's curves in its W&B run
    assert tree["data"]["init_args"]["image_size"] == 32 and tree["model"]["init_args"]["arch"].endswith("arch.json")
    assert not any("Checkpoint" in c["class_path"] for c in tree["trainer"]["callbacks"])
    dense = str(REPO / "configs" / "evaluate" / "darcy_flow.yaml")
    _, monitor, mode = candidate_config(SelectConfig(top_n=1, config=dense), tmp_path / "a.json", tmp_path, 0)
    assert mode == "min"  # a loss-like metric: lower is better
    assert best_index([{"val_metric": 0.3, "mode": "min"}, {"val_metric": 0.1, "mode": "min"}]) == 1


def test_select_settings_are_checked_where_they_enter(tmp_path):
    with pytest.raises(ValueError, match="select.config: give the evaluate config"):
        SelectConfig(top_n=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SelectConfig(top_n=3, config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="top_n must be"):
        SelectConfig(top_n=-1)
    with pytest.raises(ValueError, match="steps ≥ 1"):
        SelectConfig(steps=0)
    assert json.loads(json.dumps(SelectConfig().__dict__))["top_n"] == 0


def test_init_grad_norm_is_seeded_and_separates_a_badly_conditioned_network():
    """The found-vs-alternatives diagnostic: the same network and seed give the same norm; a deep stack of dense
    mbconv cells (what T-CET rewards, #20) starts with a much larger gradient than the hand-picked digits network."""
    from lightning_nas.space import Cell
    from lightning_nas.space.arch import Arch, Stage
    from lightning_nas.space.task import Task
    from lightning_nas.zc.trainability import init_grad_norm
    from tests.conftest import REPO

    task = Task.resolve("digits")
    hand = Arch.load(REPO / "configs" / "archs" / "digits.json")
    ops = ["mbconv_e6_k3", "mbconv_e6_k5", "mbconv_e6_k3", "mbconv_e6_k5", "mbconv_e6_k3", "mbconv_e6_k5"]
    dense = Cell(ops, [(i, j) for j in range(1, 8) for i in range(j)])
    deep = Arch(stem_channels=8, stages=[Stage(dense, 8, 2 if i in (3, 6) else 1, 1) for i in range(10)])
    a, b = init_grad_norm(hand, task), init_grad_norm(hand, task)
    assert a == b and 0 < a < float("inf")
    assert init_grad_norm(deep, task) > 10 * a


def test_alternatives_get_generate_s_own_final_selection(tmp_path):
    """found-vs-alternatives: "random" and "evo" keep what generate's selection would keep from their own top N —
    the run's resolved select config — and the objective's best when the run selected without training."""
    import yaml

    from lightning_nas.compare import run_select, selected

    weak, strong = Arch.from_json(WEAK), Arch.load(REPO / "configs" / "archs" / "digits.json")
    assert run_select(tmp_path) == SelectConfig()  # no resolved generate config: the default, no training
    (tmp_path / "pipeline").mkdir()
    select = {"top_n": 2, "config": DIGITS, "rank": "train_loss", "steps": 10, "epochs": 15,
              "set": {"data.init_args.image_size": 32}}
    (tmp_path / "pipeline" / "generate.yaml").write_text(yaml.safe_dump({"select": select, "candidates": 30}))
    config = run_select(tmp_path)
    assert config == SelectConfig(**select)
    scored = [(weak, 2.0), (strong, 1.0)]  # the objective prefers the weak one
    assert selected(scored, SelectConfig(), tmp_path / "none") == weak
    assert selected(scored, config, tmp_path / "sel", log=lambda _: None) == strong
    assert Arch.load(tmp_path / "sel" / "candidate_1" / "arch.json") == strong
