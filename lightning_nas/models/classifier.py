"""Training found architectures on real tasks: :class:`ClassifierModule` (images, sequences, multi-label) and
:class:`DenseModule` (per-pixel outputs), sharing the ZenNAS training scheme of :class:`ArchModule`.

Every checkpoint carries the architecture spec and a ``lightning_nas`` record of the network it trains (kind, input
and output sizes, the input shape it saw), so :func:`network_from_checkpoint` rebuilds the bare ``nn.Module`` from the
file alone, weights only — what ``python -m lightning_nas export`` uses.
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..space import Arch, build_network, count_cost
from ..space.network import DenseGraphNet


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


def nb360_task(name: str):
    """The NAS-Bench-360 task ``name`` (shapes, loss, metric) from :mod:`datamodules.nb360`."""
    from datamodules.nb360 import NB360_TASKS

    if name not in NB360_TASKS:
        raise ValueError(f"task: {name!r} is not a NAS-Bench-360 task; known: {', '.join(NB360_TASKS)}")
    return NB360_TASKS[name]


def build_task_network(record: dict) -> nn.Module:
    """The network of a checkpoint's ``lightning_nas`` record (see the module docstring)."""
    arch = Arch.from_json(record["arch"])
    if record["kind"] == "dense":
        return DenseGraphNet(arch, record["in_channels"], record["outputs"], record["dims"])
    return build_network(arch, record["in_channels"], record["outputs"], record["dims"])


