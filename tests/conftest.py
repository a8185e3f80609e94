import gzip
import os
import pickle
import random
from pathlib import Path

# `make test` runs pytest-xdist workers (`-n 2`): each gets its share of the cores, set before torch is imported so
# that its OpenMP pool and the subprocesses that tests start (`python -m lightning_nas …`) get the same share.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    from lightning_nas.distributed import reserve_local_port, threads_per_process

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(0, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

    reserve_local_port()  # the workers' in-process DDP tests never race for one port

import numpy as np
import pytest
from scipy.io import savemat

from datamodules.nb360.tasks import ECG_CLASSES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def nb201_records():
    """The shipped NAS-Bench-201 table (data/nb201): a clone that lacks it fails here, it never skips."""
    from lightning_nas.space.nb201 import NB201_DATA, read_nb201_csv

    return read_nb201_csv(NB201_DATA / "nats_bench_tss.csv")


@pytest.fixture(scope="session")
def nb201_table():
    from lightning_nas.space.nb201 import NB201Table

    return NB201Table()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """600 cells, 40 of them labelled with synthetic ZC vectors (the G-VAE only needs numbers to regress), on a
    2-image Gaussian probe stored under its content id."""

    from lightning_nas.archive import Archive
    from lightning_nas.space import sample_cells
    from lightning_nas.zc import Probe

    path = tmp_path_factory.mktemp("gvae") / "archive.sqlite"
    cells = list(sample_cells(600, seed=0, op_set="graphnet"))
    with Archive(path, op_set="graphnet") as archive:
        archive.add_cells(cells, start_index=0)
        probe = Probe.from_source("gaussian", seed=0, batch_size=2)
        archive.add_probe(probe.id, probe.source, probe.seed, probe.x, probe.y)
        for c in cells[:40]:
            archive.add_zc(c.canonical_hash(), probe.id, {"naswot": 800.0 + len(c.edges), "snip_ssnr": 1e5 * len(c.ops),
                                                      "params": 1e5 * (1 + len(c.edges)), "flops": 1e7 * len(c.edges)})
        archive.set_normaliser(probe.id, {"names": ["naswot", "snip_ssnr", "params", "flops"], "log": [0, 0, 1, 1],
                                     "mean": [810.0, 6e5, 14.0, 18.0], "std": [5.0, 1e5, 0.5, 0.5]})
    return path


@pytest.fixture(scope="session")
def tiny_gvae(tiny_archive, tmp_path_factory):
    """A small G-VAE trained for a few epochs on ``tiny_archive``: its checkpoint path."""
    import lightning as L
    import torch

    from datamodules import GraphZCDataModule
    from lightning_nas.models import GVAEModule

    root = tmp_path_factory.mktemp("tiny_gvae")
    torch.manual_seed(0)
    model = GVAEModule(hidden=64, latent=8, layers=2, lr=3e-3, prior_samples=20)
    trainer = L.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        check_val_every_n_epoch=8)
    trainer.fit(model, datamodule=GraphZCDataModule(str(tiny_archive), batch_size=32, labelled_batch_size=8))
    trainer.save_checkpoint(root / "gvae.ckpt")
    return root / "gvae.ckpt"


@pytest.fixture(scope="session")
def tiny_ccnf(tiny_archive, tiny_gvae, tmp_path_factory):
    """A small CCNF trained for one epoch on ``tiny_gvae``'s latents: its checkpoint path."""
    import lightning as L
    import torch

    from datamodules import UnlabelledCellDataModule
    from lightning_nas.models import CCNFModule

    root = tmp_path_factory.mktemp("tiny_ccnf")
    torch.manual_seed(0)
    ccnf = CCNFModule(str(tiny_gvae), latent_dim=8, hidden=16, layers=1, atol=1e-3, rtol=1e-3, gen_samples=0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        limit_val_batches=0)
    trainer.fit(ccnf, datamodule=UnlabelledCellDataModule(str(tiny_archive), batch_size=64))
    trainer.save_checkpoint(root / "ccnf.ckpt")
    return root / "ccnf.ckpt"


# ---- helpers shared by test modules ----------------------------------------------------------------------------------
def gen_cell(cell, cluster: int, rng: random.Random):
    """Stands in for the CCNF in searches: a seeded random cell (the search logic does not care where cells come
    from)."""
    from lightning_nas.space.cell import Cell

    return Cell.random(rng=random.Random(rng.randrange(2**31) + 1000 * cluster))


# NAS-Bench-360 files in each task's published format, tiny (tests/test_nb360.py, tests/test_train.py)
RNG = np.random.default_rng(0)


