"""CIFAR-10/100 and ImageNet data modules on tiny files in the official layouts: shapes, splits, normalisation,
augmentation, errors, and the refusal of batch files that would run code. Nothing is downloaded."""

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cifar import CIFAR_RELEASES, CIFARDataModule
from datamodules.imagenet import ImageNetDataModule

N_BATCH, N_TEST = 24, 30  # images per training batch file (CIFAR-100: ×5 in its one file) and in the test file


class Py2StylePickler(pickle._Pickler):
    """Writes ``bytes`` as protocol-2 ``BINSTRING``s, as Python 2's cPickle wrote ``str``: the official batches' keys
    and the raw pixel buffers inside their numpy arrays unpickle as ``str`` under ``encoding="latin1"``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def cifar_pixels(rng, n, num_classes):
    """N×3072 uint8 images whose channels have the data set's published mean and std (so normalising centres them)."""
    release = CIFAR_RELEASES[num_classes]
    pixels = rng.normal(np.array(release.mean)[None, :, None], np.array(release.std)[None, :, None], (n, 3, 1024))
    return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8).reshape(n, 3072)


def write_cifar(root, num_classes=10, seed=0, python2=False):
    """The unpacked python-version archive in ``root``; returns ``{file name: (data, labels)}``."""
    rng = np.random.default_rng(seed)
    release = CIFAR_RELEASES[num_classes]
    folder = root / release.folder
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in release.files:
        n = N_TEST if name in release.test_files else N_BATCH * 5 // len(release.train_files)
        data, labels = cifar_pixels(rng, n, num_classes), rng.integers(0, num_classes, n).tolist()
        content = {b"batch_label": name.encode(), b"data": data, b"filenames": [b"img_%d.png" % i for i in range(n)]}
        if num_classes == 10:
            content[b"labels"] = labels
        else:
            content.update({b"fine_labels": labels, b"coarse_labels": [label // 5 for label in labels]})
        with open(folder / name, "wb") as f:
            (Py2StylePickler(f, protocol=2) if python2 else pickle.Pickler(f, protocol=2)).dump(content)
        written[name] = data, labels
    return written


def cifar(root, **kwargs):
    kwargs = {"data_dir": str(root), "val_size": 20, **kwargs}
    datamodule = CIFARDataModule(**kwargs)
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("num_classes, python2", [(10, False), (100, False), (10, True)])
def test_cifar_loads_official_layout(num_classes, python2, tmp_path):
    written = write_cifar(tmp_path, num_classes, python2=python2)
    release = CIFAR_RELEASES[num_classes]
    datamodule = cifar(tmp_path, num_classes=num_classes, augment="none")
    assert datamodule.num_classes == num_classes and datamodule.in_channels == 3
    sizes = {split: len(dataset) for split, dataset in datamodule.splits.items()}
    assert sizes == {"train": 5 * N_BATCH - 20, "val": 20, "test": N_TEST}
    # every training image lands in exactly one of train/val, with its label; pixels are read unchanged
    train, val, test = (datamodule.splits[s] for s in ("train", "val", "test"))
    ids = torch.cat([train.indices, val.indices]).sort().values
    assert torch.equal(ids, torch.arange(5 * N_BATCH))
    data = np.concatenate([written[name][0] for name in release.train_files])
    labels = sum((written[name][1] for name in release.train_files), [])
    assert torch.equal(train.images.reshape(-1, 3072), torch.from_numpy(data))
    assert train.labels.tolist() == labels and test.labels.tolist() == written[release.test_files[0]][1]
    for batch in (next(iter(datamodule.train_dataloader())), next(iter(datamodule.test_dataloader()))):
        x, y = batch
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= y.min() and y.max() < num_classes
    x = torch.stack([val[i][0] for i in range(len(val))])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.1 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.15
    mean, std = torch.tensor(release.mean)[:, None, None], torch.tensor(release.std)[:, None, None]
    assert torch.allclose(val[0][0], (val.images[val.indices[0]] / 255 - mean) / std, atol=1e-5)


def test_cifar_augmentations_change_training_images_only(tmp_path):
    write_cifar(tmp_path)
    plain = cifar(tmp_path, augment="none")
    torch.manual_seed(0)
    for augment in ("standard", "zennas"):
        datamodule = cifar(tmp_path, augment=augment)
        train, val = datamodule.splits["train"], datamodule.splits["val"]
        x, y = next(iter(datamodule.train_dataloader()))
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
        changed = [not torch.equal(train[i][0], plain.splits["train"][i][0]) for i in range(16)]
        assert sum(changed) >= 8, augment
        assert all(torch.equal(val[i][0], plain.splits["val"][i][0]) for i in range(len(val)))  # eval: normalise only
        assert all(train[i][1] == plain.splits["train"][i][1] for i in range(16))


def test_cifar_split_is_seeded_and_val_size_zero_validates_on_test(tmp_path):
    write_cifar(tmp_path)
    first, second, other = cifar(tmp_path, seed=3), cifar(tmp_path, seed=3), cifar(tmp_path, seed=4)
    assert torch.equal(first.splits["val"].indices, second.splits["val"].indices)
    assert torch.equal(first.splits["train"].indices, second.splits["train"].indices)
    assert not torch.equal(first.splits["val"].indices, other.splits["val"].indices)
    no_holdout = cifar(tmp_path, val_size=0)
    assert len(no_holdout.splits["train"]) == 5 * N_BATCH and no_holdout.splits["val"] is no_holdout.splits["test"]
    with pytest.raises(ValueError, match=r"val_size: 120; CIFAR-10 has 120 training images"):
        cifar(tmp_path, val_size=120)


def test_cifar_image_size_resizes(tmp_path):
    write_cifar(tmp_path, 100)
    datamodule = cifar(tmp_path, num_classes=100, image_size=48, augment="zennas")
    assert datamodule.splits["train"][0][0].shape == datamodule.splits["test"][0][0].shape == (3, 48, 48)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_missing_files_say_what_to_put_where(num_classes, tmp_path):
    release = CIFAR_RELEASES[num_classes]
    with pytest.raises(FileNotFoundError) as error:
        cifar(tmp_path / "data", num_classes=num_classes)
    message = str(error.value)
    assert f"expected the folder {release.folder}/ with {', '.join(release.files)}" in message
    assert str((tmp_path / "data").resolve()) in message
    assert "download: true" in message and "--data.init_args.download true" in message and release.url in message
    write_cifar(tmp_path, num_classes)
    (tmp_path / release.folder / release.test_files[0]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing: {release.folder}/{release.test_files[0]}\)"):
        cifar(tmp_path, num_classes=num_classes)


def test_cifar_download_fetches_the_official_archive(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, md5):
        calls.append((url, md5))
        write_cifar(tmp_path / "data")
        assert download_root == str(tmp_path / "data")

    monkeypatch.setattr("datamodules.cifar.download_and_extract_archive", fake_download)
    datamodule = cifar(tmp_path / "data", download=True)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]
    assert len(datamodule.splits["test"]) == N_TEST
    cifar(tmp_path / "data", download=True)  # files present: nothing is fetched
    assert len(calls) == 1
    assert CIFAR_RELEASES[100].md5 == "eb9058c3a382ffc7106e4002c42a8d85"


def test_cifar_wrong_content_names_the_file(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    for content, error in [({b"data": np.zeros((4, 3072), np.uint8)}, r"expected the keys \['data', 'labels'\]"),
                           ({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, r"should have shape N×3072"),
                           ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]},
                            r"labels should have shape"),
                           ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]},
                            r"integers in \[0, 10\)"),
                           ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, r"uint8 pixels"),
                           ([1, 2, 3], r"expected the keys")]:
        path.write_bytes(pickle.dumps(content, protocol=2))
        with pytest.raises(ValueError, match=rf"{path}: .*{error}"):
            cifar(tmp_path)
    for raw in (b"not a pickle", pickle.dumps({b"data": 1}, protocol=2)[:-5]):
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=rf"{path}: not a CIFAR python-version batch"):
            cifar(tmp_path)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_malicious_batch_is_refused_without_running(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": RunsCode(marker)}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1: refusing to unpickle (posix|nt)\.system"):
        cifar(tmp_path)
    assert not marker.exists()


