"""Loading a trained LightningModule of this package from a checkpoint someone may have sent you: weights only
(``torch.load(weights_only=True)`` never unpickles code), of the kind the caller asked for, with the search-space
record checked by the caller.

Every module of this package saves a ``lightning_nas`` record beside its weights (``on_save_checkpoint``), and the
record tells the kinds apart — :func:`checkpoint_kind` is the one place that reads it, so ``--gvae <a classifier
checkpoint>`` is refused with both kinds named instead of a ``TypeError`` about unexpected keyword arguments."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

KINDS: dict[str, tuple[str, str, str]] = {
    "gvae": ("GVAEModule", "G-VAE", "python -m lightning_nas fit --config configs/gvae.yaml"),
    "ccnf": ("CCNFModule", "CCNF", "python -m lightning_nas fit --config configs/ccnf.yaml"),
    "sg": ("SGModule", "SG (structure generator)", "python -m lightning_nas fit --config configs/sg.yaml"),
    "classifier": ("ClassifierModule", "trained network (ClassifierModule)", "make evaluate TASK=..."),
    "dense": ("DenseModule", "trained network (DenseModule)", "make evaluate TASK=darcy_flow"),
}
"""kind → (module class, what it is in words, how to train one)."""


def checkpoint_kind(checkpoint: dict) -> str | None:
    """The kind (a key of :data:`KINDS`) of a loaded checkpoint dict, read from its ``lightning_nas`` record:
    trained networks name their kind; the G-VAE's record holds the ZC normaliser, the SG's its tokenizer and the
    CCNF's only the latent space. ``None`` when there is no such record (not a checkpoint of this package)."""
    record = checkpoint.get("lightning_nas") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict):
        return None
    if record.get("kind") in ("classifier", "dense"):
        return record["kind"]
    if "zc_normaliser" in record:
        return "gvae"
    if "tokenizer" in record:
        return "sg"
    if "space" in record:
        return "ccnf"
    return None


def kind_of_class(cls: type) -> str | None:
    """The kind of checkpoint that ``cls`` (or the package class it derives from) saves."""
    names = {name: kind for kind, (name, _, _) in KINDS.items()}
    return next((names[k.__name__] for k in cls.__mro__ if k.__name__ in names), None)


def check_kind(checkpoint: dict, cls: type, path: str | Path) -> None:
    """Raise ``ValueError`` naming both kinds when ``checkpoint`` (loaded from ``path``) is not one that ``cls``
    can be rebuilt from."""
    expected, found = kind_of_class(cls), checkpoint_kind(checkpoint)
    if expected is None or found == expected:
        return
    name, what, hint = KINDS[expected]
    if found is None:
        raise ValueError(f"{path} is not a {what} checkpoint of lightning_nas (no lightning_nas record of a known "
                         f"kind); pass a {name} checkpoint, trained with {hint}")
    raise ValueError(f"{path} is a {KINDS[found][1]} checkpoint, but a {what} checkpoint ({name}) is expected here; "
                     f"pass the {what} checkpoint (train one with {hint})")


def read_weights_only(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``, every failure one paragraph (``ValueError``) naming the file and what
    to do: an empty file, a truncated or foreign one, or one the weights-only loader refuses because it holds Python
    objects that only unpickling code could restore. torch's own advice to retry with ``weights_only=False`` — the
    one thing not to do with a file from someone else — is never passed on."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there; give the path of a .ckpt that lightning-nas wrote")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), likely a save that was interrupted; delete it and use another "
                         "checkpoint of the run (e.g. last.ckpt) or train again")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, AttributeError, TypeError) as err:
        if "weights only" in str(err).lower() or isinstance(err, pickle.UnpicklingError):
            raise ValueError(f"{path} was refused: it holds pickled Python objects beyond tensors and plain "
                             "containers, and loading those could run code, so lightning-nas never does. Use a "
                             "checkpoint that lightning-nas wrote (its stages and `evaluate` save weights-only "
                             "loadable files), or re-save the weights as a plain state_dict") from None
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}); use a .ckpt that "
                         "lightning-nas wrote") from None
    except (RuntimeError, EOFError, OSError) as err:  # a cut-off zip, another format
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable torch checkpoint — truncated or another format ({first}); "
                         "copy it again or use another checkpoint of the run (e.g. last.ckpt)") from None


def load_module(cls: type[L.LightningModule], path: str | Path, map_location, train_hint: str) -> L.LightningModule:
    """``cls`` rebuilt from its saved hyperparameters and weights, ``on_load_checkpoint`` applied, in eval mode.
    Raises ``FileNotFoundError`` (naming ``train_hint``) or ``ValueError`` for an unreadable file or a checkpoint
    of another kind (:func:`check_kind`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train one with {train_hint}")
    checkpoint = read_weights_only(path, map_location)
    if not isinstance(checkpoint, dict) or "lightning_nas" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not a {cls.__name__} checkpoint of lightning_nas (no search-space record)")
    check_kind(checkpoint, cls, path)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # LightningCLI's
    try:
        model = cls(**hparams)
    except TypeError as err:  # settings this version of the class does not take
        raise ValueError(f"{path}: its saved settings do not fit {cls.__name__} ({err}); retrain it with "
                         f"{train_hint}") from err
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit {cls.__name__}: {err}") from err
    model.on_load_checkpoint(checkpoint)
    return model.eval()