def write_spherical(folder):
    content = {split: {"images": RNG.normal(size=(n, 3, 60, 60)).astype(np.float32),
                       "labels": RNG.integers(0, 100, n)} for split, n in (("train", 10), ("test", 4))}
    with gzip.open(folder / "s2_cifar100.gz", "wb") as f:
        pickle.dump(content, f, protocol=2)  # Python-2-era protocol, as the S2CNN generator wrote


def darcy_fields(n):
    return {"coeff": np.where(RNG.random((n, 421, 421)) < 0.5, 3.0, 12.0), "sol": RNG.random((n, 421, 421)) / 100}


def write_darcy_flow(folder):
    savemat(folder / "piececonst_r421_N1024_smooth1.mat", darcy_fields(5))
    savemat(folder / "piececonst_r421_N1024_smooth2.mat", darcy_fields(2))


PROTEIN_LENGTHS = {"deepcov": {"1abcA": 30, "2defB": 130, "3ghiC": 40, "4jklD": 25, "5mnoE": 50},
                   "psicov": {"1aapA": 60, "1bebA": 35}}


def write_psicov(folder):
    for name, lengths in PROTEIN_LENGTHS.items():
        (folder / name / "features").mkdir(parents=True)
        (folder / name / "distance").mkdir()
        (folder / f"{name}.lst").write_text("".join(f"{protein} {n}\n" for protein, n in lengths.items()))
        for protein, n in lengths.items():
            features = {"seq": "A" * n, "ss": RNG.random((3, n)), "pssm": RNG.random((n, 22)),
                        "sa": RNG.random(n), "entropy": RNG.random(n),
                        **{key: RNG.random((n, n)) for key in ("ccmpred", "freecon", "potential")}}
            with open(folder / name / "features" / f"{protein}.pkl", "wb") as f:
                pickle.dump(features, f)
            coords = RNG.normal(scale=6.0, size=(n, 3))
            item = np.empty(3, dtype=object)  # np.save((L, seq, cb_map)) of the PDNet era: an object array
            item[:] = [n, "A" * n, np.linalg.norm(coords[:, None] - coords[None], axis=-1)]
            np.save(folder / name / "distance" / f"{protein}-cb.npy", item, allow_pickle=True)


def write_cosmic(folder):
    (folder / "stamps").mkdir()
    names = []
    for i in range(7):
        stamp = np.stack([RNG.normal(size=(128, 128)), RNG.random((128, 128)) < 0.05, np.zeros((128, 128))])
        stamp[2, :4] = 1  # an ignored band
        names.append(f"stamps/{i}.npy")
        np.save(folder / names[-1], stamp.astype(np.float32))
    np.save(folder / "train_dirs.npy", np.array(names[:5]))  # a string array
    np.save(folder / "test_dirs.npy", np.array(names[5:], dtype=object), allow_pickle=True)  # a pickled one


def write_ninapro(folder):
    for split, n in (("train", 8), ("val", 3), ("test", 4)):
        np.save(folder / f"ninapro_{split}.npy", RNG.normal(size=(n, 16, 52)))
        np.save(folder / f"label_{split}.npy", RNG.integers(0, 18, n))


ECG_LENGTHS = [1600 + 37 * i for i in range(20)]


def write_ecg(folder):
    content = {"data": [RNG.normal(size=n) * 50 + 10 for n in ECG_LENGTHS],
               "label": np.array([ECG_CLASSES[i % 4] for i in range(len(ECG_LENGTHS))])}
    with open(folder / "challenge2017.pkl", "wb") as f:
        pickle.dump(content, f)


def write_satellite(folder):
    for split, n in (("train", 10), ("test", 4)):
        np.save(folder / f"satellite_{split}.npy", {"data": RNG.normal(size=(n, 46)) * 300 + 1000,
                                                    "label": RNG.integers(1, 25, n)}, allow_pickle=True)


def write_deepsea(folder):
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 4)):
        arrays[f"x_{split}"] = np.eye(4, dtype=np.uint8)[RNG.integers(0, 4, (n, 1000))]
        y = RNG.integers(0, 2, (n, 36)).astype(np.uint8)
        y[0], y[1] = 1, 0  # every label has both classes
        arrays[f"y_{split}"] = y
    np.savez(folder / "deepsea_filtered.npz", **arrays)


WRITERS = {"spherical": write_spherical, "darcy_flow": write_darcy_flow, "psicov": write_psicov,
           "cosmic": write_cosmic, "ninapro": write_ninapro, "ecg": write_ecg, "satellite": write_satellite,
           "deepsea": write_deepsea}
