"""LightningCLI of lightning-nas: Lightning's own commands for any module, plus ``evaluate`` (fit, then test)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lightning.pytorch.cli import LightningCLI


class NASCLI(LightningCLI):
    """LightningCLI with reproducible defaults: seed 0 unless the config says otherwise, a config snapshot
    that overwrites the previous one of the same run directory, and W&B offline unless ``WANDB_MODE`` is set
    (``online`` to sync, ``disabled`` to switch W&B off)."""

    def __init__(self, *args, **kwargs):
        os.environ.setdefault("WANDB_MODE", "offline")
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(None, None, *args, **kwargs)


def evaluate(args: list[str]) -> dict:
    """Fit, then test the best checkpoint (by the checkpoint callback's monitor, else the last weights)."""
    cli = NASCLI(args=args, run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    results = trainer.test(model, datamodule=data, ckpt_path=best, weights_only=True)[0]
    metrics = {k.replace("/", "_"): float(v) for k, v in results.items()}
    metrics.update(
        {
            "fit_seconds": round(fit_seconds, 2),
            "epochs": trainer.current_epoch,
            "checkpoint": best or "",
        }
    )
    if hasattr(model, "cost"):
        inputs = next(iter(data.test_dataloader()))[0]
        metrics.update(model.cost(tuple(inputs.shape[1:])))
    out = Path(trainer.default_root_dir) / "metrics.json"
    if trainer.is_global_zero:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2))
        summary = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
        print(f"\n{type(data).__name__}: {summary}  (metrics: {out})")
    return metrics
