"""G-VAE: decoding with repair, the loss terms, training on a tiny archive, checkpoint contents."""

import json
import math
import os
import subprocess
import sys

import lightning as L
import pytest
import torch

from callbacks import MetricsFile
from datamodules import GraphZCDataModule
from lightning_nas.archive import Archive
from lightning_nas.models import GVAEModule
from lightning_nas.models.gvae import edge_matrix
from lightning_nas.space import Cell, sample_cells
from lightning_nas.space.decoding import (
    ABSENT,
    NUM_KERNELS,
    NUM_TYPE_CLASSES,
    batch_targets,
    decode_cells,
    upper_triangle,
)
from tests.conftest import REPO


def perfect_logits(cells, structured=False):
    """Decoder outputs that put all mass on the true cell."""
    targets = batch_targets(cells)
    edges = edge_matrix(upper_triangle(targets.adjacency) * 20 - 10)
    types = torch.nn.functional.one_hot(targets.op_type, NUM_TYPE_CLASSES).float() * 10
    kernels = torch.nn.functional.one_hot(targets.kernel.clamp(min=0), NUM_KERNELS).float() * 10
    if not structured:
        return edges, types, kernels
    parents = torch.nn.functional.one_hot(targets.first_parent.clamp(min=0), 7).float() * 10
    return edges, types, kernels, parents


def random_logits(n: int, seed: int = 0):
    """Random decoder outputs for ``n`` cells: edges B×8×8, types B×6×11, kernels B×6×3, first parents B×6×7."""
    gen = torch.Generator().manual_seed(seed)
    return (edge_matrix(torch.randn(n, 28, generator=gen) * 3), torch.randn(n, 6, NUM_TYPE_CLASSES, generator=gen),
            torch.randn(n, 6, NUM_KERNELS, generator=gen), torch.randn(n, 6, 7, generator=gen))


@pytest.mark.parametrize("structured", [False, True], ids=["independent", "structured"])
def test_decoding_perfect_logits_gives_the_cell_back_without_repair(structured):
    cells = [Cell.random(seed=s, num_op_nodes=1 + s % 6) for s in range(300)]
    cells += list(sample_cells(100, seed=1, op_set="nb201"))
    cells += [Cell((), ((0, 1),)), Cell(("skip",), ((0, 1), (0, 2), (1, 2)))]
    decoded, repaired = decode_cells(*perfect_logits(cells, structured))
    assert decoded == cells and not any(repaired)


def test_random_logits_always_decode_to_valid_cells_and_repairs_are_counted():
    n = 2000
    edges, types, kernels, _ = random_logits(n)
    cells, repaired = decode_cells(edges, types, kernels)
    assert len(cells) == n and all(isinstance(c, Cell) for c in cells)  # Cell() validates: all valid
    assert 0 < sum(repaired) < n


def test_repair_rules():
    """One op node (conv) with no likely input and no likely consumer: it gets its likeliest parent and feeds the
    output; the input → output edge the logits asked for stays."""
    edges = torch.full((1, 28), -5.0)
    full = edge_matrix(edges)
    full[0, 0, 7] = 5.0  # input → output
    types = torch.full((1, 6, NUM_TYPE_CLASSES), -5.0)
    types[0, :, ABSENT] = 5.0
    types[0, 2, 1] = 9.0  # slot 2 = conv (type index 1), the only op node
    kernels = torch.zeros(1, 6, NUM_KERNELS)
    kernels[0, 2, 2] = 1.0  # kernel 5
    (cell,), (repaired,) = decode_cells(full, types, kernels)
    assert repaired and cell == Cell(("conv_k5",), ((0, 1), (0, 2), (1, 2)))


def test_triplet_term_by_hand():
    model = GVAEModule(hidden=8, latent=2, layers=1, triplet_margin=0.5)
    zc = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [2.0, 0.0]])
    # pairwise ZC L1 distances; median of the off-diagonal = (4.9+5.0)/2 = 4.95
    # anchor 0: pos 1 (0.1), neg 3 (5.2); anchor 1: pos 0, neg 3 (5.1); anchor 2: pos 3, neg 0 (5.0);
    # anchor 3: pos 2, neg 0 (5.2). d = mean |Δμ|.
    d = lambda a, b: (mu[a] - mu[b]).abs().mean().item()  # noqa: E731
    expected = [max(d(0, 1) ** 2 - d(0, 3) ** 2 + 0.5, 0), max(d(1, 0) ** 2 - d(1, 3) ** 2 + 0.5, 0),
                max(d(2, 3) ** 2 - d(2, 0) ** 2 + 0.5, 0), max(d(3, 2) ** 2 - d(3, 0) ** 2 + 0.5, 0)]
    assert model.triplet(mu, zc).item() == pytest.approx(sum(expected) / 4)


