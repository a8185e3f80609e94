"""The task object: budgets are checked on the network that will be trained (input size, classes, stem, SE, dense)."""

from __future__ import annotations

import random

import pytest

from lightning_nas.archive import Archive
from lightning_nas.search import ArchEvaluator, Budget, HLEvoConfig, hl_evo
from lightning_nas.space import Arch, Cell, build_network, count_cost
from lightning_nas.space.hl import HLArch, HLStage
from lightning_nas.space.network import DenseGraphNet, task_network
from lightning_nas.space.task import TASKS, Task, named_task
from lightning_nas.zc import Probe

CONV = Cell(("conv_k3",), ((0, 1), (1, 2)))


@pytest.fixture(scope="module")
def probe():
    return Probe.from_source("gaussian", seed=0, batch_size=4)


def test_named_tasks_fields_and_limits():
    imagenet = named_task("imagenet")
    assert (imagenet.input_shape, imagenet.num_classes, imagenet.stem_stride, imagenet.se) == ((3, 224, 224), 1000,
                                                                                               2, True)
    assert TASKS["cifar100"].num_classes == 100 and TASKS["cifar10"].max_downsamplings == 5
    cosmic, ecg, ninapro = named_task("cosmic"), named_task("ecg"), named_task("ninapro")
    assert cosmic.dense and cosmic.max_downsamplings == 0 and cosmic.input_shape == (1, 128, 128)
    assert ecg.dims == 1 and ecg.input_shape == (1, 1000) and ecg.num_classes == 4
    assert ninapro.max_downsamplings == 4  # 16 px high: four halvings leave 1 px
    assert Task.resolve({"name": "cifar10", "input_size": 64}).input_size == (64, 64)
    assert Task.resolve(Task("x", 2, 8, 3)).input_shape == (2, 8, 8)
    for bad, match in [("cifar1000", "not a known task"), ({"name": "t", "in_channels": 0}, "in_channels"),
                       ({"name": "t", "dense": True, "stem_stride": 2}, "stem_stride must be 1"),
                       ({"name": "cifar10", "colour": 1}, "unknown field"), ({"name": "t", "input_size": [1, 2, 3]},
                                                                             "input_size")]:
        with pytest.raises(ValueError, match=match):
            Task.resolve(bad)


def test_architectures_carry_their_task_and_respect_its_strides(tmp_path):
    hl = HLArch((HLStage(0, 16, 2, 1), HLStage(0, 32, 1, 2)), 64)
    arch = named_task("imagenet").materialise(hl, [CONV, CONV])
    assert (arch.stem_stride, arch.se, arch.task.name) == (2, True, "imagenet")
    arch.save(tmp_path / "arch.json")
    assert Arch.load(tmp_path / "arch.json") == arch  # the task travels with the spec
    assert Arch.from_json({k: v for k, v in arch.to_json().items() if k != "task"}).task is None  # old specs load
    with pytest.raises(ValueError, match="dense task keeps the input resolution"):
        named_task("darcy_flow").materialise(hl, [CONV, CONV])
    flat = named_task("darcy_flow").materialise(HLArch((HLStage(0, 16, 1, 1),)), [CONV])
    assert isinstance(task_network(named_task("darcy_flow"), flat), DenseGraphNet)
    with pytest.raises(ValueError, match="allows 3"):  # 8 px: three halvings
        Task("tiny", 3, 8, 10).materialise(HLArch(tuple(HLStage(0, 8, 2, 1) for _ in range(4))), [CONV] * 4)


def test_a_budget_is_checked_at_the_tasks_resolution_stem_and_se(probe):
    """The defect: every budget was counted at 3×32×32 / 10 classes, so an ImageNet "450M" admitted ~GMAC networks."""
    budget = Budget("in1k-450M", max_macs=450e6)
    hl = HLArch((HLStage(0, 96, 1, 3),), None)
    at_probe, at_imagenet = (ArchEvaluator(probe, budget, None),
                             ArchEvaluator(probe, budget, None, named_task("imagenet")))
    small = at_probe(at_probe.materialise(hl, [CONV]))
    big = at_imagenet(at_imagenet.materialise(hl, [CONV]))
    assert small.status == "unscored" and small.macs < 450e6  # what the search used to check
    assert big.status == "over_budget" and big.macs > 450e6
    arch = at_imagenet.materialise(hl, [CONV])
    assert big.macs == count_cost(build_network(arch, 3, 1000), (3, 224, 224))["macs"]


