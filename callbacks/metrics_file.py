"""The one writer of a training stage's ``metrics.json`` (G-VAE, CCNF, SG)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import lightning as L


def provenance() -> dict:
    """What produced a result: the versions of lightning-nas, torch, Lightning and Python."""
    import torch

    from lightning_nas import __version__

    return {"lightning_nas": __version__, "torch": torch.__version__, "lightning": L.__version__,
            "python": platform.python_version()}


class MetricsFile(L.Callback):
    """After every validation (not the sanity check), rank 0 writes ``<trainer.default_root_dir>/metrics.json``:
    ``epoch``, the module's ``epoch_metrics`` (the dict its ``on_validation_epoch_end`` computed) and
    ``provenance``. :class:`lightning_nas.lightning_cli.NASCLI` adds it to every fit that lacks one, so a stage's
    metrics file is written in one place whatever the module."""

    def __init__(self, filename: str = "metrics.json"):
        self.filename = filename

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = getattr(pl_module, "epoch_metrics", None)
        if trainer.sanity_checking or not trainer.is_global_zero or metrics is None:
            return
        out = Path(trainer.default_root_dir) / self.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({"epoch": pl_module.current_epoch, **metrics, "provenance": provenance()},
                                  indent=2))
        os.replace(tmp, out)
