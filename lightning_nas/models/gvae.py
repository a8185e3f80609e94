"""G-VAE over cells with a triplet-regularised latent space and a ZC predictor (paper §3.1, Eq. 4–5, App. A).

Read top to bottom: the encoder (dense GCN from torch_geometric over the 9-node cell encoding), the decoder (MLP
heads for edges, op types and kernels), the predictor q, then the LightningModule that trains them jointly.

Loss per step (labelled and unlabelled batches paired, as the paper does):
``recon(all) + kl_weight·KL(all) + triplet_weight·triplet(labelled) + predictor_weight·MSE(q(μ), ẑ)(labelled)``,
where ẑ is the normalised ZC vector. Reconstruction is summed over a cell's 28 possible edges (BCE), its 6 op-type
slots (cross-entropy, an 11th class = empty slot) and the kernels of the slots that have one; KL is summed over
latent dimensions; both are averaged over cells.

Triplets (Eq. 5) are mined inside each labelled batch with the batch's median pairwise distance in normalised ZC
space (L1) as the threshold: a positive of anchor i is a cell closer than the threshold, a negative one farther.
``triplet_mining: all`` (our default) uses every (anchor, positive, negative) and averages the hinge over the triplets
that violate the margin; ``hardest`` takes only the nearest positive and the farthest negative per anchor. The hinge is
``max(d(i,p)² − d(i,n)² + margin, 0)`` with ``d`` the mean absolute difference of latent means (L1 / latent size, so
the margin does not depend on the latent size). On the tiny archive, ``all`` with margin 1 raised the held-out
Spearman of latent vs ZC distances from 0.41 (hardest, margin 0.1) to 0.70 after 6 epochs on 10k cells.

The decoder is ``structured`` by default (:mod:`lightning_nas.space.decoding`): the edge likelihood is written over
valid cells only, so every prior sample decodes to a valid cell without repair; ``independent`` is the authors'
decoder (independent edges, threshold, repair), kept for comparison — with it 18–25 % of prior samples needed repair
on the tiny archive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import DenseGCNConv
from torchmetrics.functional import r2_score, spearman_corrcoef

from .checkpoint import load_module

from ..space.cell import ENCODING_FEATURES, ENCODING_NODES, Cell, encode_inputs
from ..space.decoding import (
    ABSENT,
    MAX_OP_NODES,
    NUM_KERNELS,
    NUM_TYPE_CLASSES,
    CellTargets,
    decode_cells,
    upper_triangle,
)

ENCODING_VERSION = 1
"""Version of the (cell encoding, decoder targets) pair a checkpoint was trained with."""
_NODE_LOGITS = NUM_TYPE_CLASSES + NUM_KERNELS + MAX_OP_NODES + 1
_PARENT_MASK = torch.ones(MAX_OP_NODES, MAX_OP_NODES + 1, dtype=torch.bool).tril(0)  # slot s: positions 0..s


class GraphEncoder(nn.Module):
    """``layers`` dense GCN layers (Kipf & Welling; LayerNorm, ReLU) over the cell graph with edges in both
    directions and self loops, then μ and log σ² from the flattened node embeddings of *every* layer, the input
    included (jumping knowledge). Each node's features are extended with a one-hot of its position, so a message says
    which node it comes from. Both matter for exact reconstruction: without positions, two neighbours with the same op
    are indistinguishable; reading out only the last of 4 layers, training stalled at ~27 nats per cell on 20k cells
    where the jumping-knowledge readout keeps the first layer's exact neighbourhoods."""

    def __init__(self, hidden: int, latent: int, layers: int):
        super().__init__()
        self.register_buffer("position", torch.eye(ENCODING_NODES), persistent=False)
        width = ENCODING_FEATURES + ENCODING_NODES
        dims = [width] + [hidden] * layers
        self.convs = nn.ModuleList(DenseGCNConv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        readout = ENCODING_NODES * (width + hidden * layers)
        self.mu = nn.Linear(readout, latent)
        self.logvar = nn.Linear(readout, latent)

    def forward(self, adj: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sym = (adj + adj.transpose(1, 2)).clamp(max=1.0)
        h = torch.cat([feat, self.position.expand(len(feat), -1, -1)], dim=-1)
        states = [h]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = F.relu(norm(conv(h, sym)))
            states.append(h)
        flat = torch.cat(states, dim=-1).flatten(1)
        return self.mu(flat), self.logvar(flat)


class GraphDecoder(nn.Module):
    """Two MLP heads from a latent: logits of the 28 forward edges, and per op slot the op-type (11 classes), kernel
    (3 classes) and first-parent (7 positions, for the structured decoder) logits."""

    def __init__(self, hidden: int, latent: int):
        super().__init__()
        self.edges = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, (MAX_OP_NODES + 2) * (MAX_OP_NODES + 1) // 2))
        self.nodes = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, MAX_OP_NODES * _NODE_LOGITS))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(edges B×28, types B×6×11, kernels B×6×3, first parents B×6×7)``."""
        nodes = self.nodes(z).view(-1, MAX_OP_NODES, _NODE_LOGITS)
        return self.edges(z), *nodes.split([NUM_TYPE_CLASSES, NUM_KERNELS, MAX_OP_NODES + 1], dim=-1)


def edge_matrix(edge_logits: torch.Tensor) -> torch.Tensor:
    """B×28 forward-edge logits as B×8×8 (−inf below and on the diagonal)."""
    n = MAX_OP_NODES + 2
    full = torch.full((edge_logits.shape[0], n, n), -math.inf, device=edge_logits.device, dtype=edge_logits.dtype)
    rows, cols = torch.triu_indices(n, n, offset=1, device=edge_logits.device)
    full[:, rows, cols] = edge_logits
    return full


class GVAEModule(L.LightningModule):
    """Trains encoder f, decoder f⁻¹ and predictor q jointly; the ZC normaliser and the search space travel in the
    checkpoint.

    Args:
        hidden: GCN and MLP width (paper 512).
        latent: latent size (paper 256).
        layers: GCN layers (paper 4).
        zc_dims: size of the ZC vector q predicts.
        lr, weight_decay: AdamW (cosine schedule to 0 over the run).
        kl_weight, triplet_weight, triplet_margin, triplet_mining, predictor_weight: loss terms (module docstring).
        decoder: ``structured`` (valid cells by construction) or ``independent`` (the authors' independent edges
            with repair); see :mod:`lightning_nas.space.decoding`.
        prior_samples: latents drawn from N(0, I) at each validation to measure validity/uniqueness/novelty.
    """

    def __init__(
        self,
        hidden: int = 128,
        latent: int = 32,
        layers: int = 4,
        zc_dims: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        kl_weight: float = 0.005,
        triplet_weight: float = 1.0,
        triplet_margin: float = 0.1,
        triplet_mining: Literal["hardest", "all"] = "hardest",
        predictor_weight: float = 1.0,
        prior_samples: int = 1000,
        decoder: Literal["structured", "independent"] = "structured",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = GraphEncoder(hidden, latent, layers)
        self.decoder = GraphDecoder(hidden, latent)
        self.predictor = nn.Sequential(nn.Linear(latent, latent), nn.ReLU(), nn.Linear(latent, zc_dims))
        self.space: dict = {}  # op_set and encoding version, set from the data and stored in the checkpoint
        self.normaliser: dict | None = None
        self.decode_stats = {"decoded": 0, "repaired": 0}

    # ---- the model -------------------------------------------------------------------------------------------
    def forward(self, adj: torch.Tensor, feat: torch.Tensor):
        mu, logvar = self.encoder(adj, feat)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return mu, logvar, z, self.decoder(z)

    @torch.no_grad()
    def encode(self, cells: Sequence[Cell]) -> torch.Tensor:
        """Latent means f(x) of ``cells`` (B×latent)."""
        adj, feat = encode_inputs(cells)
        return self.encoder(adj.to(self.device), feat.to(self.device))[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Cell]:
        """Valid cells f⁻¹(z); how many needed repair accumulates in ``decode_stats``."""
        return self.decode_with_repairs(latents)[0]

    @torch.no_grad()
    def decode_with_repairs(self, latents: torch.Tensor) -> tuple[list[Cell], list[bool]]:
        """Valid cells f⁻¹(z) and, per cell, whether it needed repair (also counted in ``decode_stats``)."""
        cells, repaired = decode_cells(*self._decode_args(self.decoder(latents.to(self.device))))
        self.decode_stats["decoded"] += len(cells)
        self.decode_stats["repaired"] += sum(repaired)
        return cells, repaired

    def _decode_args(self, decoded: tuple[torch.Tensor, ...]):
        """Arguments of :func:`decode_cells` for the decoder's outputs."""
        edges, types, kernels, parents = decoded
        return edge_matrix(edges), types, kernels, parents if self.hparams.decoder == "structured" else None

    @torch.no_grad()
    def predict_zc(self, latents: torch.Tensor) -> torch.Tensor:
        """q(z): the normalised ZC vector predicted from latents."""
        return self.predictor(latents.to(self.device))

    # ---- losses ----------------------------------------------------------------------------------------------
    def reconstruction(self, decoded, targets: CellTargets) -> torch.Tensor:
        """Negative log-likelihood of the target cells (nats per cell): edges (BCE), op types and kernels (CE) and,
        for the structured decoder, first parents (CE) with BCE only on the free edges."""
        edges, types, kernels, parents = decoded
        bce = F.binary_cross_entropy_with_logits(edges, upper_triangle(targets.adjacency), reduction="none")
        nll = F.cross_entropy(types.transpose(1, 2), targets.op_type, reduction="none").sum(1)
        ce_kernel = F.cross_entropy(kernels.transpose(1, 2), targets.kernel.clamp(min=0), reduction="none")
        nll = nll + (ce_kernel * (targets.kernel >= 0)).sum(1)
        if self.hparams.decoder == "independent":
            return (nll + bce.sum(1)).mean()
        parents = parents.masked_fill(~_PARENT_MASK.to(parents.device), -math.inf)
        present = targets.first_parent >= 0
        ce_parent = F.cross_entropy(parents[present], targets.first_parent[present], reduction="sum")
        bce = (bce * upper_triangle(targets.edge_free)).sum()
        return (nll.sum() + ce_parent + bce) / len(nll)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()

    def triplet(self, mu: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
        """Eq. 5 with in-batch mining (module docstring); 0 when no anchor has both a positive and a negative."""
        n = len(zc)
        if n < 3:
            return mu.new_zeros(())
        eye = torch.eye(n, dtype=torch.bool, device=zc.device)
        dz = torch.cdist(zc, zc, p=1)
        threshold = dz[~eye].median()
        d2 = ((mu[:, None, :] - mu[None, :, :]).abs().mean(-1)).pow(2)  # squared latent distance, all pairs
        margin = self.hparams.triplet_margin
        if self.hparams.triplet_mining == "all":
            positive = (dz < threshold) & ~eye
            negative = dz > threshold
            valid = positive[:, :, None] & negative[:, None, :]  # anchor, positive, negative
            if not valid.any():
                return mu.new_zeros(())
            hinge = F.relu(d2[:, :, None] - d2[:, None, :] + margin)[valid]
            active = hinge > 0
            return hinge[active].mean() if active.any() else hinge.sum()
        pos_d, pos = dz.masked_fill(eye, math.inf).min(1)
        neg_d, neg = dz.masked_fill(eye, -1.0).max(1)
        valid = (pos_d < threshold) & (neg_d > threshold)
        if not valid.any():
            return mu.new_zeros(())
        rows = torch.arange(n, device=mu.device)
        return F.relu(d2[rows, pos] - d2[rows, neg] + margin)[valid].mean()

    def _losses(self, batch: dict, labelled: bool) -> dict[str, torch.Tensor]:
        mu, logvar, _, decoded = self(batch["adj"], batch["feat"])
        out = {"recon": self.reconstruction(decoded, batch["targets"]), "kl": self.kl(mu, logvar)}
        if labelled:
            out["triplet"] = self.triplet(mu, batch["zc"])
            out["predictor"] = F.mse_loss(self.predictor(mu), batch["zc"])
        return out

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of one paired step (module docstring) and its terms averaged over both kinds."""
        hp = self.hparams
        parts = {}
        for kind in ("unlabelled", "labelled"):
            if batch.get(kind) is not None:
                for name, value in self._losses(batch[kind], kind == "labelled").items():
                    parts.setdefault(name, []).append(value)
        terms = {name: torch.stack(v).mean() for name, v in parts.items()}
        loss = terms["recon"] + hp.kl_weight * terms["kl"]
        if "triplet" in terms:
            loss = loss + hp.triplet_weight * terms["triplet"] + hp.predictor_weight * terms["predictor"]
        return loss, terms

    def training_step(self, batch, batch_idx):
        loss, terms = self.loss(batch)
        n = sum(len(b["hash"]) for b in batch.values() if b is not None)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = max(1, self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- validation metrics (written to <trainer.default_root_dir>/metrics.json) ------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"exact": 0, "total": 0, "mu": [], "zc": []}

    def validation_step(self, batch, batch_idx):
        mu, logvar = self.encoder(batch["adj"], batch["feat"])
        decoded = self.decoder(mu)
        n = len(mu)
        self.log("val/recon", self.reconstruction(decoded, batch["targets"]), batch_size=n, sync_dist=True)
        self.log("val/kl", self.kl(mu, logvar), batch_size=n, sync_dist=True)
        cells, _ = decode_cells(*self._decode_args(decoded))
        self._val["exact"] += sum(c.canonical_hash() == h for c, h in zip(cells, batch["hash"], strict=True))
        self._val["total"] += n
        labelled = batch["labelled"]
        self._val["mu"].append(mu[labelled].cpu())
        self._val["zc"].append(batch["zc"][labelled].cpu())

    def on_validation_epoch_end(self) -> None:
        self._gather_validation()
        metrics = self.validation_metrics()
        for name, value in metrics.items():
            self.log(f"val/{name}", value, batch_size=1)  # computed from every rank's cells: identical on all ranks
        self.epoch_metrics = metrics  # written to metrics.json by callbacks.MetricsFile

    def _gather_validation(self) -> None:
        """Under DDP each rank saw a shard of the held-out cells: pool the counts and latents of all ranks."""
        if self._trainer is None or self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return
        shards = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(shards, self._val)
        self._val = {"exact": sum(v["exact"] for v in shards), "total": sum(v["total"] for v in shards),
                     "mu": [m for v in shards for m in v["mu"]], "zc": [z for v in shards for z in v["zc"]]}

    def validation_metrics(self) -> dict[str, float]:
        """recon_exact (held-out), validity/uniqueness/novelty (prior samples), latent_zc_spearman, predictor_r2_*;
        ``val_cells`` is the number of held-out cells the metrics pooled (over all ranks)."""
        v = self._val
        metrics = {"recon_exact": v["exact"] / max(1, v["total"]), "val_cells": v["total"]}
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(self.hparams.prior_samples, self.hparams.latent, generator=gen).to(self.device)
        cells, repaired = decode_cells(*self._decode_args(self.decoder(z)))
        hashes = [c.canonical_hash() for c in cells]
        seen = getattr(self.trainer.datamodule, "train_hashes", set()) if self._trainer is not None else set()
        metrics["validity"] = 1.0 - sum(repaired) / len(cells)
        metrics["uniqueness"] = len(set(hashes)) / len(cells)
        metrics["novelty"] = sum(h not in seen for h in hashes) / len(cells)
        mu, zc = torch.cat(v["mu"]) if v["mu"] else None, torch.cat(v["zc"]) if v["zc"] else None
        if mu is not None and len(mu) >= 3:
            pairs = torch.triu_indices(len(mu), len(mu), offset=1)
            d_latent = (mu[pairs[0]] - mu[pairs[1]]).abs().sum(1)
            d_zc = (zc[pairs[0]] - zc[pairs[1]]).abs().sum(1)
            metrics["latent_zc_spearman"] = float(spearman_corrcoef(d_latent, d_zc))
            r2 = r2_score(self.predictor(mu.to(self.device)).cpu(), zc, multioutput="raw_values")
            for name, value in zip(self._zc_names(), r2.tolist(), strict=True):
                metrics[f"predictor_r2_{name}"] = value
        return metrics

    def _zc_names(self) -> list[str]:
        names = (self.normaliser or {}).get("names")
        return list(names) if names else [str(i) for i in range(self.hparams.zc_dims)]

    def setup(self, stage: str) -> None:
        # Lightning sets the datamodule up before the module: its op set and normaliser are read, not computed here
        data = self.trainer.datamodule if self._trainer is not None else None
        if data is not None and hasattr(data, "op_set"):
            self.check_space(data.op_set)
            self.normaliser = data.normaliser

    # ---- checkpoint: the space and the normaliser travel with the weights -------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lightning_nas"] = {"space": self.space, "zc_normaliser": self.normaliser}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("lightning_nas", {})
        self.space, self.normaliser = saved.get("space", {}), saved.get("zc_normaliser")

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> GVAEModule:
        """A trained G-VAE (eval mode) from a Lightning checkpoint, loaded without running code (weights only)."""
        return load_module(cls, path, map_location, "python -m lightning_nas fit --config configs/gvae.yaml")

    def check_space(self, op_set: str | None) -> None:
        """Refuse data from another search space than the one this model was trained on."""
        want = {"op_set": op_set, "encoding": ENCODING_VERSION}
        if self.space and self.space != want:
            raise ValueError(
                f"G-VAE checkpoint was trained on {self.space}, the archive is {want}: train a G-VAE for this "
                "search space (op set and encoding must match)"
            )
        self.space = want


__all__ = ["ABSENT", "ENCODING_VERSION", "GVAEModule", "GraphDecoder", "GraphEncoder", "encode_inputs"]
