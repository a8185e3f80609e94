"""The eight NAS-Bench-360 tasks (Tu et al. 2022) as the models see them: tensor shapes, the training loss and the
evaluation metrics, and the published files the data module reads (:mod:`datamodules.nb360` reads them; nothing here
touches data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from .objectives import (
    ContactDistanceMAE,
    FalseNegativeRate,
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    MultilabelAUROCOfFloatTargets,
    OneMinusPixelAUROC,
    RelativeL2Error,
    RelativeL2Loss,
)


@dataclass(frozen=True)
class NB360Task:
    """A NAS-Bench-360 task: tensor shapes, the published files read from ``data_dir``, the training loss and the
    evaluation metrics. ``metric``/``metric_name`` is the headline metric — the number the paper's tables report, the
    checkpoint monitor and ``metrics.json``'s ``test_metric`` (``metric_direction``: "min" or "max" is better);
    ``extra_metrics`` are (name, factory) pairs logged beside it (Cosmic: 1 − AUROC headline, FNR beside it).
    :meth:`metrics` builds them all. ``num_outputs`` counts classes or labels, or output channels per pixel for
    ``dense`` tasks, whose outputs keep the input's resolution."""

    name: str
    input_shape: tuple[int, ...]
    num_outputs: int
    dense: bool
    files: tuple[str, ...]
    loss: Callable[[], nn.Module]
    metric: Callable[[], Metric]
    metric_name: str
    metric_direction: str
    extra_metrics: tuple[tuple[str, Callable[[], Metric]], ...] = ()

    @property
    def dims(self) -> int:
        """1 for sequences, 2 for images and maps."""
        return len(self.input_shape) - 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The headline metric's name, then the extra metrics' names."""
        return (self.metric_name, *(name for name, _ in self.extra_metrics))

    def metrics(self, prefix: str | None = None) -> MetricCollection:
        """Fresh instances of every metric of the task, keyed by name (headline first), ``prefix`` before each key:
        update it with (outputs, targets), log it with ``LightningModule.log_dict``."""
        metrics = {self.metric_name: self.metric(), **{name: make() for name, make in self.extra_metrics}}
        return MetricCollection(metrics, prefix=prefix, compute_groups=False)


_ACCURACY = {"metric_name": "accuracy", "metric_direction": "max"}  # the tables report error % = 100·(1 − accuracy)

NB360_TASKS: dict[str, NB360Task] = {task.name: task for task in (
    NB360Task(name="spherical", input_shape=(3, 60, 60), num_outputs=100, dense=False, files=("s2_cifar100.gz",),
              loss=nn.CrossEntropyLoss, metric=partial(MulticlassAccuracy, num_classes=100, average="micro"),
              **_ACCURACY),
    NB360Task(name="darcy_flow", input_shape=(3, 85, 85), num_outputs=1, dense=True,
              files=("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat"),
              loss=RelativeL2Loss, metric=RelativeL2Error, metric_name="relative_l2", metric_direction="min"),
    NB360Task(name="psicov", input_shape=(57, 128, 128), num_outputs=1, dense=True,
              files=("deepcov.lst", "psicov.lst", "deepcov/features", "deepcov/distance", "psicov/features",
                     "psicov/distance"),
              loss=nn.MSELoss, metric=ContactDistanceMAE, metric_name="mae8", metric_direction="min"),
    NB360Task(name="cosmic", input_shape=(1, 128, 128), num_outputs=1, dense=True,
              files=("train_dirs.npy", "test_dirs.npy"), loss=MaskedBCEWithLogitsLoss, metric=OneMinusPixelAUROC,
              metric_name="one_minus_auroc", metric_direction="min", extra_metrics=(("fnr", FalseNegativeRate),)),
    NB360Task(name="ninapro", input_shape=(1, 16, 52), num_outputs=18, dense=False,
              files=tuple(f"{kind}_{split}.npy" for split in ("train", "val", "test") for kind in ("ninapro", "label")),
              loss=FocalLoss, metric=partial(MulticlassAccuracy, num_classes=18, average="micro"), **_ACCURACY),
    NB360Task(name="ecg", input_shape=(1, 1000), num_outputs=4, dense=False, files=("challenge2017.pkl",),
              loss=nn.CrossEntropyLoss, metric=partial(MulticlassF1Score, num_classes=4, average="macro"),
              metric_name="macro_f1", metric_direction="max"),
    NB360Task(name="satellite", input_shape=(1, 46), num_outputs=24, dense=False,
              files=("satellite_train.npy", "satellite_test.npy"), loss=nn.CrossEntropyLoss,
              metric=partial(MulticlassAccuracy, num_classes=24, average="micro"), **_ACCURACY),
    NB360Task(name="deepsea", input_shape=(4, 1000), num_outputs=36, dense=False, files=("deepsea_filtered.npz",),
              loss=lambda: nn.BCEWithLogitsLoss(pos_weight=torch.full((36,), 4.0)),
              metric=partial(MultilabelAUROCOfFloatTargets, num_labels=36, average="macro"), metric_name="auroc",
              metric_direction="max"),
)}
