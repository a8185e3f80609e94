"""Hardware cost (issue [hw]): host latency measurement and its storage, HW-NAS-Bench, predictors, budgets."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from lightning_nas.archive import Archive
from lightning_nas.hw import (
    HW_DEVICES,
    HWNASBench,
    fit_predictor,
    host_fingerprint,
    measure_latency,
    nb201_features,
    within,
)
from lightning_nas.hw.cost import HardwareCost, random_archs
from lightning_nas.hw.measure import measure_arch, network_key
from lightning_nas.hw.predictors import NB201_LUT_COLUMNS, NETWORK_LUT_COLUMNS, LookupTable, network_features
from lightning_nas.search.evaluate import ArchEvaluator, Budget
from lightning_nas.space.network import task_network
from lightning_nas.space.task import Task
from lightning_nas.zc.vector import Probe


def _tiny_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


@pytest.fixture(scope="module")
def hw_table():
    return HWNASBench()


# ---- measurement ---------------------------------------------------------------------------------------------------
def test_measure_latency_reports_median_and_iqr_and_restores_threads():
    threads = torch.get_num_threads()
    m = measure_latency(_tiny_net(), (3, 16, 16), runs=20, warmup=2, threads=1)
    assert m.median_ms > 0 and m.iqr_ms >= 0 and m.runs == 20 and m.batch == 1 and 0 < m.ms == m.p10_ms <= m.median_ms
    assert m.device.threads == 1 and m.device.runtime == "eager" and m.device.cpu
    assert torch.get_num_threads() == threads
    bigger = measure_latency(_tiny_net(), (3, 64, 64), runs=20, warmup=2, batch=8)
    assert bigger.median_ms > m.median_ms  # 128× the pixels: a measurement that ignored its input would not see it
    with pytest.raises(ValueError, match="runtime"):
        measure_latency(_tiny_net(), (3, 16, 16), runtime="tvm")
    with pytest.raises(ValueError, match="IQR"):
        measure_latency(_tiny_net(), (3, 16, 16), runs=3)


def test_onnxruntime_latency_is_measured_with_its_own_fingerprint():
    m = measure_latency(_tiny_net(), (3, 16, 16), runtime="onnxruntime", runs=10, warmup=2)
    assert m.median_ms > 0 and m.device.runtime == "onnxruntime" and "onnxruntime" in m.device.versions
    assert m.device.id != host_fingerprint("eager", 1).id


def test_fingerprints_differ_by_threads_and_round_trip():
    a, b = host_fingerprint("eager", 1), host_fingerprint("eager", 2)
    assert a.id != b.id and a.id == host_fingerprint("eager", 1).id
    assert type(a).from_json(json.loads(json.dumps(a.to_json()))).id == a.id


def test_measure_arch_stores_by_fingerprint_and_reuses(tmp_path, monkeypatch):
    task = Task("t", 3, (16, 16), 10)
    arch = random_archs(task, 1, seed=3)[0]
    with Archive(tmp_path / "a.sqlite") as archive:
        first = measure_arch(arch, task, runs=8, warmup=1, archive=archive)
        rows = archive.latencies()
        assert len(rows) == 1 and rows[0]["device_id"] == first.device.id and rows[0]["spec"] == arch.to_json()
        assert rows[0]["network"] == network_key(arch.to_json(), task.input_shape, task.name)

        def fail(*a, **k):
            raise AssertionError("measured again")

        monkeypatch.setattr("lightning_nas.hw.measure.measure_latency", fail)
        again = measure_arch(arch, task, runs=8, warmup=1, archive=archive)
        assert (again.median_ms, again.ms) == (first.median_ms, first.ms)
        with pytest.raises(AssertionError, match="measured again"):  # another fingerprint: never mixed
            measure_arch(arch, task, threads=2, runs=8, warmup=1, archive=archive)
        assert archive.latencies(device_id=host_fingerprint("eager", 2).id) == []


def test_latencies_of_a_version_1_archive_without_the_table_are_empty(tmp_path):
    """An archive written before the latency table existed is migrated on opening and reads no latency."""
    with Archive(tmp_path / "a.sqlite") as archive:
        with archive._write() as cur:
            cur.execute("DROP TABLE latency")
            cur.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Archive(tmp_path / "a.sqlite", create=False) as archive:
        assert archive.latencies() == []


# ---- HW-NAS-Bench --------------------------------------------------------------------------------------------------
def test_hw_nas_bench_table_is_shipped_and_read(hw_table):
    assert len(hw_table) == 15_625
    first = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert hw_table.lookup(first, "edgegpu") == pytest.approx(5.80742)
    assert hw_table.lookup(first, "fpga", "energy") == pytest.approx(18.0107)
    assert np.isnan(hw_table.values("edgetpu")).sum() == 4_699  # −1 in the file: not measured
    with pytest.raises(ValueError, match="no energy"):
        hw_table.values("raspi4", "energy")
    with pytest.raises(KeyError, match="not an NB201"):
        hw_table.lookup("|none~0|", "raspi4")


def test_nb201_features_count_ops_and_live_edges():
    f = nb201_features("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert f[0] == 1 and f[1:5].tolist() == [1, 0, 0, 1]  # all edges: one conv3, one skip
    assert f[5:9].tolist() == [0, 0, 0, 1]  # live: the conv feeds node 1, which feeds nothing; the skip is live
    assert f[NB201_LUT_COLUMNS:].sum() == 2
    dead = nb201_features("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert dead[5:10].tolist() == [0, 0, 0, 0, 0]


# ---- predictors ----------------------------------------------------------------------------------------------------
def test_lookup_table_recovers_a_nonnegative_cost_table():
    rng = np.random.default_rng(0)
    X = np.hstack([np.ones((40, 1)), rng.integers(0, 6, (40, 4))])
    c = np.array([0.5, 2.0, 0.0, 1.0, 0.25])
    assert np.allclose(LookupTable().fit(X, X @ c).coef, c, atol=1e-6)


def test_predictor_from_20_measurements_ranks_a_linear_device(hw_table):
    rows = hw_table.measured("eyeriss")
    rng = np.random.default_rng(0)
    seen = rng.choice(rows, 20, replace=False)
    rest = rng.choice(np.setdiff1d(rows, seen), 2000, replace=False)
    X = np.stack([nb201_features(s) for s in hw_table.strings])
    y = hw_table.values("eyeriss")
    model = fit_predictor(X[seen], y[seen], lut_columns=NB201_LUT_COLUMNS)
    p = model.predict(X[rest])
    assert spearmanr(p, y[rest])[0] > 0.95 and within(p, y[rest]) > 0.9  # measured 0.997 / 1.00 (hw_predictors)


def test_transfer_from_other_devices_beats_chance_on_a_new_device(hw_table):
    rows = np.intersect1d(hw_table.measured("pixel3"), hw_table.measured("edgetpu"))
    rng = np.random.default_rng(1)
    seen = rng.choice(rows, 10, replace=False)
    rest = rng.choice(np.setdiff1d(rows, seen), 2000, replace=False)
    X = np.stack([nb201_features(hw_table.strings[i]) for i in range(len(hw_table))])
    S = np.stack([hw_table.values(d) for d in HW_DEVICES if d != "pixel3"], axis=1)
    y = hw_table.values("pixel3")
    model = fit_predictor(X[seen], y[seen], S[seen], lut_columns=NB201_LUT_COLUMNS, seed=1)
    assert spearmanr(model.predict(X[rest], S[rest]), y[rest])[0] > 0.85
    with pytest.raises(ValueError, match="at least 3"):
        fit_predictor(X[seen[:2]], y[seen[:2]])
    with pytest.raises(ValueError, match="positive"):
        fit_predictor(X[seen], -y[seen])


def test_network_features_count_macs_exactly():
    f = dict(zip(("constant", "dense", "pointwise", "depthwise", "conv_out", "convs"),
                 network_features(_tiny_net(), (3, 32, 32))[:6], strict=True))
    assert f["dense"] == pytest.approx(8 * 32 * 32 * 3 * 9 / 1e6) and f["convs"] == 1 and f["pointwise"] == 0


# ---- budgets -------------------------------------------------------------------------------------------------------
def test_hardware_budget_discards_networks_predicted_over_it():
    tiny_probe = Probe.from_source("gaussian", seed=0, batch_size=4)
    task = Task.from_probe(tiny_probe)
    archs = random_archs(task, 6, seed=0)
    feats = np.stack([network_features(task_network(task, a), task.input_shape) for a in archs])
    # a cost table with a known answer: 1 ms per million dense-conv MACs
    table = HardwareCost("raspi4", {"latency_ms": [0.0, 1.0] + [0.0] * (NETWORK_LUT_COLUMNS - 2)})
    latencies = feats[:, 1]
    limit = float(np.median(latencies))
    evaluator = ArchEvaluator(tiny_probe, Budget("fast", max_latency_ms=limit, device="raspi4"), None, task, table)
    for arch, latency in zip(archs, latencies, strict=True):
        e = evaluator(arch)
        assert e.latency_ms == pytest.approx(latency)
        assert e.status == ("over_budget" if latency > limit else "unscored")
    with pytest.raises(ValueError, match="HardwareCost"):
        ArchEvaluator(tiny_probe, Budget("fast", max_latency_ms=1.0, device="raspi4"), None, task)
    with pytest.raises(ValueError, match="device"):
        Budget("x", max_latency_ms=1.0, device="phone")


def test_hardware_cost_round_trips_as_json(tmp_path):
    n = NETWORK_LUT_COLUMNS
    cost = HardwareCost("fpga", {"latency_ms": [1.0, 2.0] + [0.0] * (n - 2), "energy_mj": [0.5] + [0.0] * (n - 1)},
                        {"source": "test"})
    cost.save(tmp_path / "fpga.json")
    again = HardwareCost.load(tmp_path / "fpga.json")
    x = np.array([1.0, 3.0] + [5.0] * (n - 2))
    assert again == cost and again.predict_features(x) == {"latency_ms": 7.0, "latency_ms_estimate": 7.0,
                                                          "energy_mj": 0.5, "energy_mj_estimate": 0.5}
    assert math.isclose(again.predict_features(2 * x)["latency_ms"], 14.0)
    with pytest.raises(ValueError, match="refit"):  # a table of another feature version
        HardwareCost("fpga", {"latency_ms": [1.0, 2.0]})
    guarded = HardwareCost("fpga", cost.coefficients, margin={"latency_ms": 0.25})
    assert HardwareCost.from_json(guarded.to_json()).predict_features(x)["latency_ms"] == pytest.approx(7.0 * 1.25)


def test_calibrated_margin_covers_the_cross_validated_under_prediction():
    from lightning_nas.hw.cost import calibrated_margin

    rng = np.random.default_rng(0)
    X = np.hstack([np.ones((200, 1)), rng.uniform(1, 10, (200, 2))])
    truth = X @ np.array([1.0, 2.0, 0.5])
    assert calibrated_margin(X, truth) < 1e-6  # an exact table needs no margin
    noisy = truth * rng.lognormal(0.0, 0.1, 200)
    m = calibrated_margin(X, noisy)
    p = LookupTable().fit(X, noisy).predict(X)
    assert 0.1 < m < 0.3 and np.mean(noisy <= p * (1 + m)) >= 0.9  # ≈ 95 % of the rows stay under the guarded value


def test_host_cost_uses_the_op_table_and_reuses_every_stored_timing(tmp_path, monkeypatch):
    from lightning_nas.hw.cost import hardware_cost_for

    task = Task("t", 3, (8, 8), 10)
    with Archive(tmp_path / "archive.sqlite") as archive:
        cost = hardware_cost_for("host", task, tmp_path, archive, progress=False)
        assert cost.features == "op_table" and len(cost.coefficients["latency_ms"]) == 3
        arch = random_archs(task, 1, seed=9)[0]
        predicted = cost(task_network(task, arch), task.input_shape)["latency_ms"]
        assert predicted > 0
        stored = len(archive.latencies())
        assert stored > 30 and {r["task"] for r in archive.latencies()} == {"t", "op"}

        def fail(*a, **k):
            raise AssertionError("measured again")

        monkeypatch.setattr("lightning_nas.hw.measure.measure_latency", fail)
        monkeypatch.setattr("lightning_nas.hw.op_table.measure_latency", fail)
        again = hardware_cost_for("host", task, tmp_path, archive, progress=False)  # loaded from <workdir>/hw/
        assert again.coefficients == cost.coefficients
        assert again(task_network(task, arch), task.input_shape)["latency_ms"] == pytest.approx(predicted)
        assert len(archive.latencies()) == stored
