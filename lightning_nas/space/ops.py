"""The 28 operations of the GraphNet micro space (paper App. B) and the op sets built from them.

An op name is ``"<type>_k<kernel>"`` (``"conv_k3"``, ``"mbconv_e6_k5"``, ``"bconv_r0.25_k1"``) or ``"skip"``.
Every op keeps the number of channels and the spatial size (stride 1, padding ``dilation·(k−1)/2``); a cell
changes shape only through its input projection (see :mod:`lightning_nas.space.network`). Each op is built
for 1-D (``Conv1d``/``BatchNorm1d``/``AvgPool1d``) or 2-D data from the same definition.

Compositions follow the authors' code (REFERENCE.md, "Search space as the authors built it"):

- ``conv``: ReLU → Conv(k) → BN.
- ``sep_conv``: ReLU → depthwise Conv(k) → 1×1 Conv → BN (single, not DARTS' doubled version).
- ``dil_conv``: ``sep_conv`` with dilation 2.
- ``mbconv_e{2,3,6}`` / ``bconv_r{0.5,0.25}``: ReLU → 1×1 (C → int(C·e)) → BN → ReLU → depthwise(k) → BN → ReLU
  → [squeeze-excite] → 1×1 → BN, no residual inside the op.
- ``avg_pool``: AvgPool(k, count_include_pad=False) → BN(affine=False). NAS-Bench-201's ``avg_pool_3x3`` has no
  BN; we keep the authors' version for every op set, so NB201 cells embedded here differ from NB201's own
  networks by that BN (it has no parameters).
- ``skip``: identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

KERNELS: tuple[int, ...] = (1, 3, 5)

# Op types in the order of the encoding's one-hot columns (skip last), with the expansion ratio of the
# inverted-bottleneck family.
OP_TYPES: tuple[str, ...] = (
    "avg_pool",
    "conv",
    "sep_conv",
    "dil_conv",
    "mbconv_e2",
    "mbconv_e3",
    "mbconv_e6",
    "bconv_r0.5",
    "bconv_r0.25",
    "skip",
)
_EXPANSION: dict[str, float] = {
    "mbconv_e2": 2.0,
    "mbconv_e3": 3.0,
    "mbconv_e6": 6.0,
    "bconv_r0.5": 0.5,
    "bconv_r0.25": 0.25,
}


@dataclass(frozen=True)
class OpSpec:
    """What an op is: its name, type and kernel (``None`` for skip)."""

    name: str
    type: str
    kernel: int | None


def _all_ops() -> dict[str, OpSpec]:
    ops = {}
    for op_type in OP_TYPES:
        if op_type == "skip":
            ops["skip"] = OpSpec("skip", "skip", None)
            continue
        for k in KERNELS:
            name = f"{op_type}_k{k}"
            ops[name] = OpSpec(name, op_type, k)
    return ops


OPS: dict[str, OpSpec] = _all_ops()

OP_SETS: dict[str, tuple[str, ...]] = {
    "graphnet": tuple(OPS),
    # NAS-Bench-201's four non-zero ops: nor_conv_1x1, nor_conv_3x3, avg_pool_3x3, skip_connect.
    "nb201": ("conv_k1", "conv_k3", "avg_pool_k3", "skip"),
}

NB201_OPS: dict[str, str] = {
    "nor_conv_1x1": "conv_k1",
    "nor_conv_3x3": "conv_k3",
    "avg_pool_3x3": "avg_pool_k3",
    "skip_connect": "skip",
}


def resolve_op_set(op_set: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """An op set by name (``"graphnet"``, ``"nb201"``) or as an explicit list of op names."""
    if isinstance(op_set, str):
        if op_set not in OP_SETS:
            raise ValueError(f"op_set: unknown op set {op_set!r}; known: {sorted(OP_SETS)} or a list of op names")
        return OP_SETS[op_set]
    ops = tuple(op_set)
    if not ops:
        raise ValueError("op_set: an op set needs at least one op")
    for i, name in enumerate(ops):
        if not isinstance(name, str) or name not in OPS:
            raise ValueError(f"op_set[{i}]: unknown op {name!r}; known: {', '.join(OPS)}")
    return ops


def layer_types(dims: int):
    """(Conv, BatchNorm, AvgPool, AdaptiveAvgPool) classes for 1-D or 2-D data."""
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d
    raise ValueError(f"dims: must be 1 or 2, got {dims!r}")


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (reduction 4) used inside mbconv/bconv when ``se=True``."""

    def __init__(self, channels: int, dims: int = 2, reduction: int = 4):
        super().__init__()
        conv, _, _, pool = layer_types(dims)
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            pool(1), conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.gate(x)


def build_op(name: str, channels: int, dims: int = 2, se: bool = False) -> nn.Module:
    """Build op ``name`` for ``channels`` channels on ``dims``-D data; shape in == shape out."""
    if not isinstance(name, str) or name not in OPS:
        raise ValueError(f"op: unknown op {name!r}; known: {', '.join(OPS)}")
    spec = OPS[name]
    conv, bn, avg_pool, _ = layer_types(dims)
    if spec.type == "skip":
        return nn.Identity()
    k = spec.kernel
    if spec.type == "avg_pool":
        return nn.Sequential(
            avg_pool(k, stride=1, padding=k // 2, count_include_pad=False), bn(channels, affine=False)
        )
    if spec.type == "conv":
        return nn.Sequential(nn.ReLU(), conv(channels, channels, k, padding=k // 2, bias=False), bn(channels))
    if spec.type in ("sep_conv", "dil_conv"):
        d = 2 if spec.type == "dil_conv" else 1
        return nn.Sequential(
            nn.ReLU(),
            conv(channels, channels, k, padding=d * (k - 1) // 2, dilation=d, groups=channels, bias=False),
            conv(channels, channels, 1, bias=False),
            bn(channels),
        )
    hidden = max(1, int(channels * _EXPANSION[spec.type]))
    return nn.Sequential(
        nn.ReLU(),
        conv(channels, hidden, 1, bias=False),
        bn(hidden),
        nn.ReLU(),
        conv(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False),
        bn(hidden),
        nn.ReLU(),
        *([SqueezeExcite(hidden, dims)] if se else []),
        conv(hidden, channels, 1, bias=False),
        bn(channels),
    )