def write_image_folder(root, classes=("n01440764", "n01443537"), per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for wnid in classes:
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                size = tuple(int(s) for s in rng.integers(40, 80, 2))
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.png")


@pytest.mark.parametrize("augment", ["standard", "zennas"])
def test_imagenet_loads_class_folders(augment, tmp_path):
    write_image_folder(tmp_path)
    datamodule = ImageNetDataModule(str(tmp_path), batch_size=4, num_workers=0, image_size=32, augment=augment)
    assert datamodule.num_classes == 2 and datamodule.in_channels == 3  # counted from train/ before setup
    datamodule.setup("fit")
    assert datamodule.num_classes == 2 and datamodule.classes == ["n01440764", "n01443537"]
    assert {s: len(d) for s, d in datamodule.splits.items()} == {"train": 6, "val": 6, "test": 6}
    assert datamodule.splits["val"] is datamodule.splits["test"]
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert [datamodule.splits["test"][i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]
    held_out = ImageNetDataModule(str(tmp_path), num_workers=0, image_size=32, augment=augment, val_size=2, seed=1)
    held_out.setup("fit")
    assert {s: len(d) for s, d in held_out.splits.items()} == {"train": 4, "val": 2, "test": 6}
    assert sorted(torch.cat([held_out.splits["train"].indices, held_out.splits["val"].indices]).tolist()) == list(
        range(6))
    assert held_out.splits["val"][0][0].shape == (3, 32, 32)


def test_imagenet_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train/, val/ missing in data_dir .*<data_dir>/train/<wnid>/\*\.JPEG"
                                                r".*valprep\.sh"):
        ImageNetDataModule(str(tmp_path), num_workers=0).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"train/, val/ missing"):
        ImageNetDataModule(str(tmp_path), num_workers=0).num_classes
    write_image_folder(tmp_path)
    (tmp_path / "val" / "n01443537").rename(tmp_path / "val" / "n09999999")
    with pytest.raises(ValueError, match=r"only in train/: \['n01443537'\], only in val/: \['n09999999'\]"):
        ImageNetDataModule(str(tmp_path), num_workers=0).setup("fit")
