"""ClassifierModule: trains any GraphNet architecture spec on a classification task."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..space import Arch, build_network, count_cost


def load_arch(arch: str | Path | dict[str, Any] | Arch) -> Arch:
    """An :class:`Arch` from an ``arch.json`` path, a JSON spec dict, or an ``Arch``."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, dict):
        return Arch.from_json(arch)
    path = Path(arch)
    if not path.is_file():
        raise FileNotFoundError(f"arch: no architecture spec at {path.resolve()} (expected an arch.json file)")
    return Arch.load(path)


class ClassifierModule(L.LightningModule):
    """Train ``arch`` with SGD (Nesterov), linear warm-up then cosine decay to 0, label smoothing, and weight
    decay on conv/linear weights only (BN and biases excluded) — the ZenNAS recipe at a configurable scale.

    Args:
        arch: path to an ``arch.json`` or the spec itself (see :class:`lightning_nas.space.Arch`).
        num_classes: classes of the task.
        in_channels: channels of the input.
        dims: 2 for images (N×C×H×W), 1 for sequences (N×C×L).
        lr: peak learning rate.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 on conv/linear weights.
        warmup_epochs: epochs of linear warm-up (may be fractional).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        arch: str | dict[str, Any],
        num_classes: int = 10,
        in_channels: int = 3,
        dims: int = 2,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: float = 1.0,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        spec = load_arch(arch)
        self.save_hyperparameters(ignore=["arch"])
        self.hparams["arch"] = spec.to_json()  # the checkpoint describes its network, not a path
        self.arch = spec
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def configure_models(self) -> None:
        hp = self.hparams
        self.network = build_network(self.arch, hp.in_channels, hp.num_classes, hp.dims)

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        n = self.hparams.num_classes
        self.train_acc = MulticlassAccuracy(n, average="micro")
        self.val_acc = MulticlassAccuracy(n, average="micro")
        self.test_acc = MulticlassAccuracy(n, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.log("test/loss", nn.functional.cross_entropy(logits, y))
        self.log("test/acc", self.test_acc)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities of the batch (labels, if the batch has them, are ignored)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).softmax(dim=-1)

    def cost(self, input_shape) -> dict[str, int]:
        """Params/MACs/FLOPs of the network for one sample (see :func:`lightning_nas.space.count_cost`)."""
        return count_cost(self.network, input_shape)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for module in self.network.modules():
            for name, p in module.named_parameters(recurse=False):
                is_weight = name == "weight" and isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear)
                (decay if is_weight else no_decay).append(p)
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.momentum > 0,
        )
        total = max(1, self.trainer.estimated_stepping_batches)
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = min(total - 1, int(hp.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