def test_an_imagenet_450m_search_never_exceeds_450m_macs_at_224px(probe, tmp_path):
    """HL-Evo with the ImageNet task: every architecture it keeps, rebuilt from its stored spec as ``evaluate`` trains
    it (1000 classes, stem stride 2, SE) and counted at 224 px, is within 450M MACs."""
    task = named_task("imagenet")
    budget = Budget("in1k-450M", max_macs=450e6)

    def gen_cell(cell, cluster, rng):
        return Cell.random(rng=random.Random(rng.randrange(2**31)), num_op_nodes=2)

    config = HLEvoConfig(population=4, iterations=12, seed=0, initial=((0, 16, 2, 1), (0, 32, 2, 1), (0, 64, 2, 1)),
                         initial_final_channels=128)
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        state = hl_evo(config, ArchEvaluator(probe, budget, "tcet", task), gen_cell, 2, archive, "run")
        history = archive.archs(stage="search", run="run")
    kept = [r for r in history if r["metrics"]["status"] == "ok"]
    assert state.evaluations == len(kept) >= 3
    for r in kept:
        arch = Arch.from_json(r["spec"])
        assert arch.task == task and arch.stem_stride == 2 and arch.se
        macs = count_cost(build_network(arch, 3, 1000), (3, 224, 224))["macs"]
        assert macs == r["metrics"]["macs"] <= 450e6
    print(f"ImageNet 450M search: {len(kept)} kept, {state.over_budget} over budget; MACs of the kept at 224 px: "
          f"{sorted(round(r['metrics']['macs'] / 1e6, 1) for r in kept)} M")


def test_search_stage_validates_budgets_and_the_initial_architecture_before_running(tmp_path):
    from lightning_nas.search.stage import SearchStageConfig

    with pytest.raises(ValueError, match="max_params is -5"):
        SearchStageConfig(workdir=str(tmp_path), budgets=[{"name": "b", "max_params": -5}])
    with pytest.raises(ValueError, match="allows 0"):
        SearchStageConfig(workdir=str(tmp_path), task="cosmic", budgets=[{"name": "b", "max_params": 1e6}])
    config = SearchStageConfig(workdir=str(tmp_path), task="cifar10",
                               budgets=[{"name": "a"}, {"name": "b", "task": "imagenet"}])
    assert [config.budget_task(b).name for b in config.budgets] == ["cifar10", "imagenet"]
    assert not (tmp_path / "archive.sqlite").exists()


def test_evaluate_trains_an_architecture_only_as_the_network_its_budget_was_checked_on():
    import torch

    from lightning_nas.models import ClassifierModule, DenseModule

    hl = HLArch((HLStage(0, 16, 2, 1),), None)
    imagenet_arch = named_task("imagenet").materialise(hl, [CONV]).to_json()
    with pytest.raises(ValueError, match="searched for task 'imagenet'.*outputs 10 \\(the task's: 1000\\)"):
        ClassifierModule(imagenet_arch, num_classes=10)
    model = ClassifierModule(imagenet_arch, num_classes=1000)
    model.train()
    with pytest.raises(ValueError, match="searched for task 'imagenet' at 224×224"):
        model.training_step((torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)), 0)
    cosmic_arch = named_task("cosmic").materialise(HLArch((HLStage(0, 8, 1, 1),)), [CONV]).to_json()
    DenseModule(cosmic_arch, task="cosmic")
    with pytest.raises(ValueError, match="dense False \\(the task's: True\\)"):
        ClassifierModule(cosmic_arch, num_classes=1, in_channels=1)
