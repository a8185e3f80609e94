"""Final model selection by brief training (paper §3.3 "final model selection"; Table 2 trains the top N = 10
candidates on CIFAR): the proxy ranks the candidates, the best ``top_n`` of them are trained for a few epochs on the
task's training split, and the one with the best *validation* metric is kept — test data is never looked at.

Each candidate trains with an evaluate config (``configs/evaluate/<task>.yaml``: its data module, model settings and
trainer) in ``<out>/candidate_<i>``: ``max_epochs`` from ``epochs``, the seed from ``seed`` (every candidate gets the
same one), no checkpoints, its W&B run named ``select-<i>`` when the config has a W&B logger (its curves). The
score is the best validation value of the config's monitored metric over the epochs (its checkpoint callback's
``monitor``/``mode``; default: the model's ``val/<metric_name>``, higher is better).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import yaml

from .space.arch import Arch

_CHECKPOINT_CLASSES = ("ModelCheckpoint", "ResumableCheckpoint")


@dataclass
class SelectConfig:
    """Settings of the training step of final selection.

    Args:
        top_n: candidates trained (the proxy's best ``top_n``); 0 keeps the proxy's best without training.
        config: the evaluate config the candidates train with (data, model settings, trainer); required when
            ``top_n > 0``.
        epochs: training epochs per candidate.
        seed: the seed of every candidate's training (same data order and initialisation scheme for all).
        set: extra settings as ``{dotted.key: value}`` over the config (e.g. ``{data.init_args.image_size: 32}``).
    """

    top_n: int = 0
    config: str | None = None
    epochs: int = 3
    seed: int = 0
    set: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.top_n < 0 or self.epochs < 1:
            raise ValueError(f"select: top_n must be ≥ 0 and epochs ≥ 1 (got {self.top_n}, {self.epochs})")
        if self.top_n > 0:
            if self.config is None:
                raise ValueError("select.config: give the evaluate config the candidates train with, e.g. "
                                 "configs/evaluate/digits.yaml (or set select.top_n: 0)")
            if not Path(self.config).is_file():
                raise FileNotFoundError(f"select.config: {self.config} does not exist; evaluate configs are in "
                                        "configs/evaluate/")


class _ValHistory(L.Callback):
    """The monitored validation value after every validation epoch (sanity checks excluded)."""

    def __init__(self, key: str):
        self.key, self.values = key, []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self.key in trainer.callback_metrics:
            self.values.append(float(trainer.callback_metrics[self.key]))


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def training_config(base: dict, arch_path: Path, root: Path, name: str, seed: int, epochs: int | None = None,
                    overrides: dict | None = None) -> tuple[dict, str | None, str]:
    """An evaluate config (a parsed YAML tree) made to train ``arch_path`` in ``root`` with ``seed`` (and ``epochs``
    when given): no checkpoint callback (``enable_checkpointing: false``), its W&B run (if any) named ``name`` and
    saved under ``root``. Returns the tree and the monitored key and mode its checkpoint callback named."""
    tree = copy.deepcopy(base)
    monitor, mode = None, "max"
    trainer = tree.setdefault("trainer", {})
    callbacks = []
    listed = trainer.get("callbacks") or []
    for callback in listed if isinstance(listed, list) else [listed]:
        kind = str(callback.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(callback, dict) else ""
        if kind in _CHECKPOINT_CLASSES:
            monitor = callback.get("init_args", {}).get("monitor", monitor)
            mode = callback.get("init_args", {}).get("mode", mode)
            continue  # no checkpoints: a candidate's score is its validation history, a comparison tests the last
        callbacks.append(callback)
    trainer["callbacks"] = callbacks
    trainer.update({"default_root_dir": str(root), "enable_checkpointing": False})
    if epochs is not None:
        trainer["max_epochs"] = epochs
    logger = trainer.get("logger")
    if isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("WandbLogger"):
        logger.setdefault("init_args", {}).update({"name": name, "save_dir": str(root)})
    tree["seed_everything"] = seed
    tree.setdefault("model", {}).setdefault("init_args", {})["arch"] = str(arch_path)
    for key, value in (overrides or {}).items():
        _set(tree, key, value)
    return tree, monitor, mode


def candidate_config(config: SelectConfig, arch_path: Path, root: Path, index: int) -> tuple[dict, str | None, str]:
    """The evaluate config of candidate ``index``, and the monitored key and mode its checkpoint callback names."""
    base = yaml.safe_load(Path(config.config).read_text())
    return training_config(base, arch_path, root, f"select-{index}", config.seed, config.epochs, config.set)


def train_candidates(archs: list[Arch], config: SelectConfig, out: Path, log=print) -> list[dict]:
    """Train each architecture briefly (see the module docstring); one dict per candidate, in order: ``val_metric``
    (its best validation value), ``val_metric_name``, ``mode``, ``history`` (every epoch's value), ``seconds``."""
    from .lightning_cli import EvaluateCLI

    results = []
    for i, arch in enumerate(archs):
        root = out / f"candidate_{i}"
        root.mkdir(parents=True, exist_ok=True)
        arch.save(root / "arch.json")
        tree, monitor, mode = candidate_config(config, root / "arch.json", root, i)
        start = time.perf_counter()
        cli = EvaluateCLI(args=tree, run=False)
        key = monitor or f"val/{getattr(cli.model, 'metric_name', 'acc')}"
        history = _ValHistory(key)
        cli.trainer.callbacks.append(history)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if not history.values:
            raise RuntimeError(f"select: candidate {i} logged no {key!r} during validation; check the monitor of "
                               f"{config.config}")
        best = max(history.values) if mode == "max" else min(history.values)
        results.append({"val_metric": best, "val_metric_name": key, "mode": mode, "history": history.values,
                        "seconds": round(time.perf_counter() - start, 2)})
        log(f"select: candidate {i + 1}/{len(archs)}: best {key} {best:.4f} in {config.epochs} epochs")
    return results


def best_index(results: list[dict]) -> int:
    """The candidate with the best validation value (ties: the proxy's better-ranked one, i.e. the first)."""
    sign = 1 if results[0]["mode"] == "max" else -1
    return max(range(len(results)), key=lambda i: (sign * results[i]["val_metric"], -i))
