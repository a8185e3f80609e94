"""NAS-Bench-360 data modules: tiny files in each task's published format, the losses and metrics by hand, errors,
and the refusal of pickles that would run code."""

import gzip
import io
import math
import os
import pickle
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import torch
from scipy.io import savemat

from datamodules.nb360 import NB360_TASKS, ArrayUnpickler, NB360DataModule
from datamodules.nb360.tasks import ECG_CLASSES
from lightning_nas.datasets.files import read_pickle
from lightning_nas.tasks.objectives import COSMIC_IGNORE, ContactDistanceMAE, FalseNegativeRate, FocalLoss
from tests.conftest import ECG_LENGTHS, WRITERS, darcy_fields, write_ecg, write_ninapro, write_psicov

SPLIT_SIZES = {"spherical": (8, 2, 4), "darcy_flow": (4, 1, 2), "psicov": (4, 1, 2), "cosmic": (4, 1, 2),
               "ninapro": (8, 3, 4), "satellite": (8, 2, 4), "deepsea": (6, 3, 4)}


def load(task, folder, **kwargs):
    datamodule = NB360DataModule(task, str(folder), batch_size=64, val_fraction=0.2, **kwargs)
    datamodule.setup("fit")
    return datamodule


def whole(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_registry():
    assert list(NB360_TASKS) == ["spherical", "darcy_flow", "psicov", "cosmic", "ninapro", "ecg", "satellite",
                                 "deepsea"]
    assert {name: task.dims for name, task in NB360_TASKS.items()} == {
        "spherical": 2, "darcy_flow": 2, "psicov": 2, "cosmic": 2, "ninapro": 2, "ecg": 1, "satellite": 1, "deepsea": 1}
    assert {name for name, task in NB360_TASKS.items() if task.dense} == {"darcy_flow", "psicov", "cosmic"}
    assert all(task.metric_direction in ("min", "max") for task in NB360_TASKS.values())
    assert NB360_TASKS["deepsea"].loss().pos_weight.tolist() == [4.0] * 36


@pytest.mark.parametrize("name", list(WRITERS))
def test_task_reads_published_format(name, tmp_path):
    WRITERS[name](tmp_path)
    task, datamodule = NB360_TASKS[name], load(name, tmp_path)
    sizes = {split: len(datamodule.splits[split]) for split in ("train", "val", "test")}
    if name in SPLIT_SIZES:
        assert tuple(sizes.values()) == SPLIT_SIZES[name]
    loss, metrics = task.loss(), task.metrics()
    for split, loader in (("train", datamodule.train_dataloader()), ("val", datamodule.val_dataloader()),
                          ("test", datamodule.test_dataloader())):
        x, y = whole(loader)
        assert len(x) == len(y) == sizes[split] and x.dtype == torch.float32
        assert x.shape[1:] == (task.input_shape if (name, split) != ("psicov", "test") else (57, 512, 512))
        if task.dense:
            output = torch.randn(len(x), task.num_outputs, *x.shape[2:], requires_grad=True)
            assert y.shape == output.shape and y.dtype == torch.float32
        elif name == "deepsea":
            output = torch.randn(len(x), 36, requires_grad=True)
            assert y.shape == output.shape and set(y.unique().tolist()) <= {0.0, 1.0}
        else:
            output = torch.randn(len(x), task.num_outputs, requires_grad=True)
            assert y.dtype == torch.int64 and y.shape == (len(x),) and 0 <= y.min() <= y.max() < task.num_outputs
        value = loss(output, y)
        value.backward()
        assert torch.isfinite(value) and output.grad is not None
        if split == "test":
            metrics.update(output.detach(), y)
    values = metrics.compute()
    assert set(values) == set(task.metric_names) and all(torch.isfinite(v) for v in values.values())


def test_darcy_flow_inputs_and_v73_files(tmp_path):
    train, test = darcy_fields(5), darcy_fields(2)
    (tmp_path / "v7").mkdir(), (tmp_path / "v73").mkdir()
    for name, fields in (("smooth1", train), ("smooth2", test)):
        savemat(tmp_path / "v7" / f"piececonst_r421_N1024_{name}.mat", fields)
        with h5py.File(tmp_path / "v73" / f"piececonst_r421_N1024_{name}.mat", "w", userblock_size=512) as f:
            for key, value in fields.items():
                f[key] = value.T  # MATLAB v7.3 stores column-major
    x, y = whole(load("darcy_flow", tmp_path / "v7").test_dataloader())
    x73, y73 = whole(load("darcy_flow", tmp_path / "v73").test_dataloader())
    assert torch.equal(x, x73) and torch.equal(y, y73)
    assert torch.allclose(y[:, 0], torch.tensor(test["sol"][:, ::5, ::5], dtype=torch.float32))
    grid = torch.linspace(0, 1, 85)
    assert torch.equal(x[0, 1, 7], grid) and torch.equal(x[0, 2, :, 7], grid)  # x varies along width, y along height
    coeff = torch.tensor(train["coeff"][:, ::5, ::5], dtype=torch.float32)
    train_x, _ = whole(load("darcy_flow", tmp_path / "v7").train_dataloader())
    assert train_x[:, 0].mean(0).abs().max() < 1e-4 and coeff.std(0).max() > 0  # normalised with training statistics


def test_psicov_features_and_targets(tmp_path):
    write_psicov(tmp_path)
    datamodule = load("psicov", tmp_path)
    x, y = datamodule.splits["test"][0]  # 1aapA, L = 60, whole map at offset 5
    with open(tmp_path / "psicov" / "features" / "1aapA.pkl", "rb") as f:
        features = pickle.load(f)
    inner = slice(5, 65)
    ss0, pssm21 = (torch.tensor(v, dtype=torch.float32) for v in (features["ss"][0], features["pssm"][:, 21]))
    assert torch.equal(x[0, inner, inner], ss0.expand(60, 60))  # residue j's value at [i, j] …
    assert torch.equal(x[1, inner, inner], ss0[:, None].expand(60, 60))  # … then residue i's
    assert torch.equal(x[6 + 2 * 21, inner, inner], pssm21.expand(60, 60))
    assert torch.equal(x[56, inner, inner], torch.tensor(features["potential"], dtype=torch.float32))
    assert x[:, :5].abs().sum() == 0 and (y[0, :5] == 100).all() and (y[0, 65:] == 100).all()
    distances = y[0, inner, inner]
    assert distances.min() >= 1 and torch.allclose(distances[3, 3], (distances[3, 2] + distances[3, 4]) / 2)
    assert distances.max() > 16  # test targets are not clipped
    for split in ("train", "val"):
        _, y = whole(getattr(datamodule, f"{split}_dataloader")())
        assert y.max() <= 16 and y.min() >= 1


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_array_unpickler_reads_numpy_content(protocol, tmp_path):
    content = {"a": np.arange(6.0).reshape(2, 3), "labels": np.array(["N", "A"]), "n": np.int64(3), "b": b"\x00\xff",
               "records": np.array([np.zeros(2), np.ones(3)], dtype=object), "ordered": OrderedDict(x=[1, (2, 3)])}
    (tmp_path / "c.pkl").write_bytes(pickle.dumps(content, protocol=protocol))
    loaded = read_pickle(tmp_path / "c.pkl")
    assert loaded.keys() == content.keys() and np.array_equal(loaded["a"], content["a"]) and loaded["n"] == 3
    assert loaded["b"] == content["b"] and list(loaded["labels"]) == ["N", "A"] and len(loaded["records"][1]) == 3
    assert loaded["ordered"] == content["ordered"]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name", ["spherical", "ecg", "satellite", "psicov"])
def test_malicious_pickle_is_refused_without_running(name, tmp_path):
    WRITERS[name](tmp_path)
    marker = tmp_path / "pwned"
    payload = {"data": [np.zeros(3)], "label": RunsCode(marker)}
    if name == "spherical":
        with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
            pickle.dump({"train": payload, "test": payload}, f)
    elif name == "ecg":
        (tmp_path / "challenge2017.pkl").write_bytes(pickle.dumps(payload))
    elif name == "satellite":
        np.save(tmp_path / "satellite_train.npy", payload, allow_pickle=True)
    else:
        item = np.empty(3, dtype=object)
        item[:] = [60, "A" * 60, RunsCode(marker)]
        np.save(tmp_path / "psicov" / "distance" / "1aapA-cb.npy", item, allow_pickle=True)
    refusal = r"refusing to unpickle (posix|nt)\.system: this file can run code"
    with pytest.raises(pickle.UnpicklingError, match=refusal):
        datamodule = load(name, tmp_path)
        datamodule.splits["test"][0]  # PSICOV reads its files per sample
    assert not marker.exists()


def test_array_unpickler_refuses_other_globals():
    with pytest.raises(pickle.UnpicklingError, match=r"inline: refusing to unpickle builtins\.eval"):
        ArrayUnpickler(io.BytesIO(b"cbuiltins\neval\n(S'print(1)'\ntR."), "inline").load()
    with pytest.raises(pickle.UnpicklingError, match="refusing _codecs.encode with encoding 'rot13'"):
        ArrayUnpickler(io.BytesIO(b"c_codecs\nencode\n(Vabc\nVrot13\ntR."), "inline").load()


def test_missing_files_name_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load("ninapro", tmp_path / "nowhere")
    message = str(error.value)
    for name in NB360_TASKS["ninapro"].files:
        assert name in message
    assert "NAS-Bench-360" in message and str(tmp_path / "nowhere") in message
    write_psicov(tmp_path)
    (tmp_path / "deepcov" / "distance" / "3ghiC-cb.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"3ghiC-cb\.npy is missing.*deepcov/distance/<id>-cb\.npy"):
        load("psicov", tmp_path)


def test_wrong_formats_name_the_file(tmp_path):
    np.save(tmp_path / "satellite_train.npy", {"data": np.zeros((4, 46)), "labels": np.ones(4)}, allow_pickle=True)
    np.save(tmp_path / "satellite_test.npy", {"data": np.zeros((4, 46)), "label": np.ones(4)}, allow_pickle=True)
    with pytest.raises(ValueError, match=r"satellite_train\.npy: expected the keys \['data', 'label'\]"):
        load("satellite", tmp_path)
    savemat(tmp_path / "piececonst_r421_N1024_smooth1.mat", {key: np.zeros((2, 85, 85)) for key in ("coeff", "sol")})
    savemat(tmp_path / "piececonst_r421_N1024_smooth2.mat", darcy_fields(1))
    with pytest.raises(ValueError, match=r"smooth1\.mat: coeff should have shape N×421×421, found \(2, 85, 85\)"):
        load("darcy_flow", tmp_path)
    write_ninapro(tmp_path)
    np.save(tmp_path / "label_val.npy", np.array([0, 18, 3]))
    with pytest.raises(ValueError, match=r"label_val\.npy: labels should lie in 0–17, found 0–18"):
        load("ninapro", tmp_path)
    with pytest.raises(ValueError, match="unknown NAS-Bench-360 task 'cifar10'; the tasks are spherical, darcy_flow"):
        NB360DataModule("cifar10", str(tmp_path))


def test_ecg_windows_follow_slide_and_cut(tmp_path):
    write_ecg(tmp_path)
    datamodule = load("ecg", tmp_path)
    strides = {"N": 500, "A": 83, "O": 250, "~": 25}  # resnet1d's slide_and_cut: stride 500, divided by 6, 2, 20
    expected = sum(len(range(0, n - 1000, strides[ECG_CLASSES[i % 4]])) for i, n in enumerate(ECG_LENGTHS))
    assert sum(len(datamodule.splits[split]) for split in ("train", "val", "test")) == expected
    x, _ = datamodule.splits["train"][0]
    assert x.shape == (1, 1000)


def test_losses_by_hand():
    assert torch.isclose(FocalLoss()(torch.zeros(1, 2), torch.tensor([0])), torch.tensor(0.25 * math.log(2)))
    logits, target = torch.randn(3, 5), torch.tensor([0, 4, 2])
    assert torch.isclose(FocalLoss(gamma=0)(logits, target), torch.nn.functional.cross_entropy(logits, target))
    logits, target = torch.tensor([[2.0, -1.0, 5.0]]), torch.tensor([[1.0, 0.0, COSMIC_IGNORE]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], target[:, :2])
    assert torch.isclose(NB360_TASKS["cosmic"].loss()(logits, target), expected)
    pred, target = torch.tensor([[3.0, 4.0], [1.0, 1.0]]), torch.tensor([[0.0, 5.0], [1.0, 1.0]])
    assert torch.isclose(NB360_TASKS["darcy_flow"].loss()(pred, target), torch.tensor(math.sqrt(10) / 10))


def test_metrics_by_hand():
    relative_l2 = NB360_TASKS["darcy_flow"].metric()
    relative_l2.update(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 5.0]]))
    relative_l2.update(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]]))
    assert torch.isclose(relative_l2.compute(), torch.tensor(math.sqrt(10) / 10))

    target = torch.tensor([[0.0, 5.0, 9.0], [5.0, 0.0, 7.0], [9.0, 7.0, 0.0]])
    pred = target + torch.tensor([[0.0, 1.0, -8.0], [95.0, 0.0, -3.0], [1.0, 1.0, 0.0]])
    far = torch.full((1, 1, 3, 3), 20.0)  # a map without close pairs does not count
    for separation, expected in ((0, 4 / 5), (1, 4 / 2), (24, None)):
        mae8 = ContactDistanceMAE(min_separation=separation)
        mae8.update(torch.stack([pred, far[0, 0]])[:, None], torch.stack([target, far[0, 0]])[:, None])
        assert mae8.maps == (0 if expected is None else 1)
        if expected is not None:
            assert torch.isclose(mae8.compute(), torch.tensor(expected))

    f1 = NB360_TASKS["ecg"].metric()
    f1.update(torch.eye(4)[[0, 1, 1, 1, 2, 2]], torch.tensor([0, 0, 1, 1, 2, 3]))
    assert torch.isclose(f1.compute(), torch.tensor((2 / 3 + 0.8 + 2 / 3 + 0) / 4))

    fnr = FalseNegativeRate()
    fnr.update(torch.tensor([[3.0, 2.0, -1.0, 4.0], [9.0, -2.0, 5.0, -3.0]]),
               torch.tensor([[1.0, 1.0, 1.0, 0.0], [COSMIC_IGNORE, 1.0, 0.0, 0.0]]))
    assert fnr.compute() == 0.5  # 2 of the 4 true cosmic-ray pixels missed; the ignored pixel does not count

    accuracy = NB360_TASKS["spherical"].metric()
    accuracy.update(torch.eye(100)[[1, 2, 3, 4]], torch.tensor([1, 2, 3, 5]))
    assert accuracy.compute() == 0.75 and NB360_TASKS["spherical"].metric_direction == "max"

    auroc = NB360_TASKS["deepsea"].metric()
    labels = torch.tensor([[1, 0] * 18, [0, 1] * 18, [1, 1] * 18, [0, 0] * 18])
    auroc.update(labels * 2.0 - 1, labels)
    assert auroc.compute() == 1.0


