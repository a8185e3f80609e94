from pathlib import Path

import pytest

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

    from datamodules import LatentDataModule
    from lightning_nas.models import CCNFModule

    root = tmp_path_factory.mktemp("tiny_ccnf")
    torch.manual_seed(0)
    ccnf = CCNFModule(latent_dim=8, hidden=16, layers=1, atol=1e-3, rtol=1e-3, gen_samples=0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        limit_val_batches=0)
    trainer.fit(ccnf, datamodule=LatentDataModule(str(tiny_archive), str(tiny_gvae), batch_size=64))
    trainer.save_checkpoint(root / "ccnf.ckpt")
    return root / "ccnf.ckpt"
