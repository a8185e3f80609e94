"""Small helpers shared across lightning-nas."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved_state(model: nn.Module):
    """Restore every module's train/eval mode, every buffer (e.g. BN running statistics) and every parameter's
    ``requires_grad`` flag of ``model`` on exit, so measuring a caller's model leaves it as it was given."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
