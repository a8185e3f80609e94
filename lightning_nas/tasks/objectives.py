"""Losses and metrics of NAS-Bench-360 tasks that torch and torchmetrics lack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC, MultilabelAUROC

COSMIC_IGNORE = -1.0
"""Target value of Cosmic pixels that deepCR's ignore mask excludes from the loss and the metric."""


def relative_l2(pred: Tensor, target: Tensor) -> Tensor:
    """Per-sample ‖pred − target‖₂ / ‖target‖₂ over all of a sample's values (FNO's ``LpLoss.rel``)."""
    pred, target = pred.flatten(1), target.flatten(1)
    return (pred - target).norm(dim=1) / target.norm(dim=1)


class RelativeL2Loss(nn.Module):
    """Mean per-sample relative L2 error (the Darcy Flow loss of FNO, NB360 and DASH)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return relative_l2(pred, target).mean()


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017) without class weights: mean of (1 − p_t)^γ · CE."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        return ((1 - torch.exp(-ce)) ** self.gamma * ce).mean()


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits, averaged over the pixels whose target is not :data:`COSMIC_IGNORE`.

    deepCR multiplies prediction and target by ``1 − ignore`` and averages over all pixels; averaging over the kept
    pixels only differs by a per-batch scale.
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        kept = target != COSMIC_IGNORE
        return F.binary_cross_entropy_with_logits(logits[kept], target[kept])


class RelativeL2Error(Metric):
    """Mean per-sample relative L2 error (see :func:`relative_l2`)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("samples", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        errors = relative_l2(pred, target)
        self.total += errors.sum()
        self.samples += errors.numel()

    def compute(self) -> Tensor:
        return self.total / self.samples


class ContactDistanceMAE(Metric):
    """MAE₈ of predicted distance maps (PDNet's ``calc_dist_errors`` on all pairs, as NB360/DASH report it).

    Per map (``…×L×L``, one protein), the mean of |pred − target| over the residue pairs (i, j) with
    j − i ≥ ``min_separation`` and true distance < ``threshold`` Å (NaN targets and the padding value 100 never
    qualify); the metric is the mean over maps with at least one such pair. The default separation 24 is PDNet's
    "long-range" set, the ``mae_lr_d8`` that NB360 and DASH report; ``min_separation=0`` uses every pair i ≤ j.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, threshold: float = 8.0, min_separation: int = 24, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.min_separation = threshold, min_separation
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("maps", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred, target = pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])
        index = torch.arange(target.shape[-1], device=target.device)
        far_enough = index[None, :] - index[:, None] >= self.min_separation  # [i, j]: j − i ≥ min_separation
        pairs = far_enough & (target < self.threshold)
        errors = torch.where(pairs, (pred - target).abs(), 0.0).sum((1, 2))
        counts = pairs.sum((1, 2))
        scored = counts > 0
        self.total += (errors[scored] / counts[scored]).sum()
        self.maps += scored.sum()

    def compute(self) -> Tensor:
        return self.total / self.maps


class FalseNegativeRate(Metric):
    """FN / (TP + FN) over all true cosmic-ray pixels, a pixel being detected when sigmoid(logit) > ``threshold``.

    Ignored pixels (:data:`COSMIC_IGNORE`) are never positives, so they never count.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("detected", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("missed", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        positive = target == 1
        detected = torch.sigmoid(logits) > self.threshold
        self.detected += (positive & detected).sum()
        self.missed += (positive & ~detected).sum()

    def compute(self) -> Tensor:
        return self.missed / (self.detected + self.missed)


class MultilabelAUROCOfFloatTargets(MultilabelAUROC):
    """torchmetrics' ``MultilabelAUROC`` of logits, fed the float 0/1 targets that ``BCEWithLogitsLoss`` needs. The
    logits always go through a sigmoid here: torchmetrics would apply it only to batches with a value outside [0, 1],
    ranking the samples of different batches on different scales."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.sigmoid(), target.long())


class MaskedPixelAUROC(BinaryAUROC):
    """AUROC of per-pixel logits against the 0/1 Cosmic mask over the pixels that are not :data:`COSMIC_IGNORE`
    (torchmetrics' ``BinaryAUROC`` with ``ignore_index``): every kept pixel of every image is one sample.

    The logits always go through a sigmoid before they are stored: torchmetrics would apply it only to batches with a
    value outside [0, 1], ranking the pixels of different batches on different scales. ``thresholds=None`` (the
    default) is exact and keeps every kept pixel's score until ``compute``; an int bins the scores (constant memory).
    """

    def __init__(self, thresholds: int | None = None, **kwargs):
        super().__init__(thresholds=thresholds, ignore_index=int(COSMIC_IGNORE), **kwargs)

    def update(self, logits: Tensor, target: Tensor) -> None:
        super().update(torch.sigmoid(logits.float()), target.long())


class OneMinusPixelAUROC(MaskedPixelAUROC):
    """1 − :class:`MaskedPixelAUROC`, lower is better: the Cosmic number of NAS-Bench-360's tables (and the paper's
    Table 4)."""

    higher_is_better = False

    def compute(self) -> Tensor:
        return 1 - super().compute()
