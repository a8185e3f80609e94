"""Final model selection by brief training (paper §3.3 "final model selection"; Table 2 trains the top N = 10
candidates on CIFAR): the objective ranks the candidates, the best ``top_n`` of them (:func:`diverse_top`: spread over
the HL architectures, not N CCNF draws of one) are trained briefly on the task's training split, and one is kept —
test data is never looked at. Two ways to rank the trained candidates (``rank``):

- ``val_metric`` (the paper's): ``epochs`` epochs each; the best *validation* value of the config's monitored metric
  over the epochs (its checkpoint callback's ``monitor``/``mode``; default: the model's ``val/<metric_name>``, higher
  is better) wins.
- ``train_loss``: the training-speed estimator (TSE, Ru et al., "Speedy Performance Estimation for Neural
  Architecture Search", NeurIPS 2021): the sum of the training losses over the first ``steps`` optimiser steps of the
  evaluate recipe's own run (scheduled for ``epochs`` epochs: its warm-up and learning rate); the smallest sum wins
  (no validation pass). A network whose gradients explode at initialisation learns slowly or diverges in those
  steps; on the 100 ``random-500k`` networks of ``data/graphnet_digits`` this sum over 20 steps ranks test accuracy
  with Spearman +0.63 after 5 epochs and +0.50 after 15, T-CET +0.16 and −0.08 (``benchmarks/results/select_rank.md``).

Each candidate trains with an evaluate config (``configs/evaluate/<task>.yaml``: its data module, model settings and
trainer) in ``<out>/candidate_<i>``: the seed from ``seed`` (every candidate gets the same one), no checkpoints, its
W&B run named ``select-<i>`` when the config has a W&B logger (its curves; ``train_loss`` runs log nothing).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import yaml

from .space.arch import Arch

_CHECKPOINT_CLASSES = ("ModelCheckpoint", "ResumableCheckpoint")


@dataclass
class SelectConfig:
    """Settings of the training step of final selection.

    Args:
        top_n: candidates trained (the objective's best ``top_n``, spread over HL architectures); 0 keeps the
            objective's best without training.
        config: the evaluate config the candidates train with (data, model settings, trainer); required when
            ``top_n > 0``.
        rank: ``val_metric`` (train ``epochs`` epochs, keep the best validation metric) or ``train_loss`` (the
            training-speed estimator: keep the smallest sum of training losses over the first ``steps`` steps).
        epochs: training epochs per candidate (``val_metric``); the length of the run whose first ``steps`` steps
            ``train_loss`` takes (its warm-up and learning-rate schedule).
        steps: optimiser steps per candidate of ``train_loss``.
        seed: the seed of every candidate's training (same data order and initialisation scheme for all).
        set: extra settings as ``{dotted.key: value}`` over the config (e.g. ``{data.init_args.image_size: 32}``).
    """

    top_n: int = 0
    config: str | None = None
    rank: Literal["val_metric", "train_loss"] = "val_metric"
    epochs: int = 3
    steps: int = 20
    seed: int = 0
    set: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.top_n < 0 or self.epochs < 1 or self.steps < 1:
            raise ValueError(f"select: top_n must be ≥ 0, epochs and steps ≥ 1 (got {self.top_n}, {self.epochs}, "
                             f"{self.steps})")
        if self.rank not in ("val_metric", "train_loss"):
            raise ValueError(f"select.rank: {self.rank!r}; choose val_metric or train_loss")
        if self.top_n > 0:
            if self.config is None:
                raise ValueError("select.config: give the evaluate config the candidates train with, e.g. "
                                 "configs/evaluate/digits.yaml (or set select.top_n: 0)")
            if not Path(self.config).is_file():
                raise FileNotFoundError(f"select.config: {self.config} does not exist; evaluate configs are in "
                                        "configs/evaluate/")


def diverse_top(order: Sequence[int], groups: Sequence[Hashable] | Mapping[int, Hashable], n: int) -> list[int]:
    """The first ``n`` of ``order`` (indices, best first) taken round-robin over ``groups`` (each index's group, e.g.
    its HL architecture): the best of every group before the second of any — so N trained candidates are not N CCNF
    draws of one HL architecture — in ``order`` within each round."""
    rounds: dict[Hashable, int] = {}
    keyed = []
    for position, i in enumerate(order):
        rounds[groups[i]] = rounds.get(groups[i], -1) + 1
        keyed.append((rounds[groups[i]], position, i))
    return [i for _, _, i in sorted(keyed)[:n]]


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


def _candidate(arch: Arch, config: SelectConfig, out: Path, index: int) -> tuple[dict, str | None, str]:
    """Candidate ``index``'s folder ``<out>/candidate_<index>`` with its ``arch.json``, and its
    :func:`candidate_config`."""
    root = out / f"candidate_{index}"
    root.mkdir(parents=True, exist_ok=True)
    arch.save(root / "arch.json")
    return candidate_config(config, root / "arch.json", root, index)


def train_candidates(archs: list[Arch], config: SelectConfig, out: Path, log=print) -> list[dict]:
    """Train each architecture briefly (see the module docstring); one dict per candidate, in order: ``val_metric``
    (its best validation value), ``val_metric_name``, ``mode``, ``history`` (every epoch's value), ``seconds``."""
    from .lightning_cli import EvaluateCLI

    results = []
    for i, arch in enumerate(archs):
        tree, monitor, mode = _candidate(arch, config, out, i)
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


class _StopAfter(L.Callback):
    """Every training step's loss, and a stop after ``steps`` of them (the run keeps its scheduled length)."""

    def __init__(self, steps: int):
        self.steps, self.losses = steps, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if loss is not None else math.inf
        self.losses.append(value if math.isfinite(value) else math.inf)
        if len(self.losses) >= self.steps or not math.isfinite(value):
            trainer.should_stop = True  # a diverged candidate stops at once: its sum is infinite anyway


def training_loss_candidates(archs: list[Arch], config: SelectConfig, out: Path, log=print) -> list[dict]:
    """The training-speed estimator of each architecture (see the module docstring): one dict per candidate, in
    order: ``train_loss_sum`` (Σ of the first ``steps`` training losses; ∞ when one is not finite), ``losses``,
    ``steps``, ``mode`` (``min``), ``seconds``."""
    from .lightning_cli import EvaluateCLI

    results = []
    for i, arch in enumerate(archs):
        tree, _, _ = _candidate(arch, config, out, i)
        tree["trainer"].update({"logger": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                                "enable_progress_bar": False})
        start = time.perf_counter()
        cli = EvaluateCLI(args=tree, run=False)
        losses = _StopAfter(config.steps)
        cli.trainer.callbacks.append(losses)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        finite = all(math.isfinite(v) for v in losses.losses)
        if finite and len(losses.losses) < config.steps:
            raise ValueError(f"select.steps: {config.steps} training steps asked, the recipe of {config.config} ran "
                             f"{len(losses.losses)} ({config.epochs} epochs); lower select.steps or raise "
                             "select.epochs")
        total = math.fsum(losses.losses) if finite else math.inf
        results.append({"train_loss_sum": total, "losses": losses.losses, "steps": len(losses.losses),
                        "mode": "min", "seconds": round(time.perf_counter() - start, 2)})
        log(f"select: candidate {i + 1}/{len(archs)}: Σ training loss over {len(losses.losses)} steps {total:.4g}")
    return results


def rank_candidates(archs: list[Arch], config: SelectConfig, out: Path, log=print) -> list[dict]:
    """:func:`train_candidates` or :func:`training_loss_candidates`, as ``config.rank`` says."""
    run = training_loss_candidates if config.rank == "train_loss" else train_candidates
    return run(archs, config, out, log)


def best_index(results: list[dict]) -> int:
    """The candidate with the best validation value, or the smallest training-loss sum (ties: the objective's
    better-ranked one, i.e. the first)."""
    key = "train_loss_sum" if "train_loss_sum" in results[0] else "val_metric"
    sign = 1 if results[0]["mode"] == "max" else -1
    return max(range(len(results)), key=lambda i: (sign * results[i][key], -i))
