"""Training found architectures on real tasks: :class:`ClassifierModule` (images, sequences, multi-label) and
:class:`DenseModule` (per-pixel outputs), sharing the ZenNAS training scheme of :class:`ArchModule`.

Every checkpoint carries the architecture spec and a ``lightning_nas`` record of the network it trains (kind, input
and output sizes, the input shape it saw, the BN eps when training set one), so :func:`network_from_checkpoint`
rebuilds the bare ``nn.Module`` from the file alone, weights only — what ``python -m lightning_nas export`` uses.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..space import Arch, build_network, count_cost
from ..space.network import DenseGraphNet
from .checkpoint import read_weights_only


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
    from ..tasks import NB360_TASKS

    if name not in NB360_TASKS:
        raise ValueError(f"task: {name!r} is not a NAS-Bench-360 task; known: {', '.join(NB360_TASKS)}")
    return NB360_TASKS[name]


def build_task_network(record: dict) -> nn.Module:
    """The network of a checkpoint's ``lightning_nas`` record (see the module docstring), with the record's BN eps
    (``bn_eps``, when training set one: eps is no weight, the state dict does not carry it)."""
    arch = Arch.from_json(record["arch"])
    if record["kind"] == "dense":
        network = DenseGraphNet(arch, record["in_channels"], record["outputs"], record["dims"])
    else:
        network = build_network(arch, record["in_channels"], record["outputs"], record["dims"])
    if record.get("bn_eps") is not None:
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eps = record["bn_eps"]
    return network


def network_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The trained network of a :class:`ClassifierModule`/:class:`DenseModule` checkpoint (eval mode) and its record
    (``kind``, ``arch``, ``in_channels``, ``outputs``, ``dims``, ``input_shape``, ``bn_eps`` when set); loading
    never runs code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (train one with `make evaluate TASK=...`)")
    checkpoint = read_weights_only(path)
    record = checkpoint.get("lightning_nas") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or record.get("kind") not in ("classifier", "dense"):
        raise ValueError(f"{path} is not a checkpoint of a lightning_nas ClassifierModule or DenseModule")
    network = build_task_network(record)
    state = {k.removeprefix("network."): v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")}
    network.load_state_dict(state)
    return network.eval(), record


ZENNAS_INIT_GAIN = 3.26033
"""ZenNAS's xavier-normal gain (its ``MSRAPrelu`` init: MXNet's magnitude 2 / (1 + 0.25²), times √3)."""

WeightInit = Literal["zennas"]
WEIGHT_INITS = get_args(WeightInit)


def zennas_init(network: nn.Module) -> nn.Module:
    """ZenNAS's initialisation (``network_weight_MSRAPrelu_init``) in place: conv and linear weights xavier-normal
    with gain :data:`ZENNAS_INIT_GAIN` (std = gain · √(2 / (fan_in + fan_out))), their biases 0, BN γ = 1 and
    β = 0."""
    for m in network.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=ZENNAS_INIT_GAIN)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return network


class ArchModule(L.LightningModule):
    """Shared training scheme: SGD (Nesterov), linear warm-up then cosine decay to 0 per step, weight decay on
    conv/linear weights only (BN and biases excluded), optional BN momentum (ZenNAS: 0.01), optional ZenNAS weight
    init (``weight_init: zennas``, see :func:`zennas_init`) and BN eps (ZenNAS ImageNet: 1e-3). Subclasses set
    ``self.network``, ``self.criterion`` and the metrics (a ``MetricCollection`` per split, ``self.metric_name`` its
    headline) in ``configure_models/losses/metrics``.

    The template (torchgeo's ``BaseTask``): a subclass's ``__init__`` checks its arguments, describes its network
    with :meth:`describe` and calls ``super().__init__()`` last; this saves the subclass's ``__init__`` arguments as
    hyperparameters (the architecture's spec instead of a path) and calls ``configure_models``, then
    ``configure_losses`` and ``configure_metrics``."""

    kind = "classifier"

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["arch"])  # Lightning collects the calling subclass's __init__ arguments
        self.hparams["arch"] = self.arch.to_json()  # the checkpoint describes its network, not a path
        hp = self.hparams
        if hp.weight_init is not None and hp.weight_init not in WEIGHT_INITS:  # a str, not a Literal: jsonargparse's
            # error for a subclass argument spans many lines; this one names the setting in one
            raise ValueError(f"weight_init: {hp.weight_init!r} is not one of {WEIGHT_INITS} (or null: PyTorch's)")
        self.configure_models()
        if hp.weight_init == "zennas":
            zennas_init(self.network)
        for m in self.network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if hp.bn_momentum is not None:
                    m.momentum = hp.bn_momentum
                if hp.bn_eps is not None:
                    m.eps = hp.bn_eps
        if hp.bn_eps is not None:
            self.record["bn_eps"] = hp.bn_eps  # network_from_checkpoint rebuilds the network with it
        self.configure_losses()
        self.configure_metrics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def describe(self, arch, in_channels: int, outputs: int, dims: int) -> None:
        """The network to build (before ``super().__init__()``): the architecture (a spec or an ``arch.json``
        path), checked against the task it was searched for, and the record a checkpoint carries."""
        self.arch = load_arch(arch)
        self._check_task(in_channels, outputs, dims)
        self.record = {"kind": self.kind, "arch": self.arch.to_json(), "in_channels": in_channels, "outputs": outputs,
                       "dims": dims, "input_shape": None}

    def _check_task(self, in_channels: int, outputs: int, dims: int) -> None:
        """An architecture made for a task (``arch.json``'s ``task``: its budget was checked on that task's network)
        trains only as that network: same input channels, dimensionality, outputs and head."""
        task = self.arch.task
        if task is None:
            return
        mine = {"in_channels": in_channels, "outputs": outputs, "dims": dims, "dense": self.kind == "dense"}
        theirs = {"in_channels": task.in_channels, "outputs": task.num_classes, "dims": task.dims, "dense": task.dense}
        if mine != theirs:
            differ = ", ".join(f"{k} {mine[k]} (the task's: {theirs[k]})" for k in mine if mine[k] != theirs[k])
            raise ValueError(f"arch: this architecture was searched for task {task.name!r} (input "
                             f"{'×'.join(map(str, task.input_shape))}, {task.num_classes} outputs"
                             f"{', dense' if task.dense else ''}) and its budget was checked on that network; this "
                             f"module would train it with {differ}. Generate an architecture for this task "
                             "(search/generate `task`) or train it on its own task")

    def _see(self, x: torch.Tensor) -> None:
        """Record the input shape (without batch) and refuse inputs the network was not built for (in training, a
        classifier whose architecture carries a task also needs the task's input size: its cost was counted there)."""
        if x.shape[1] != self.record["in_channels"] or x.dim() != self.record["dims"] + 2:
            raise ValueError(f"the data gives inputs of shape {tuple(x.shape[1:])}, the network was built for "
                             f"{self.record['in_channels']} channels and {self.record['dims']}-D data: set "
                             f"model.init_args.in_channels/dims to match the task")
        task = self.arch.task
        if self.training and task is not None and not task.dense and tuple(x.shape[2:]) != task.input_size:
            raise ValueError(f"the data gives {'×'.join(map(str, x.shape[2:]))} inputs; the architecture was searched "
                             f"for task {task.name!r} at {'×'.join(map(str, task.input_size))} (its budget holds "
                             "there): set the data's image size to match")
        self.record["input_shape"] = list(x.shape[1:])

    def eval_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss logged on validation/test batches (the training criterion unless a subclass says otherwise)."""
        return self.criterion(out, y)

    def _evaluate(self, batch, split: str, metrics: MetricCollection) -> None:
        x, y = batch
        self._see(x)
        out = self(x)
        metrics.update(out, y)  # computed once per epoch (no per-batch value: AUROC keeps every score until then)
        self.log(f"{split}/loss", self.eval_loss(out, y))
        self.log_dict(metrics, prog_bar=split == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", self.test_metrics)

    def trained_modules(self) -> list[nn.Module]:
        """The modules whose parameters the optimiser trains (the network; subclasses may add their own)."""
        return [self.network]

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
        for module in (m for trained in self.trained_modules() for m in trained.modules()):
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
    smoothing, accuracy) or a NAS-Bench-360 task's own loss and metrics (``task``: e.g. ``ecg`` → macro-F1,
    ``deepsea`` → BCE with pos_weight 4 and AUROC). Logs ``{train,val,test}/loss`` and ``{val,test}/<metric>`` for
    each of the task's metrics.

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
            inputs and classes (loading it runs no Python code; it stays frozen, in the mode it was saved in, and is
            not part of the checkpoint). The contract: called on the student's (mixed) training batch, its forward
            returns either the logits N×classes, or the pair ``(logits, features)`` with ``features`` its feature map
            before global pooling, N×C_t×H_t×W_t (N×C_t×L_t for ``dims: 1``) — e.g. export a wrapper of a timm
            EfficientNet-B3 ``m`` (C_t = 1536) whose forward is ``f = m.forward_features(x); return m.forward_head(f),
            f`` (configs/recipes/zennas_imagenet.yaml shows it).
            Two distillation terms are added to the loss (ZenNAS's ``ts_train_image_classification.py``):
            ``distill_logit_weight`` × the soft cross-entropy −Σ softmax(teacher/T) · log_softmax(student/T) · T²
            (T = ``distill_temperature``), and ``distill_feature_weight`` × the smooth-L1 distance between the
            student's pre-pool feature map (``network.forward_features``) mapped to the teacher's channels by a
            learned 1×1 conv (with bias, initialised near 0, trained and weight-decayed with the network) and the
            teacher's features, resized (bilinear/linear) to the student's spatial size when they differ.
        distill_logit_weight: weight of the soft cross-entropy term (the paper: 1).
        distill_feature_weight: weight of the feature smooth-L1 term (the paper: 1; 0, the default, switches it off).
            Needs a teacher that returns ``(logits, features)`` and ``teacher_feature_channels``.
        teacher_feature_channels: C_t, the channels of the teacher's features (sizes the 1×1 projection).
        weight_init: ``null`` (PyTorch's init) or ``zennas`` (xavier-normal, gain 3.26, see :func:`zennas_init`).
        bn_eps: BatchNorm eps of every BN of the network (ZenNAS ImageNet: 1e-3); ``null`` keeps PyTorch's 1e-5.
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
        distill_logit_weight: float = 1.0,
        distill_feature_weight: float = 0.0,
        teacher_feature_channels: int | None = None,
        weight_init: str | None = None,
        bn_eps: float | None = None,
    ):
        self.task = nb360_task(task) if task is not None else None
        if self.task is not None and self.task.dense:
            raise ValueError(f"task: {task!r} is a dense task; train it with lightning_nas.models.DenseModule")
        if self.task is not None and (num_classes, in_channels, dims) != (
                self.task.num_outputs, self.task.input_shape[0], self.task.dims):
            raise ValueError(f"task {task!r} has {self.task.num_outputs} classes and inputs of shape "
                             f"{self.task.input_shape}: set num_classes: {self.task.num_outputs}, in_channels: "
                             f"{self.task.input_shape[0]}, dims: {self.task.dims}")
        if teacher is not None and distill_feature_weight > 0 and teacher_feature_channels is None:
            raise ValueError("distill_feature_weight > 0 needs teacher_feature_channels: the channels of the feature "
                             "map the teacher returns beside its logits (EfficientNet-B3: 1536)")
        self.describe(arch, in_channels, num_classes, dims)
        super().__init__()
        # Not a submodule: Lightning's train()/to() and the checkpoint leave it alone (an exported graph refuses
        # train()); training_step moves it to the batch's device.
        self.__dict__["teacher"] = load_teacher(teacher) if teacher is not None else None

    @property
    def feature_distillation(self) -> bool:
        """Whether the feature smooth-L1 term is on (a teacher and ``distill_feature_weight > 0``)."""
        return self.hparams.teacher is not None and self.hparams.distill_feature_weight > 0

    def configure_models(self) -> None:
        r = self.record
        self.network = build_network(self.arch, r["in_channels"], r["outputs"], r["dims"])
        self.feature_projection = None
        if self.feature_distillation:
            conv = nn.Conv1d if r["dims"] == 1 else nn.Conv2d
            channels = self.network.classifier.in_features  # the pre-pool feature map's
            self.feature_projection = conv(channels, self.hparams.teacher_feature_channels, 1)
            with torch.no_grad():  # ZenNAS: the projection starts near 0 (network_weight_zero_init)
                nn.init.normal_(self.feature_projection.weight, std=1e-4 / math.sqrt(channels))
                nn.init.zeros_(self.feature_projection.bias)

    def trained_modules(self) -> list[nn.Module]:
        return [self.network] + ([self.feature_projection] if self.feature_projection is not None else [])

    def configure_losses(self) -> None:
        self.criterion = self.task.loss() if self.task else nn.CrossEntropyLoss(
            label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> None:
        if self.task is not None:
            self.metric_name = self.task.metric_name
            self.val_metrics, self.test_metrics = self.task.metrics("val/"), self.task.metrics("test/")
        else:
            self.metric_name = "acc"
            self.val_metrics, self.test_metrics = (
                MetricCollection({"acc": MulticlassAccuracy(self.record["outputs"], average="micro")}, prefix=prefix)
                for prefix in ("val/", "test/"))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self._see(x)
        alpha = self.hparams.mixup_alpha
        mixed = alpha > 0 and self.task is None
        if mixed:
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(len(x), device=x.device)
            x = lam * x + (1 - lam) * x[perm]
        features = self.network.forward_features(x) if self.feature_distillation else None
        logits = self(x) if features is None else self.network.classifier(self.network.pool(features))
        if mixed:
            loss = lam * self.criterion(logits, y) + (1 - lam) * self.criterion(logits, y[perm])
        else:
            loss = self.criterion(logits, y)
        if self.teacher is not None:
            loss = loss + self.distillation_loss(x, logits, features)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def distillation_loss(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """The weighted distillation terms for the student's ``logits`` and pre-pool ``features`` on the batch ``x``
        (see the class docstring for the teacher's contract); logs ``train/distill_logit`` and
        ``train/distill_feature``."""
        hp = self.hparams
        if next(self.teacher.parameters(), x).device != x.device:
            self.teacher.to(x.device)
        with torch.no_grad():
            out = self.teacher(x)
        teacher_logits, teacher_features = (out, None) if isinstance(out, torch.Tensor) else tuple(out)[:2]
        t = hp.distill_temperature
        soft_ce = -((teacher_logits / t).softmax(-1) * (logits / t).log_softmax(-1)).sum(-1).mean() * t * t
        self.log("train/distill_logit", soft_ce)
        loss = hp.distill_logit_weight * soft_ce
        if features is not None:
            if teacher_features is None:
                raise ValueError("distill_feature_weight > 0: the teacher returned logits only; export a teacher whose "
                                 "forward returns (logits, features before global pooling)")
            if teacher_features.shape[1] != hp.teacher_feature_channels or teacher_features.dim() != features.dim():
                raise ValueError(f"the teacher's features have shape {tuple(teacher_features.shape[1:])}, expected "
                                 f"{hp.teacher_feature_channels} channels (teacher_feature_channels) and "
                                 f"{features.dim() - 2}-D maps like the student's {tuple(features.shape[1:])}")
            if teacher_features.shape[2:] != features.shape[2:]:
                mode = "linear" if features.dim() == 3 else "bilinear"
                teacher_features = F.interpolate(teacher_features, size=features.shape[2:], mode=mode)
            feature = F.smooth_l1_loss(self.feature_projection(features), teacher_features)
            self.log("train/distill_feature", feature)
            loss = loss + hp.distill_feature_weight * feature
        return loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        for key in [k for k in checkpoint.get("state_dict", {}) if k.startswith("teacher.")]:
            del checkpoint["state_dict"][key]  # older checkpoints stored the teacher's weights

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
        weight_init, bn_eps: as :class:`ClassifierModule`'s.

    Logs ``{train,val,test}/loss`` and ``{val,test}/<metric>`` for each of the task's metrics (Cosmic: the headline
    ``one_minus_auroc`` and ``fnr``).
    """

    kind = "dense"

    def __init__(self, arch: str | dict[str, Any], task: str = "darcy_flow", lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 5e-4, warmup_epochs: float = 1.0, bn_momentum: float | None = None,
                 weight_init: str | None = None, bn_eps: float | None = None):
        self.task = nb360_task(task)
        if not self.task.dense:
            raise ValueError(f"task: {task!r} is not dense; train it with lightning_nas.models.ClassifierModule")
        self.describe(arch, self.task.input_shape[0], self.task.num_outputs, self.task.dims)
        super().__init__()

    def configure_models(self) -> None:
        r = self.record
        self.network = DenseGraphNet(self.arch, r["in_channels"], r["outputs"], r["dims"])

    def configure_losses(self) -> None:
        self.criterion = self.task.loss()

    def configure_metrics(self) -> None:
        self.metric_name = self.task.metric_name
        self.val_metrics, self.test_metrics = self.task.metrics("val/"), self.task.metrics("test/")

    def training_step(self, batch, batch_idx):
        x, y = batch
        self._see(x)
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss


@contextlib.contextmanager
def _weights_only_unpickling(path: Path):
    """While loading ``path``: every ``torch.load`` is weights-only and plain ``pickle.loads`` refuses. ``torch.export
    .load`` retries what the weights-only loader refuses with ``weights_only=False``, and unpickles custom-object
    constants with ``pickle.loads`` — either could run code from a crafted file."""
    real_load, real_loads = torch.load, pickle.loads

    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(f"{path}: holds pickled Python objects, which could run code; export the teacher "
                                     "without custom objects, or as TorchScript (.pt)")

    torch.load, pickle.loads = weights_only_load, refuse
    try:
        yield
    finally:
        torch.load, pickle.loads = real_load, real_loads


def load_teacher(path: str | Path) -> nn.Module:
    """A frozen teacher network from a TorchScript or ``torch.export`` file (no Python code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher: no file at {path}; export the teacher once, e.g. with "
                                "torch.jit.trace(model, example).save('teacher.pt') or "
                                "torch.export.save(torch.export.export(model, "
                                "(example,)), 'teacher.pt2')")
    if path.suffix == ".pt2":  # an exported graph: its train/eval behaviour was fixed when it was exported
        with _weights_only_unpickling(path):
            teacher = torch.export.load(path).module()
    else:
        with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; its files still load
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
            teacher = torch.jit.load(path, map_location="cpu").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