def test_cosmic_reports_one_minus_pixel_auroc_and_fnr_by_hand():
    """Cosmic's headline is 1 − AUROC over the non-ignored pixels (the paper's Table 4), FNR is logged beside it."""
    task = NB360_TASKS["cosmic"]
    assert task.metric_names == ("one_minus_auroc", "fnr") and task.metric_direction == "min"
    metrics = task.metrics("val/")
    batches = [(torch.tensor([[[2.0, 0.2], [-3.0, 4.0]]]), torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])),
               # every kept logit of this batch lies in [0, 1]: it must still be ranked on the logit scale
               (torch.tensor([[[9.0, 0.3, 0.1]]]), torch.tensor([[[COSMIC_IGNORE, 1.0, 0.0]]]))]
    for logits, target in batches:
        metrics.update(logits[:, None], target[:, None])
    values = metrics.compute()
    # positives 2, −3, 0.3 against negatives 0.2, 4, 0.1: 2 > 0.2, 0.1 and 0.3 > 0.2, 0.1 — 4 of 9 pairs ordered.
    # Counting the ignored pixel (logit 9) as a positive would give 7/12, as a negative 4/12.
    assert torch.isclose(values["val/one_minus_auroc"], torch.tensor(1 - 4 / 9))
    assert torch.isclose(values["val/fnr"], torch.tensor(1 / 3))  # −3 is the one missed cosmic-ray pixel
    from sklearn.metrics import roc_auc_score

    kept_logits, kept_targets = [2.0, 0.2, -3.0, 4.0, 0.3, 0.1], [1, 0, 1, 0, 1, 0]
    assert math.isclose(1 - roc_auc_score(kept_targets, kept_logits), 1 - 4 / 9)


def test_deepsea_auroc_ranks_every_batch_on_the_sigmoid_scale():
    """Two batches of logits, one of them inside [0, 1]: torchmetrics alone would skip the sigmoid on that batch and
    rank its samples against the other batch's probabilities."""
    from sklearn.metrics import roc_auc_score

    from lightning_nas.tasks.objectives import MultilabelAUROCOfFloatTargets

    logits = [torch.tensor([[0.2, 0.0], [0.9, 0.0], [0.5, 0.0], [0.1, 0.0]]),
              torch.tensor([[-3.0, 0.0], [2.0, 0.0], [0.3, 0.0], [-0.5, 0.0]])]
    targets = [torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),
               torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])]
    metric = MultilabelAUROCOfFloatTargets(num_labels=2, average=None)
    for p, t in zip(logits, targets, strict=True):
        metric.update(p, t)
    expected = roc_auc_score(torch.cat(targets)[:, 0].numpy(), torch.cat(logits)[:, 0].sigmoid().numpy())
    assert float(metric.compute()[0]) == pytest.approx(expected)
