"""LightningCLI of lightning-nas: Lightning's own commands for any module, plus ``evaluate`` (fit, then test)."""

from __future__ import annotations

import json
import os
import time
import warnings
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
        with warnings.catch_warnings():  # our main() passes the parsed command line as `args`, which LightningCLI
            # questions when sys.argv is not empty; sys.argv itself must stay, DDP's launcher re-runs it
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
            super().__init__(None, None, *args, **kwargs)


def _pop_option(args: list[str], name: str) -> tuple[list[str], str | None]:
    """``args`` without ``--name VALUE`` / ``--name=VALUE``, and that value."""
    rest, value, i = [], None, 0
    while i < len(args):
        if args[i] == name and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if args[i].startswith(name + "="):
            value = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return rest, value


def evaluate(args: list[str]) -> dict:
    """Fit (resuming from ``--ckpt_path``, e.g. ``last``, when given), then test the best checkpoint (by the
    checkpoint callback's monitor, else the last weights) and write ``<default_root_dir>/metrics.json``: ``task``,
    ``test_metric`` and its ``test_metric_name``, every test value, ``params``/``macs``/``flops``, ``epochs``,
    ``seconds``."""
    args, ckpt_path = _pop_option(args, "--ckpt_path")
    cli = NASCLI(args=args, run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    results = trainer.test(model, datamodule=data, ckpt_path=best, weights_only=True)[0]
    name = getattr(model, "metric_name", "acc")
    task = getattr(data, "task", None)
    metrics = {
        "task": getattr(task, "name", None) or getattr(data, "task_name", type(data).__name__),
        "test_metric_name": name,
        "test_metric": float(results[f"test/{name}"]) if f"test/{name}" in results else None,
        **{k.replace("/", "_"): float(v) for k, v in results.items()},
        "fit_seconds": round(fit_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "epochs": trainer.current_epoch,
        "checkpoint": best or "",
    }
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


main = evaluate  # the `evaluate` command's entry point (lightning_nas.cli dispatches to <module>.main)