def network_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The trained network of a :class:`ClassifierModule`/:class:`DenseModule` checkpoint (eval mode) and its record
    (``kind``, ``arch``, ``in_channels``, ``outputs``, ``dims``, ``input_shape``); loading never runs code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (train one with `make evaluate TASK=...`)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({err})") from err
    record = checkpoint.get("lightning_nas") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or record.get("kind") not in ("classifier", "dense"):
        raise ValueError(f"{path} is not a checkpoint of a lightning_nas ClassifierModule or DenseModule")
    network = build_task_network(record)
    state = {k.removeprefix("network."): v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")}
    network.load_state_dict(state)
    return network.eval(), record


class ArchModule(L.LightningModule):
    """Shared training scheme: SGD (Nesterov), linear warm-up then cosine decay to 0 per step, weight decay on
    conv/linear weights only (BN and biases excluded), optional BN momentum (ZenNAS: 0.01). Subclasses set
    ``self.network``, ``self.criterion`` and the metrics in ``configure_models/losses/metrics``."""

    kind = "classifier"

    def __init__(self, arch, in_channels: int, outputs: int, dims: int):
        super().__init__()
        self.arch = load_arch(arch)
        self.record = {"kind": self.kind, "arch": self.arch.to_json(), "in_channels": in_channels, "outputs": outputs,
                       "dims": dims, "input_shape": None}

    def configure(self) -> None:
        """Save the hyperparameters of the subclass's ``__init__`` (the spec instead of a path), then build."""
        self.save_hyperparameters(ignore=["arch"], frame=inspect.currentframe().f_back)
        self.hparams["arch"] = self.arch.to_json()  # the checkpoint describes its network, not a path
        self.configure_models()
        if self.hparams.bn_momentum is not None:
            for m in self.network.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = self.hparams.bn_momentum
        self.configure_losses()
        self.configure_metrics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _see(self, x: torch.Tensor) -> None:
        """Record the input shape (without batch) and refuse inputs the network was not built for."""
        if x.shape[1] != self.record["in_channels"] or x.dim() != self.record["dims"] + 2:
            raise ValueError(f"the data gives inputs of shape {tuple(x.shape[1:])}, the network was built for "
                             f"{self.record['in_channels']} channels and {self.record['dims']}-D data: set "
                             f"model.init_args.in_channels/dims to match the task")
        self.record["input_shape"] = list(x.shape[1:])

    def eval_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss logged on validation/test batches (the training criterion unless a subclass says otherwise)."""
        return self.criterion(out, y)

    def _evaluate(self, batch, split: str, metric) -> None:
        x, y = batch
        self._see(x)
        out = self(x)
        metric(out, y)
        self.log(f"{split}/loss", self.eval_loss(out, y))
        self.log(f"{split}/{self.metric_name}", metric, prog_bar=split == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", self.val_metric)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", self.test_metric)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lightning_nas"] = dict(self.record)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.record["input_shape"] = checkpoint.get("lightning_nas", {}).get("input_shape")

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
            lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0,
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


class ClassifierModule(ArchModule):
    """Train ``arch`` on a classification task — the digits/CIFAR/ImageNet default (cross-entropy with label
    smoothing, accuracy) or a NAS-Bench-360 task's own loss and metric (``task``: e.g. ``ecg`` → macro-F1,
    ``deepsea`` → BCE with pos_weight 4 and AUROC). Logs ``{train,val,test}/loss`` and ``{val,test}/<metric>``.

    Args:
        arch: path to an ``arch.json`` or the spec itself (see :class:`lightning_nas.space.Arch`).
        num_classes: classes (labels for multi-label tasks).
        in_channels: channels of the input.
        dims: 2 for images (N×C×H×W), 1 for sequences (N×C×L).
        task: a NAS-Bench-360 classification task name, or ``None``.
        lr, momentum, weight_decay, warmup_epochs, bn_momentum: the optimiser (see :class:`ArchModule`).
        label_smoothing: cross-entropy label smoothing (default task).
        mixup_alpha: mixup with λ ~ Beta(α, α) on training batches; 0 switches it off (default task).
        teacher: a TorchScript (``.pt``/``.ts``) or ``torch.export`` (``.pt2``) file of a teacher network on the same
            inputs and classes: adds the distillation loss KL(teacher ∥ student) at ``distill_temperature``
            (weight 1, as the paper's ImageNet recipe); loading it runs no Python code.
    """

    def __init__(
        self,
        arch: str | dict[str, Any],
        num_classes: int = 10,
        in_channels: int = 3,
        dims: int = 2,
        task: str | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        warmup_epochs: float = 1.0,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        bn_momentum: float | None = None,
        teacher: str | None = None,
        distill_temperature: float = 1.0,
    ):
        self.task = nb360_task(task) if task is not None else None
        if self.task is not None and self.task.dense:
            raise ValueError(f"task: {task!r} is a dense task; train it with lightning_nas.models.DenseModule")
        if self.task is not None and (num_classes, in_channels, dims) != (
                self.task.num_outputs, self.task.input_shape[0], self.task.dims):
            raise ValueError(f"task {task!r} has {self.task.num_outputs} classes and inputs of shape "
                             f"{self.task.input_shape}: set num_classes: {self.task.num_outputs}, in_channels: "
                             f"{self.task.input_shape[0]}, dims: {self.task.dims}")
        super().__init__(arch, in_channels, num_classes, dims)
        self.configure()
        self.teacher = load_teacher(teacher) if teacher is not None else None

    def configure_models(self) -> None:
        r = self.record
        self.network = build_network(self.arch, r["in_channels"], r["outputs"], r["dims"])

    def configure_losses(self) -> None:
        self.criterion = self.task.loss() if self.task else nn.CrossEntropyLoss(
            label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        make = self.task.metric if self.task else (lambda: MulticlassAccuracy(self.record["outputs"], average="micro"))
        self.metric_name = self.task.metric_name if self.task else "acc"
        self.val_metric, self.test_metric = make(), make()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self._see(x)
        alpha = self.hparams.mixup_alpha
        if alpha > 0 and self.task is None:
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(x), device=x.device)
            x = lam * x + (1 - lam) * x[perm]
            logits = self(x)
            loss = lam * self.criterion(logits, y) + (1 - lam) * self.criterion(logits, y[perm])
        else:
            logits = self(x)
            loss = self.criterion(logits, y)
        if self.teacher is not None:
            t = self.hparams.distill_temperature
            with torch.no_grad():
                soft = (self.teacher(x) / t).log_softmax(-1)
            distill = nn.functional.kl_div((logits / t).log_softmax(-1), soft, log_target=True, reduction="batchmean")
            self.log("train/distill", distill)
            loss = loss + distill * t * t
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def eval_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Plain cross-entropy for the default task (comparable across label smoothing settings)."""
        return self.criterion(out, y) if self.task else nn.functional.cross_entropy(out, y)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> torch.Tensor:
        """Class (or, for multi-label tasks, label) probabilities of the batch; labels in the batch are ignored."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        logits = self(x)
        multilabel = isinstance(self.criterion, nn.BCEWithLogitsLoss)  # e.g. DeepSEA: independent labels
        return logits.sigmoid() if multilabel else logits.softmax(dim=-1)


class DenseModule(ArchModule):
    """Train ``arch`` with a per-pixel head (:class:`~lightning_nas.space.network.DenseGraphNet`, all strides 1) on a
    dense NAS-Bench-360 task (``darcy_flow``, ``psicov``, ``cosmic``) with the task's loss and metric.

    Args:
        arch: path to an ``arch.json`` or the spec itself.
        task: the dense task; its input channels, dimensionality and output channels size the network.
        lr, momentum, weight_decay, warmup_epochs, bn_momentum: the optimiser (see :class:`ArchModule`).
    """

    kind = "dense"

    def __init__(self, arch: str | dict[str, Any], task: str = "darcy_flow", lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 5e-4, warmup_epochs: float = 1.0, bn_momentum: float | None = None):
        self.task = nb360_task(task)
        if not self.task.dense:
            raise ValueError(f"task: {task!r} is not dense; train it with lightning_nas.models.ClassifierModule")
        super().__init__(arch, self.task.input_shape[0], self.task.num_outputs, self.task.dims)
        self.configure()

    def configure_models(self) -> None:
        r = self.record
        self.network = DenseGraphNet(self.arch, r["in_channels"], r["outputs"], r["dims"])

    def configure_losses(self) -> None:
        self.criterion = self.task.loss()

    def configure_metrics(self) -> None:
        self.metric_name = self.task.metric_name
        self.val_metric, self.test_metric = self.task.metric(), self.task.metric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self._see(x)
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss


def load_teacher(path: str | Path) -> nn.Module:
    """A frozen teacher network from a TorchScript or ``torch.export`` file (no Python code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher: no file at {path}; export the teacher once, e.g. with torch.jit.trace(model, "
                                "example).save('teacher.pt') or torch.export.save(torch.export.export(model, "
                                "(example,)), 'teacher.pt2')")
    if path.suffix == ".pt2":  # an exported graph: its train/eval behaviour was fixed when it was exported
        teacher = torch.export.load(path).module()
    else:
        with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; its files still load
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
            teacher = torch.jit.load(path, map_location="cpu").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