def test_batch_all_triplet_term_by_hand():
    """Every (anchor, positive, negative) with ZC distance below/above the median counts; the mean is over the
    triplets that violate the margin."""
    model = GVAEModule(hidden=8, latent=2, layers=1, triplet_margin=0.5, triplet_mining="all")
    zc = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [4.0, 0.0]])
    dz = torch.cdist(zc, zc, p=1)
    threshold = dz[~torch.eye(4, dtype=torch.bool)].median()
    d2 = lambda a, b: (mu[a] - mu[b]).abs().mean().item() ** 2  # noqa: E731
    hinges = [max(d2(a, p) - d2(a, n) + 0.5, 0) for a in range(4) for p in range(4) for n in range(4)
              if p != a and dz[a, p] < threshold and dz[a, n] > threshold]
    assert len(hinges) == 6  # the median is torch's lower middle value (4.9), so the 4.9 pair is no negative
    violating = [h for h in hinges if h > 0]
    assert 0 < len(violating) < len(hinges)
    assert model.triplet(mu, zc).item() == pytest.approx(sum(violating) / len(violating), rel=1e-5)


def test_structured_decoder_gives_valid_cells_without_repair_and_covers_the_space():
    n = 2000
    edges, types, kernels, parents = random_logits(n)
    types[:, :, ABSENT] += torch.linspace(-4, 4, n)[:, None]  # from full cells to empty ones
    cells, repaired = decode_cells(edges, types, kernels, parents)
    assert not any(repaired)  # Cell() validated each one
    assert len({c.canonical_hash() for c in cells}) > 0.75 * n  # the near-empty cells repeat
    assert {c.num_op_nodes for c in cells} == set(range(7))


def test_structured_likelihood_is_exact_on_the_true_cell():
    """Perfect logits give a reconstruction NLL near 0; the implied edges (below the first parent, dead ends → output)
    are not scored, so wrong logits there cost nothing."""
    model = GVAEModule(hidden=8, latent=2, layers=1)
    cells = list(sample_cells(64, seed=3, op_set="graphnet"))
    targets = batch_targets(cells)
    edges, types, kernels, parents = perfect_logits(cells, structured=True)
    free = upper_triangle(targets.edge_free).bool()
    flat = upper_triangle(edges)
    nll = model.reconstruction((flat, types, kernels, parents), targets).item()
    assert nll < 1e-2
    assert targets.edge_free.sum() < targets.adjacency.numel()
    scrambled = torch.where(free, flat, -flat)  # flip every implied edge
    assert model.reconstruction((scrambled, types, kernels, parents), targets).item() == pytest.approx(nll)
    flipped = torch.where(free, -flat, flat)  # flip every free edge
    assert model.reconstruction((flipped, types, kernels, parents), targets).item() > 10 * free.sum() / len(cells)


def test_kl_of_the_prior_is_zero_and_positive_elsewhere():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    assert GVAEModule.kl(mu, logvar).item() == 0.0
    assert GVAEModule.kl(mu + 1, logvar).item() == pytest.approx(2.0)  # ½·Σ μ² over 4 dims


