"""Zero-cost proxies: exact against the authors' library (alethiometer 1.1.2), by hand where it is silent."""

import copy
import math
from pathlib import Path

import pytest
import torch
from alethiometer import calc_zc_metrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_nas import zc
from lightning_nas.space import Arch, Cell, Stage, build_network

ALETHIOMETER = {"naswot": "nwot", "snip": "snip", "snip_ssnr_none": "snr_snip_none", "tcet_log1p": "tcet_snip_log1p",
                "snip_ssnr_log": "snr_snip_log", "snip_ssnr_log1p": "snr_snip_log1p"}


class SmallCNN(nn.Module):
    """Not a GraphNet: a plain conv net with BN, a residual add and two linear layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = h + torch.relu(self.bn2(self.conv2(h)))
        return self.fc2(torch.relu(self.fc1(h.mean((2, 3)))))


class Reordered(SmallCNN):
    """Same net, but modules() order (fc2 registered first) differs from the forward order."""

    def __init__(self):
        nn.Module.__init__(self)
        self.fc2 = nn.Linear(16, 10)
        self.fc1 = nn.Linear(8, 16)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)


def networks():
    torch.manual_seed(0)
    probe = build_network(Arch.zc_probe(Cell.random(seed=3, op_set="nb201")), 3, 10)
    cell = Cell.random(seed=5)
    macro = build_network(Arch((Stage(cell, 16, 1, 2), Stage(cell, 24, 2, 1)), final_channels=32, se=True), 3, 10)
    return {"alpha_x": probe, "graphnet_macro": macro, "small_cnn": SmallCNN()}


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)


@pytest.mark.parametrize("name", ["alpha_x", "graphnet_macro", "small_cnn"])
def test_equal_to_alethiometer(name, batch):
    x, y = batch
    net = networks()[name].train()
    ours = zc.scores(net, x, y, list(ALETHIOMETER))
    loader = DataLoader(TensorDataset(x, y), batch_size=len(y))
    ref = calc_zc_metrics(list(ALETHIOMETER.values()), net, loader, torch.device("cpu"))
    for our_name, their_name in ALETHIOMETER.items():
        assert ours[our_name] == pytest.approx(ref[their_name], rel=1e-4), (our_name, ours[our_name], ref[their_name])
    assert zc.naswot(net, x) == ours["naswot"] and zc.snip(net, x, y) == pytest.approx(ours["snip"], rel=1e-9)


def test_tcet_pairs_layers_by_identity(batch):
    """With modules() order ≠ forward order, alethiometer zips mismatched layers; we pair each layer with itself."""
    x, y = batch
    torch.manual_seed(1)
    net = Reordered().train()
    layers = [net.conv1, net.conv2, net.fc1, net.fc2]
    logdet = {}

    def record(module, inputs, output):  # the NASWOT kernel of one layer, written out
        c = (output.reshape(len(output), -1) > 0).double()
        sign, value = torch.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T)
        logdet[module] = value.item() if sign != 0 else 0.0  # the documented sentinel for a singular kernel

    hooks = [layer.register_forward_hook(record) for layer in layers]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    state = copy.deepcopy(net.state_dict())
    net.train()
    grads = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), [layer.weight for layer in layers])
    net.load_state_dict(state)  # undo the BN running-statistics update of that train-mode pass
    expected = 0.0
    for layer, g in zip(layers, grads, strict=True):
        s = (layer.weight * g).abs().detach().flatten().double()
        expected += logdet[layer] * math.log1p((s.sum() / s.std()).item())

    ours = zc.tcet(net, x, y)
    assert ours == pytest.approx(expected, rel=1e-6)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(y))
    theirs = calc_zc_metrics(["tcet_snip_log1p"], net, loader, torch.device("cpu"))["tcet_snip_log1p"]
    assert abs(theirs - ours) > 1e-3 * abs(ours)  # the positional pairing really differs here


def test_zen_score_by_hand():
    """Conv1×1 (one channel) → BN: f(x) = BN_train(w·x), so every term of the definition has a closed form."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(1)
            self.fc = nn.Linear(1, 2)

        def forward_features(self, x):
            return self.bn(self.conv(x))

        def forward(self, x):
            return self.fc(self.forward_features(x).mean((2, 3)))

    model = Tiny()
    x = torch.zeros(4, 1, 5, 5)
    score = zc.zen_score(model, x, batch_size=6, repeats=1, seed=7)

    gen = torch.Generator().manual_seed(7)
    w = torch.randn((1, 1, 1, 1), generator=gen).item()
    _ = torch.randn((2, 1), generator=gen)  # fc weight, re-initialised too (in modules() order: conv, bn, fc)
    x1 = torch.randn((6, 1, 5, 5), generator=gen)
    eps = torch.randn((6, 1, 5, 5), generator=gen)

    def bn(v):
        return (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)

    a, b = w * x1, w * (x1 + 0.01 * eps)
    delta = (bn(a) - bn(b)).abs().reshape(6, -1).sum(1).mean()
    running_var = 0.9 * (0.9 * 1.0 + 0.1 * a.var()) + 0.1 * b.var()  # two train-mode passes, momentum 0.1
    expected = math.log(delta.item()) + math.log(math.sqrt(running_var.item()))
    assert score == pytest.approx(expected, rel=1e-5)
    assert model.conv.weight.requires_grad and model.bn.running_var.item() == 1.0  # the caller's model untouched
    with pytest.raises(ValueError, match="forward_features"):
        zc.zen_score(SmallCNN(), torch.zeros(2, 3, 8, 8))


