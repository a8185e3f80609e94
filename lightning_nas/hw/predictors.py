"""Latency (and energy) predictors per device, trained from few measurements (issue [hw]).

Three predictors over a feature matrix ``X`` (one row per network) and, optionally, ``S``: the same networks'
measured or predicted values on *other* devices (the source devices of a transfer):

- :class:`LookupTable` — nn-Meter/FBNet style: the network's cost is a sum of per-unit costs, ``y ≈ X_lut · c`` with
  ``c ≥ 0`` (non-negative least squares). On NB201 the units are op occurrences (each op of the cell repeated over
  the 15 cells, counted over all six edges and over the live ones, plus the cell's additions); on GraphNet networks
  they are MACs, output elements and kernels per layer kind (:func:`network_features`).
- :class:`SourceTransfer` — HELP's setting (an unseen device adapted from ~10 measurements, the other devices as its
  embedding): ``log y ≈ a + Σ_s w_s log S_s``, ridge with its strength chosen by leave-one-out on the samples seen.
- :class:`Boosted` — a learned predictor over the cell graph (the six edges' ops one-hot, the live-op counts) or the
  network features, with the source devices' values as extra inputs: gradient-boosted trees on ``log y``.

:func:`fit_predictor` fits every predictor the sample size allows and keeps the one with the smallest
cross-validated error on the samples it was given (never on the cells it is judged on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from ..space.nb201 import cell_from_nb201, parse_nb201

NB201_OP_NAMES = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect")
_LIVE_NAMES = {"nor_conv_3x3": "conv_k3", "nor_conv_1x1": "conv_k1", "avg_pool_3x3": "avg_pool_k3",
               "skip_connect": "skip"}
NB201_LUT_COLUMNS = 10
"""The first columns of :func:`nb201_features` (a constant, op counts over all and over live edges, additions) are
the lookup table's units; the positional one-hot after them is for the learned predictor."""


def nb201_features(arch_str: str) -> np.ndarray:
    """Features of an NB201 cell: ``[1, count of each op over the six edges (4), count of each op on the live edges
    (4), live additions, one-hot of each edge's op (6 × 4)]``. Live edges are those on an input → output path (the
    GraphNet cell's op nodes); additions are the live op nodes' extra inputs (in-degree − 1 summed)."""

    ops = [op for _, _, op in parse_nb201(arch_str)]
    counts = [ops.count(name) for name in NB201_OP_NAMES]
    try:
        cell = cell_from_nb201(arch_str)
        live = [cell.ops.count(_LIVE_NAMES[name]) for name in NB201_OP_NAMES]
        adds = sum(max(0, len(p) - 1) for p in cell.predecessors)
    except ValueError:  # no input → output path: nothing in the cell computes anything that reaches the output
        live, adds = [0] * 4, 0
    onehot = [float(op == name) for op in ops for name in NB201_OP_NAMES]
    return np.array([1.0, *counts, *live, adds, *onehot], dtype=float)


_NETWORK_FEATURES = ("constant", "dense_conv_mmacs", "pointwise_conv_mmacs", "depthwise_conv_mmacs",
                     "conv_out_melements", "convs", "pool_melements", "pools", "norm_act_melements", "norm_acts",
                     "linear_mmacs", "layers", "add_melements", "adds")
NETWORK_LUT_COLUMNS = len(_NETWORK_FEATURES)