def test_training_fits_and_writes_metrics(tiny_archive, tmp_path):
    data = GraphZCDataModule(str(tiny_archive), batch_size=32, labelled_batch_size=8, val_fraction=0.1, max_cells=300)
    model = GVAEModule(hidden=128, latent=32, layers=3, lr=3e-3, prior_samples=200)
    trainer = L.Trainer(max_epochs=40, check_val_every_n_epoch=20, accelerator="cpu", logger=False,
                        enable_checkpointing=True, callbacks=[MetricsFile()],
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    torch.manual_seed(0)
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    assert metrics["train/recon_epoch"] < 15  # from ~40 nats per cell at initialisation
    assert float(metrics["val/validity"]) == 1.0 and float(metrics["val/uniqueness"]) > 0.5  # structured decoder
    assert (tmp_path / "metrics.json").is_file()
    # train-set cells reconstruct after a short fit
    cells = [c for _, c in Archive(tiny_archive).iter_cells(limit=40)]
    recon = model.decode(model.encode(cells))
    assert sum(a == b for a, b in zip(recon, cells, strict=True)) >= 20
    assert model.decode_stats["decoded"] == 40
    assert model.predict_zc(model.encode(cells)).shape == (40, 4)

    checkpoint = torch.load(trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path,
                            weights_only=True)
    assert checkpoint["lightning_nas"]["space"] == {"op_set": "graphnet", "encoding": 1}
    assert checkpoint["lightning_nas"]["zc_normaliser"]["names"] == ["naswot", "snip_ssnr", "params", "flops"]


def test_checkpoint_refuses_another_search_space(tiny_archive, tmp_path):
    model = GVAEModule(hidden=8, latent=4, layers=1)
    model.check_space("graphnet")
    with pytest.raises(ValueError, match="op set and encoding must match"):
        model.check_space("nb201")


def test_datamodule_pairs_both_kinds_and_refuses_unlabelled_archives(tiny_archive, tmp_path):
    data = GraphZCDataModule(str(tiny_archive), batch_size=16, labelled_batch_size=4, val_fraction=0.1)
    data.setup("fit")
    assert len(data.train_sets["labelled"]) == 36 and len(data.train_sets["unlabelled"]) == 504
    assert len(data.val_set) == 60 and not (set(data.val_set.hashes) & data.train_hashes)
    batch, *_ = next(iter(data.train_dataloader()))
    assert batch["labelled"]["adj"].shape == (4, 9, 9) and batch["unlabelled"]["adj"].shape == (16, 9, 9)
    assert torch.isfinite(batch["labelled"]["zc"]).all() and math.isnan(batch["unlabelled"]["zc"][0, 0])

    bare = tmp_path / "bare.sqlite"
    with Archive(bare, op_set="graphnet") as archive:
        archive.add_cells(sample_cells(10, seed=0))
        archive.add_probe("p", "gaussian", 0, torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no labelled cells"):
        GraphZCDataModule(str(bare)).setup("fit")
    missing = r"missing.sqlite: no archive; run the zc stage first \(python -m lightning_nas zc --config"
    with pytest.raises(FileNotFoundError, match=missing):
        GraphZCDataModule(str(tmp_path / "missing.sqlite")).setup("fit")


def test_latent_map_callback_draws_fig2(tiny_archive, tmp_path):
    from callbacks import LatentMapCallback, gmm_from_clusters
    from lightning_nas.cluster import fit_clusters

    data = GraphZCDataModule(str(tiny_archive), batch_size=64, labelled_batch_size=8, val_fraction=0.2, max_cells=200)
    data.setup("fit")
    z = data.train_sets["labelled"].zc.numpy()
    fitted = fit_clusters(z, ks=[2, 3])
    clusters = tmp_path / "clusters.json"
    clusters.write_text(__import__("json").dumps({"K": fitted.k, "weights": fitted.weights, "means": fitted.means,
                                                  "covariances": fitted.covariances}))
    assert (gmm_from_clusters(clusters).predict(z) == fitted.model.predict(z)).all()  # rebuilt, not refitted

    model = GVAEModule(hidden=16, latent=8, layers=1, prior_samples=20)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[LatentMapCallback(clusters=str(clusters), max_points=40)])
    trainer.fit(model, datamodule=data)
    png = tmp_path / "latent_map_epoch0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ddp_on_two_cpu_processes_pools_validation_over_ranks(tiny_archive, tmp_path):
    """One epoch of ``fit`` with ``devices=2, strategy=ddp`` on CPU (two processes, gloo): the run completes and the
    metrics count the held-out cells of both ranks, not only rank 0's shard."""
    config = tmp_path / "ddp.yaml"
    config.write_text(f"""
seed_everything: 0
trainer:
  default_root_dir: {tmp_path}
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_epochs: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: lightning_nas.models.GVAEModule
  init_args: {{hidden: 32, latent: 8, layers: 2, prior_samples: 50}}
data:
  class_path: datamodules.GraphZCDataModule
  init_args: {{archive: {tiny_archive}, batch_size: 32, labelled_batch_size: 8, val_fraction: 0.1, max_cells: 400}}
""")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lightning_nas", "fit", "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    data = GraphZCDataModule(str(tiny_archive), val_fraction=0.1, max_cells=400)
    data.setup()
    held_out = len(data.val_set)
    assert metrics["val_cells"] == held_out  # both ranks' shards (40 cells: 20 each, no padding)
    assert 0.0 <= metrics["recon_exact"] <= 1.0 and metrics["validity"] == 1.0
    assert "latent_zc_spearman" in metrics
    # written once, by the callback the CLI adds to every fit (callbacks.MetricsFile), with what produced it
    assert metrics["epoch"] == 0 and set(metrics["provenance"]) == {"lightning_nas", "torch", "lightning", "python"}
