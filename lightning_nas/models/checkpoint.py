"""Loading a trained LightningModule of this package from a checkpoint someone may have sent you: weights only
(``torch.load(weights_only=True)`` never unpickles code), with the search-space record checked by the caller."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


def load_module(cls: type[L.LightningModule], path: str | Path, map_location, train_hint: str) -> L.LightningModule:
    """``cls`` rebuilt from its saved hyperparameters and weights, ``on_load_checkpoint`` applied, in eval mode.
    Raises ``FileNotFoundError`` (naming ``train_hint``) or ``ValueError`` for a checkpoint of something else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train one with {train_hint}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated file, or one holding objects that only unpickling code could restore
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or "lightning_nas" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not a {cls.__name__} checkpoint of lightning_nas (no search-space record)")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # LightningCLI's
    model = cls(**hparams)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit {cls.__name__}: {err}") from err
    model.on_load_checkpoint(checkpoint)
    return model.eval()