def run_hooked(model: nn.Module, input_shape: tuple[int, ...], hooks: list[tuple[nn.Module, object]]) -> None:
    """One eval-mode, inference-mode forward pass of ``model`` on a zero sample of ``input_shape`` with the forward
    ``hooks`` ``(module, fn)`` registered; hooks are removed and the model's mode restored afterwards."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def network_features(model: nn.Module, input_shape: tuple[int, ...]) -> np.ndarray:
    """Kernel-level features of ``model`` on one sample of ``input_shape`` (one forward pass with hooks): MACs of
    dense, pointwise and depthwise convolutions (millions), conv output elements, pooling and norm/activation
    elements (millions), the cells' tensor additions (millions of elements) and how many kernels of each kind run —
    the units of a per-layer latency lookup table."""
    from ..space.network import CellBlock

    f = dict.fromkeys(_NETWORK_FEATURES, 0.0)
    f["constant"] = 1.0

    def cell_hook(module, _inputs, output):  # every node sums its inputs: in-degree − 1 additions of the output size
        adds = sum(max(0, len(p) - 1) for p in module.inputs[1:])
        f["add_melements"] += adds * output.numel() / 1e6
        f["adds"] += adds

    def hook(module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        n = output.numel()
        f["layers"] += 1
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            k = math.prod(module.kernel_size)
            macs = n * module.in_channels // module.groups * k / 1e6
            if module.groups > 1:
                f["depthwise_conv_mmacs"] += macs
            elif k == 1:
                f["pointwise_conv_mmacs"] += macs
            else:
                f["dense_conv_mmacs"] += macs
            f["conv_out_melements"] += n / 1e6
            f["convs"] += 1
        elif isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.MaxPool1d | nn.MaxPool2d | nn.AdaptiveAvgPool1d
                        | nn.AdaptiveAvgPool2d):
            f["pool_melements"] += n / 1e6
            f["pools"] += 1
        elif isinstance(module, nn.Linear):
            f["linear_mmacs"] += n * module.in_features / 1e6
        elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.ReLU | nn.ReLU6 | nn.GELU | nn.SiLU
                        | nn.Sigmoid | nn.Hardswish):
            f["norm_act_melements"] += n / 1e6
            f["norm_acts"] += 1
        else:
            f["layers"] -= 1  # containers and identities run no kernel of their own

    run_hooked(model, input_shape, [(m, hook) for m in model.modules() if not list(m.children())]
               + [(m, cell_hook) for m in model.modules() if isinstance(m, CellBlock)])
    return np.array([f[name] for name in _NETWORK_FEATURES], dtype=float)


def _log_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(np.log(np.maximum(prediction, 1e-9)) - np.log(truth))))


@dataclass
class LatencyPredictor:
    """Base: ``fit(X, y, S)`` then ``predict(X, S)``; ``S`` (source devices' values) is ignored by predictors that
    do not use it. ``columns``: how many leading columns of ``X`` the predictor reads (``None``: all)."""

    columns: int | None = None
    name: str = field(default="", init=False)

    def _x(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, float)
        return X[:, : self.columns] if self.columns else X

    def fit(self, X, y, S=None) -> LatencyPredictor:
        raise NotImplementedError

    def predict(self, X, S=None) -> np.ndarray:
        raise NotImplementedError


@dataclass
class LookupTable(LatencyPredictor):
    """``y ≈ X · c``, ``c ≥ 0`` (a per-unit cost table summed over the network), fitted on relative errors
    (``Σ ((X·c − y) / y)²``): a budget is a ratio, and small networks count as much as large ones."""

    coef: np.ndarray | None = None

    def __post_init__(self):
        self.name = "lookup-table"

    def fit(self, X, y, S=None) -> LookupTable:
        X, y = self._x(X), np.asarray(y, float)
        scale = np.maximum(np.abs(X).max(axis=0), 1e-12)  # NNLS is scale-sensitive only numerically
        coef, _ = nnls(X / scale / y[:, None], np.ones_like(y), maxiter=50 * X.shape[1])
        self.coef = coef / scale
        return self

    def predict(self, X, S=None) -> np.ndarray:
        return self._x(X) @ self.coef


@dataclass
class SourceTransfer(LatencyPredictor):
    """``log y ≈ a + Σ_s w_s log S_s`` (ridge; strength by leave-one-out on the samples seen)."""

    model: object = None

    def __post_init__(self):
        self.name = "source-transfer"

    def fit(self, X, y, S=None) -> SourceTransfer:
        from sklearn.linear_model import RidgeCV

        if S is None:
            raise ValueError("source-transfer needs the source devices' values S")
        self.model = RidgeCV(alphas=np.logspace(-4, 2, 13)).fit(np.log(S), np.log(y))
        return self

    def predict(self, X, S=None) -> np.ndarray:
        return np.exp(self.model.predict(np.log(S)))


@dataclass
class Boosted(LatencyPredictor):
    """Gradient-boosted trees on ``log y`` over ``X`` (and ``log S`` when sources are given)."""

    seed: int = 0
    model: object = None
    uses_sources: bool = False

    def __post_init__(self):
        self.name = "boosted"

    def _inputs(self, X, S):
        X = self._x(X)
        return np.hstack([X, np.log(S)]) if self.uses_sources else X

    def fit(self, X, y, S=None) -> Boosted:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.uses_sources = S is not None
        self.model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, random_state=self.seed)
        self.model.fit(self._inputs(X, S), np.log(y))
        return self

    def predict(self, X, S=None) -> np.ndarray:
        return np.exp(self.model.predict(self._inputs(X, S)))




def cross_validated_error(make, X, y, S=None, folds: int = 5, seed: int = 0) -> float:
    """Mean |log(prediction / y)| of ``make()`` over ``folds`` folds (leave-one-out when ``len(y) ≤ 20``)."""
    n = len(y)
    k = n if n <= 20 else folds
    order = np.random.default_rng(seed).permutation(n)
    errors = []
    for i in range(k):
        test = order[i::k]
        train = np.setdiff1d(order, test)
        S_train = None if S is None else S[train]
        model = make().fit(X[train], y[train], S_train)
        errors.append(_log_error(model.predict(X[test], None if S is None else S[test]), y[test]))
    return float(np.mean(errors))


def fit_predictor(X, y, S=None, lut_columns: int | None = None, seed: int = 0) -> LatencyPredictor:
    """The predictor with the smallest cross-validated log error on ``(X, y, S)``, refitted on all of them: the lookup
    table, the source transfer (when ``S`` is given) and, from 100 samples on, the boosted trees. ``lut_columns``:
    the lookup table's leading columns."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    S = None if S is None else np.asarray(S, float)
    if len(y) < 3:
        raise ValueError(f"a latency predictor needs at least 3 measurements, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("latency measurements must be positive and finite")
    makers = {"lookup-table": lambda: LookupTable(columns=lut_columns)}
    if S is not None:
        makers["source-transfer"] = SourceTransfer
    if len(y) >= 100:
        makers["boosted"] = lambda: Boosted(seed=seed)
    if len(makers) == 1:
        return makers["lookup-table"]().fit(X, y, S)
    scores = {name: cross_validated_error(make, X, y, S, seed=seed) for name, make in makers.items()}
    return makers[min(scores, key=scores.get)]().fit(X, y, S)