def test_zico_by_hand():
    """Two splits ⇒ per coordinate mean|g|/std = (|a|+|b|)/|a−b| for the two split gradients a, b."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    expected = 0.0
    split_grads = []
    for lo, hi in ((0, 3), (3, 6)):
        loss = nn.functional.cross_entropy(model(x[lo:hi]), y[lo:hi])
        split_grads.append(torch.autograd.grad(loss, [model[0].weight, model[2].weight]))
    for a, b in zip(*split_grads, strict=True):
        a, b = a.flatten().double(), b.flatten().double()
        keep = a != b
        expected += math.log(((a.abs() + b.abs())[keep] / (a - b).abs()[keep]).sum().item())
    assert zc.zico(model, x, y) == pytest.approx(expected, rel=1e-9)


def test_scores_share_two_passes_and_copy_nothing(batch, monkeypatch):
    x, y = batch
    net = networks()["small_cnn"]
    calls = []
    original = net.forward
    net.forward = lambda inp: calls.append(net.training) or original(inp)
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("a proxy deep-copied the network"))
    zc.scores(net, x, y, ["naswot", "lnwot", "snip", "snip_ssnr", "tcet"])
    assert calls == [False, True]  # one eval-mode forward, one train-mode forward (+ its backward)


def test_caller_model_left_as_given(batch):
    x, y = batch
    net = networks()["graphnet_macro"]
    net.train()
    net.stem[1].eval()  # a mixed-mode model
    net.classifier.weight.requires_grad_(False)
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    hook = net.cells.register_forward_hook(lambda *a: None)
    before = copy.deepcopy(net.state_dict())
    modes = [m.training for m in net.modules()]
    zc.scores(net, x, y, ["naswot", "lnwot", "snip", "snip_ssnr", "tcet", "zico", "zen", "params", "flops"])
    assert [m.training for m in net.modules()] == modes
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert not net.classifier.weight.requires_grad and net.stem[0].weight.requires_grad
    assert list(net.cells._forward_hooks) == [hook.id]
    assert sum(len(m._forward_hooks) for m in net.modules()) == 1


def test_cost_proxies_and_lnwot(batch):
    x, y = batch
    net = networks()["small_cnn"]
    s = zc.scores(net, x, y, ["params", "macs", "flops", "lnwot"])
    assert s["params"] == sum(p.numel() for p in net.parameters())
    hand_macs = 16 * 16 * (8 * 3 * 9 + 8 * 8 * 9) + 8 * 16 + 16 * 10
    assert s["macs"] == hand_macs and s["flops"] == 2 * hand_macs
    assert s["lnwot"] == pytest.approx(sum(zc.lnwot(net, x)))
    assert len(zc.lnwot(net, x)) == 4


def test_clear_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match="no Conv1d/Conv2d/Linear"):
        zc.naswot(nn.Sequential(nn.ReLU(), nn.Flatten()), x)
    net = networks()["small_cnn"]
    with pytest.raises(ValueError, match="targets"):
        zc.snip(net, x, y[:5])
    with pytest.raises(ValueError, match=r"shape \(16, 1, 16, 16\) does not fit"):
        zc.naswot(net, x[:, :1])
    with pytest.raises(ValueError, match="at least 2"):
        zc.naswot(net, x[:1])
    with pytest.raises(ValueError, match="unknown proxy 'grasp'"):
        zc.scores(net, x, y, ["grasp"])
    with pytest.raises(ValueError, match="mode"):
        zc.snip_ssnr(net, x, y, mode="norm")


def test_singular_kernel_is_a_documented_sentinel():
    """Identical inputs give identical codes: K is singular, NASWOT is 0 and the problem is reported."""
    net = SmallCNN()
    x = torch.ones(4, 3, 8, 8)
    values, problems = zc.evaluate_proxies(net, x, torch.zeros(4, dtype=torch.long), ["naswot", "tcet"])
    assert values["naswot"] == 0.0 and "singular" in problems["naswot"]


def test_conv1d_networks_are_scored():
    arch = Arch.zc_probe(Cell.random(seed=2, op_set="nb201"))
    net = build_network(arch, in_channels=2, num_classes=4, dims=1)
    x, y = torch.randn(8, 2, 64), torch.randint(0, 4, (8,))
    s = zc.scores(net, x, y, ["naswot", "snip_ssnr", "tcet", "zico", "zen"])
    assert all(math.isfinite(v) for v in s.values()) and s["naswot"] > 0


# ---- objectives (issue #29) ------------------------------------------------------------------------------------
def test_grad_norm_and_tcet_mean_match_autograd_and_tcet_per_layer():
    import torch.nn.functional as F

    from lightning_nas.zc.proxies import evaluate_proxies

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    values, _ = evaluate_proxies(model, x, y, ["tcet", "tcet_mean", "grad_norm"])
    F.cross_entropy(model(x), y).backward()
    oracle = torch.cat([m.weight.grad.flatten() for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]).norm()
    assert values["grad_norm"] == pytest.approx(float(oracle), rel=1e-5)
    assert values["tcet_mean"] == pytest.approx(values["tcet"] / 3, rel=1e-12)
    model.zero_grad()
    model[0].weight.data *= 100  # a larger initial scale: larger gradients downstream
    assert evaluate_proxies(model, x, y, ["grad_norm"])[0]["grad_norm"] > values["grad_norm"]


def test_guarded_objective_rejects_networks_outside_the_trainable_range():
    from lightning_nas.search.evaluate import ArchEvaluator, Budget
    from lightning_nas.space.arch import Arch
    from lightning_nas.zc.objectives import TrainableRange, objective_for
    from lightning_nas.zc.vector import Probe

    probe = Probe.from_source("gaussian", seed=0, batch_size=8)
    arch = Arch.load(Path(__file__).resolve().parents[1] / "configs" / "archs" / "digits.json")
    plain = ArchEvaluator(probe, Budget("any"), "naswot")(arch)
    wide = ArchEvaluator(probe, Budget("any"), "guarded_naswot", trainable=TrainableRange(0.0, 1e9))(arch)
    assert plain.status == wide.status == "ok" and wide.score == plain.score
    narrow = ArchEvaluator(probe, Budget("any"), "guarded_naswot", trainable=TrainableRange(0.0, 1e-9, "test"))(arch)
    assert narrow.status == "rejected" and narrow.score is None and "grad_norm" in narrow.reason
    with pytest.raises(ValueError, match="objective: unknown 'nope'"):
        objective_for("nope")


def test_the_guard_measures_a_standard_batch_and_its_range_separates_trainable_from_untrainable():
    """#29: the guard's value does not depend on the run's probe, and the shipped bound lies between the networks
    that train and those that do not (not at one trainable network's maximum)."""
    import json
    import math

    from lightning_nas.search.evaluate import ArchEvaluator, Budget
    from lightning_nas.space.arch import Arch
    from lightning_nas.space.task import TASKS
    from lightning_nas.zc.trainability import (
        RANGE_FILE,
        TrainableRange,
        init_grad_norm,
        separating_range,
        shipped_range,
    )
    from lightning_nas.zc.vector import Probe

    arch = Arch.load(Path(__file__).resolve().parents[1] / "configs" / "archs" / "digits.json")
    task = TASKS["digits"]
    reasons = []
    for probe in (Probe.from_source("gaussian", seed=0, batch_size=2), Probe.from_source("digits", seed=0,
                                                                                          batch_size=8)):
        e = ArchEvaluator(probe, Budget("any"), "guarded_naswot", task, trainable=TrainableRange(0.0, 1e-9))(arch)
        reasons.append(e.reason.split("outside")[0])
    assert reasons[0] == reasons[1]  # the same measured value whatever the probe
    assert f"{init_grad_norm(arch, task):.3g}" in reasons[0]
    # separating_range: the cut falls in the gap between the trainable and the untrainable values
    trains = [True] * 8 + [False] * 3
    values = [1, 2, 3, 4, 5, 6, 7, 40, 100, 200, 300]
    r = separating_range(values, trains)
    assert r.lo == 0.0 and r.hi == pytest.approx(math.sqrt(40 * 100))
    one_outlier = separating_range([*values, 250], [*trains, True])  # one trainable network among the exploders
    assert one_outlier.hi == pytest.approx(math.sqrt(40 * 100))  # does not move the bound up to it
    assert separating_range([0.01, *values[:8]], [False, *trains[:8]]).lo == pytest.approx(math.sqrt(0.01 * 1))
    with pytest.raises(ValueError, match="need ≥ 5"):
        separating_range([1, 2, 3], [True, True, False])
    info = json.loads(RANGE_FILE.read_text())
    assert info["measure"] == "grad_norm_at_init"
    graphnet, nb201 = shipped_range(), shipped_range("nb201")  # one range per network family
    assert graphnet.hi == info["spaces"]["graphnet"]["hi"] < 100 and nb201.lo == info["spaces"]["nb201"]["lo"] > 0
    assert graphnet.hi < nb201.hi  # GraphNet's untrainable networks explode; NB201's weak cells barely move
    with pytest.raises(ValueError, match="no trainable range for the space 'nasbench101'"):
        shipped_range("nasbench101")
