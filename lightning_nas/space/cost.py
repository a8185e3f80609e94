"""Counted, not estimated, cost of a network: parameters, MACs and FLOPs.

MACs and FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter) on one forward
pass of a single sample in eval mode. It counts convolutions (groups and dilation included) and matrix
multiplications (linear layers); BatchNorm, activations, pooling and additions are *not* counted.
``flops = 2 · macs`` (one multiply-accumulate = two floating-point operations). ZenNAS/ZiCo budgets are in
these MACs; the authors' "FLOPs" (ptflops) are 2 × MACs with BN/ReLU/pool included, a few percent more.
``params`` counts every parameter (trainable or not); buffers such as BN running statistics are not parameters.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..utils import preserved_state


def count_cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params", "macs", "flops"}`` of ``model`` for ONE sample of shape ``input_shape`` (no batch dimension:
    ``(C, H, W)`` for 2-D networks, ``(C, L)`` for 1-D). The model's mode, weights and buffers are left unchanged."""
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"input_shape: expected positive sizes without the batch dimension, got {input_shape!r}")
    first = next(iter(model.parameters()), None)
    x = torch.zeros(1, *map(int, shape), device=first.device if first is not None else "cpu",
                    dtype=first.dtype if first is not None else torch.float32)
    with preserved_state(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()
        try:
            model(x)
        except RuntimeError as e:
            raise ValueError(f"input_shape: the model cannot run on a sample of shape {shape} ({e})") from e
    flops = int(counter.get_total_flops())
    return {"params": sum(p.numel() for p in model.parameters()), "macs": flops // 2, "flops": flops}
