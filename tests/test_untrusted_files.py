"""Data files are untrusted: every reader of a pickled format (the zc stage's CIFAR-10 probe, the CIFAR-10/100 data
modules, the NAS-Bench-360 pickles and ``.npy`` object arrays) refuses a file that would run code when unpickled,
with an error naming the file, and runs nothing. Well-formed files still load."""

import gzip
import os
import pickle
import re

import numpy as np
import pytest
import torch

from datamodules.cifar import CIFAR_RELEASES, CIFARDataModule
from datamodules.nb360.tasks import (
    _distance_map,
    _pair_features,
    _stamp_paths,
    read_ecg,
    read_satellite,
    read_spherical,
)
from lightning_nas.zc import Probe
from lightning_nas.zc.stage import ProbeConfig, ZCStageConfig, run_zc_stage


# ---- payloads: objects whose unpickling runs code that creates `marker` ----------------------------------------------
class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class NumpyRunstringPayload:
    """A numpy global that executes a string: an allow-list by module name (``numpy.*``) would let it through."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return runstring, (f"open({str(self.marker)!r}, 'w').close()", {})


PAYLOADS = {
    "os.system": (SystemPayload, r"(posix|nt)\.system"),
    "builtins.exec": (ExecPayload, r"(builtins|__builtin__)\.exec"),  # protocol 2 names it __builtin__
    "numpy-runstring": (NumpyRunstringPayload, r"numpy\.testing\._private\.utils\.runstring"),
}


# ---- well-formed files -------------------------------------------------------------------------------------------
def cifar_batch(rng, n, num_classes, python3_keys=False):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n).tolist()
    key = "labels" if num_classes == 10 else "fine_labels"
    content = {b"batch_label": b"batch", b"data": data, key.encode(): labels}
    if python3_keys:
        content = {k.decode(): v for k, v in content.items()}
    return content, data, labels


def write_cifar(root, num_classes=10, n=6, bad_file=None, payload=None, seed=0, python3_keys=False):
    """The unpacked python-version archive of CIFAR-``num_classes`` in ``root`` (``n`` images per file), with
    ``payload`` in place of the labels of ``bad_file``. Returns ``{file: (data, labels)}``."""
    rng = np.random.default_rng(seed)
    release = CIFAR_RELEASES[num_classes]
    folder = root / release.folder
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in release.files:
        content, data, labels = cifar_batch(rng, n, num_classes, python3_keys)
        if name == bad_file:
            content[release.label_key if python3_keys else release.label_key.encode()] = payload
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
        written[name] = data, labels
    return written


# ---- the data paths: (write the malicious file, load it through the real reader, the file named in the error) -----
def zc_probe(tmp_path, payload):
    write_cifar(tmp_path, bad_file="data_batch_1", payload=payload)
    return lambda: Probe.from_source("cifar10", seed=0, batch_size=4, data_dir=tmp_path), "data_batch_1"


def zc_stage(tmp_path, payload):
    write_cifar(tmp_path / "data", bad_file="data_batch_4", payload=payload, python3_keys=True)
    config = ZCStageConfig(workdir=str(tmp_path / "run"), op_set="nb201", unlabelled=2, labelled=0, threads=1,
                           probe=ProbeConfig(source="cifar10", batch_size=4, data_dir=str(tmp_path / "data")))
    return lambda: run_zc_stage(config), "data_batch_4"


def cifar10_datamodule(tmp_path, payload):
    write_cifar(tmp_path, bad_file="test_batch", payload=payload)
    return lambda: CIFARDataModule(str(tmp_path), num_classes=10, val_size=2).setup(), "test_batch"


def cifar100_datamodule(tmp_path, payload):
    write_cifar(tmp_path, num_classes=100, bad_file="train", payload=payload)
    return lambda: CIFARDataModule(str(tmp_path), num_classes=100, val_size=2).setup(), "train"


def nb360_spherical_gz(tmp_path, payload):
    part = {"images": np.zeros((2, 3, 60, 60), np.float32), "labels": payload}
    with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
        pickle.dump({"train": part, "test": part}, f)
    return lambda: read_spherical(tmp_path, 0.5, 0), "s2_cifar100.gz"


def nb360_ecg_pkl(tmp_path, payload):
    (tmp_path / "challenge2017.pkl").write_bytes(pickle.dumps({"data": [np.zeros(2000)], "label": payload}))
    return lambda: read_ecg(tmp_path, 0.1, 0), "challenge2017.pkl"


def nb360_psicov_features_pkl(tmp_path, payload):
    features = {"seq": "AAA", "ss": np.zeros((3, 3)), "pssm": payload, "sa": np.zeros(3), "entropy": np.zeros(3),
                "ccmpred": np.zeros((3, 3)), "freecon": np.zeros((3, 3)), "potential": np.zeros((3, 3))}
    (tmp_path / "1abcA.pkl").write_bytes(pickle.dumps(features))
    return lambda: _pair_features(tmp_path / "1abcA.pkl"), "1abcA.pkl"


def nb360_psicov_distance_npy(tmp_path, payload):
    item = np.empty(3, dtype=object)
    item[:] = [3, "AAA", payload]
    np.save(tmp_path / "1abcA-cb.npy", item, allow_pickle=True)
    return lambda: _distance_map(tmp_path / "1abcA-cb.npy", 3), "1abcA-cb.npy"


def nb360_satellite_npy_dict(tmp_path, payload):
    np.save(tmp_path / "satellite_train.npy", {"data": np.zeros((2, 46)), "label": payload}, allow_pickle=True)
    return lambda: read_satellite(tmp_path, 0.5, 0), "satellite_train.npy"


def nb360_cosmic_list_npy(tmp_path, payload):
    np.save(tmp_path / "train_dirs.npy", np.array(["a.npy", payload], dtype=object), allow_pickle=True)
    return lambda: _stamp_paths(tmp_path, "train_dirs.npy"), "train_dirs.npy"


DATA_PATHS = [zc_probe, zc_stage, cifar10_datamodule, cifar100_datamodule, nb360_spherical_gz, nb360_ecg_pkl,
              nb360_psicov_features_pkl, nb360_psicov_distance_npy, nb360_satellite_npy_dict, nb360_cosmic_list_npy]


@pytest.mark.parametrize("payload", PAYLOADS, ids=str)
@pytest.mark.parametrize("plant", DATA_PATHS, ids=lambda f: f.__name__)
def test_code_in_a_data_file_is_refused_and_never_runs(plant, payload, tmp_path):
    marker = tmp_path / "pwned"
    cls, refused_global = PAYLOADS[payload]
    load, file_name = plant(tmp_path, cls(marker))
    refusal = rf"{re.escape(file_name)}: refusing to unpickle {refused_global}: this file can run code"
    with pytest.raises(Exception) as error:
        load()
    assert not marker.exists(), "unpickling the data file ran its code"
    assert error.type is pickle.UnpicklingError and re.search(refusal, str(error.value)), error.value


@pytest.mark.parametrize("python3_keys", [False, True], ids=["bytes-keys", "str-keys"])
def test_well_formed_cifar10_batches_give_the_probe_batch(python3_keys, tmp_path):
    """Python-format batches written with numpy and pickle (as the official archive, protocol 2) load into the probe:
    the seeded draw picks the same images and labels as before, normalised, cropped and flipped."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    datas, labels = [], []
    for name in CIFAR_RELEASES[10].train_files:
        content, data, batch_labels = cifar_batch(rng, 5, 10, python3_keys)
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
        datas.append(data)
        labels += batch_labels
    probe = Probe.from_source("cifar10", seed=3, batch_size=8, data_dir=tmp_path)
    assert probe.source == "cifar10" and probe.x.shape == (8, 3, 32, 32) and probe.x.dtype == torch.float32
    index = torch.randperm(25, generator=torch.Generator().manual_seed(3))[:8]
    assert probe.y.tolist() == [labels[i] for i in index]
    mean = torch.tensor(CIFAR_RELEASES[10].mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_RELEASES[10].std).view(1, 3, 1, 1)
    source = torch.from_numpy(np.concatenate(datas)).view(-1, 3, 32, 32)[index].float() / 255
    padded = torch.nn.functional.pad((source - mean) / std, (4, 4, 4, 4))
    for image, original in zip(probe.x, padded):  # a crop of the zero-padded normalised image, maybe mirrored
        crops = [original[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.allclose(image, c, atol=1e-5) or torch.allclose(image, c.flip(-1), atol=1e-5) for c in crops)
    assert Probe.from_source("cifar10", seed=3, batch_size=8, data_dir=tmp_path).id == probe.id


def test_the_probe_names_missing_training_batches(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_3"):
        Probe.from_source("cifar10", data_dir=tmp_path)


def test_a_teacher_pt2_file_does_not_run_code(tmp_path):
    """A ``torch.export`` teacher (``model.init_args.teacher``) is an artifact from elsewhere too."""
    import io
    import warnings
    import zipfile

    from lightning_nas.models.classifier import load_teacher

    marker = tmp_path / "pwned"
    good, bad = tmp_path / "good.pt2", tmp_path / "teacher.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),)), good)
    payload = io.BytesIO()
    torch.save({"x": SystemPayload(marker)}, payload)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        replaced = 0
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename.endswith(("sample_inputs/model.pt", "serialized_example_inputs.pt")):
                content, replaced = payload.getvalue(), replaced + 1
            target.writestr(info, content)
    assert replaced == 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_teacher(bad)
    except Exception:
        pass
    assert not marker.exists(), "loading the teacher file ran its code"


def test_a_hostile_gpt_neo_directory_runs_no_code_and_gets_one_paragraph(tmp_path):
    """The SG's ``pretrained`` directory comes from elsewhere: a pickled ``pytorch_model.bin`` is never opened (its
    payload does not run), a config that is not JSON or not GPT-Neo, and truncated safetensors, each get one
    paragraph naming the file; a well-formed directory still loads."""
    import json

    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from lightning_nas.models.sg import load_pretrained

    config = GPTNeoConfig(vocab_size=50, max_position_embeddings=64, hidden_size=16, num_layers=1, num_heads=2,
                          attention_types=[[["global"], 1]])
    good = tmp_path / "good"
    GPTNeoForCausalLM(config).save_pretrained(good)
    assert load_pretrained(str(good)).config.hidden_size == 16  # the well-formed control
    marker = tmp_path / "ran"

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((good / "config.json").read_text())
    with open(pickled / "pytorch_model.bin", "wb") as f:
        pickle.dump(SystemPayload(marker), f)
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors \(only pytorch_model.bin: a pickled file"):
        load_pretrained(str(pickled))

    not_json = tmp_path / "not_json"
    not_json.mkdir()
    (not_json / "config.json").write_text("{'model_type': gpt_neo")
    with pytest.raises(ValueError, match="config.json is not a JSON object"):
        load_pretrained(str(not_json))

    remote = tmp_path / "remote"  # a config that asks for code of its own: refused before anything loads
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoModel": "evil.Model"}}))
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ValueError, match="holds a 'evil' model; a GPT-Neo is needed"):
        load_pretrained(str(remote))

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((good / "config.json").read_text())
    data = (good / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors could not be loaded .*download it again"):
        load_pretrained(str(truncated))
    assert not marker.exists()
