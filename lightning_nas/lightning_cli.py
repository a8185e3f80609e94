"""LightningCLI of lightning-nas: Lightning's own commands for any module, plus ``evaluate`` (fit, then test)."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

PROG = "python -m lightning_nas"


CKPT_ALIASES = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values Lightning resolves itself (to a file of the run, checked by the same loader)."""


def check_ckpt_path(ckpt_path: str | None, run_dir: str | Path | None = None) -> None:
    """Refuse, in one paragraph (:func:`~lightning_nas.models.checkpoint.read_weights_only`), a ``--ckpt_path`` file
    that cannot be loaded weights-only — empty, truncated, foreign or holding pickled objects — before Lightning
    reads it and ends in a traceback. ``last`` is checked as ``<run_dir>/**/last.ckpt`` when ``run_dir`` is given."""
    from .models.checkpoint import read_weights_only

    if ckpt_path is None:
        return
    if ckpt_path in CKPT_ALIASES:
        if ckpt_path != "last" or run_dir is None:
            return
        found = sorted(Path(run_dir).glob("**/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            return  # Lightning warns and starts from scratch
        ckpt_path = str(found[-1])
    read_weights_only(ckpt_path)


class NASCLI(LightningCLI):
    """LightningCLI with reproducible defaults: seed 0 unless the config says otherwise, a config snapshot
    that overwrites the previous one of the same run directory, and W&B offline unless ``WANDB_MODE`` is set
    (``online`` to sync, ``disabled`` to switch W&B off). Its ``--help`` names the program
    ``python -m lightning_nas <command>``."""

    def __init__(self, *args, **kwargs):
        os.environ.setdefault("WANDB_MODE", "offline")
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs["parser_kwargs"] = {"default_env": False, "prog": PROG,
                                   "description": "Lightning's fit/validate/test/predict for any module of "
                                                  "lightning_nas.models (model and data given by class_path)",
                                   **kwargs.get("parser_kwargs", {})}
        with warnings.catch_warnings():  # our main() passes the parsed command line as `args`, which LightningCLI
            # questions when sys.argv is not empty; sys.argv itself must stay, DDP's launcher re-runs it
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
            super().__init__(None, None, *args, **kwargs)

    def before_fit(self) -> None:
        """Every fit writes its module's validation metrics to ``metrics.json`` through one callback."""
        from callbacks import MetricsFile

        if not any(isinstance(c, MetricsFile) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(MetricsFile())

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters here, first of all: a file that cannot be loaded
        weights-only is refused in one paragraph (:func:`check_ckpt_path`) before it does."""
        if self.config.get("subcommand"):
            check_ckpt_path(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # jsonargparse names them "<prog> [options] fit"; the command line is "<prog> fit"
            for name, parser in self._subcommand_parsers.items():
                parser.prog = f"{main_kwargs.get('prog', PROG)} {name}"


EVALUATE_HELP = (
    "evaluate: fit, then test. Trains the model on the data (resuming from --ckpt_path when given), then tests the "
    "best checkpoint (by the checkpoint callback's monitor, else the last weights), prints the test metrics and "
    "writes them with params/MACs/FLOPs, epochs and seconds to <trainer.default_root_dir>/metrics.json. Example: "
    "python -m lightning_nas evaluate --config configs/evaluate/digits.yaml [--ckpt_path last]"
)


class EvaluateCLI(NASCLI):
    """The ``evaluate`` command's parser: Lightning's settings (no subcommand) plus ``--ckpt_path``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_kwargs", {"prog": f"{PROG} evaluate", "description": EVALUATE_HELP})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume the fit from this checkpoint; 'last': the run's last.ckpt (a killed run "
                                 "continues where it stopped)")


def evaluate(args: list[str]) -> dict:
    """Fit (resuming from ``--ckpt_path``, e.g. ``last``, when given), then test the best checkpoint (by the
    checkpoint callback's monitor, else the last weights) and write ``<default_root_dir>/metrics.json``: ``task``,
    ``test_metric`` and its ``test_metric_name``, every test value, ``params``/``macs``/``flops``, ``epochs``,
    ``seconds``."""
    cli = EvaluateCLI(args=args, run=False)
    ckpt_path = cli.config.get("ckpt_path")
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    check_ckpt_path(ckpt_path, trainer.default_root_dir)
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
