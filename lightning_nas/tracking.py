"""W&B runs of the stages that are not Lightning fits (zc, cluster, search, generate): one run per stage in the
project ``lightning-nas``, in the pipeline's group when there is one (``WANDB_RUN_GROUP``), offline unless
``WANDB_MODE`` says otherwise, files under the stage's output folder. ``WANDB_MODE=disabled`` turns them off."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = "lightning-nas"


def stage_run(name: str, out_dir: str | Path, settings: dict):
    """A W&B run named ``name`` with ``settings`` as its config, or ``None`` when W&B is disabled."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    # the process-wide default, as NASCLI sets it: wandb's settings singleton keeps the mode of the first run, so a
    # later WandbLogger in the same process (the pipeline) would otherwise ask for an online login
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(project=PROJECT, name=name, dir=str(out_dir), config=settings, mode=os.environ["WANDB_MODE"],
                      reinit="finish_previous")


def log_stage(name: str, out_dir: str | Path, settings: dict, metrics: dict, images: dict[str, Path] | None = None):
    """One finished stage as one W&B run: its settings, its numeric metrics (also as the run summary) and
    pictures (``{key: png path}``; missing files are left out)."""
    run = stage_run(name, out_dir, settings)
    if run is None:
        return
    import wandb

    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    pictures = {k: wandb.Image(str(p)) for k, p in (images or {}).items() if Path(p).is_file()}
    run.log({**numbers, **pictures})
    run.summary.update(numbers)
    run.finish()
