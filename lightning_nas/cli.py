"""``python -m lightning_nas <command>``: LightningCLI for every LightningModule, plus the pipeline stages.

Commands now: ``fit``, ``validate``, ``test``, ``predict`` (Lightning's own, for any module/datamodule given by
``class_path`` in the config), ``evaluate`` (fit, then test the best checkpoint, print the test metrics and
write them to ``<trainer.default_root_dir>/metrics.json``), ``zc`` (the ZC stage, :mod:`lightning_nas.zc.stage`) and
``cluster`` (GMM clustering, :mod:`lightning_nas.cluster`), ``search`` (HL-Evo,
:mod:`lightning_nas.search.stage`) and ``generate`` (SG + CCNF + T-CET selection, :mod:`lightning_nas.generate`), ``export``, ``pipeline`` (the whole
chain, :mod:`lightning_nas.pipeline`) and ``report`` (:mod:`lightning_nas.report`). Heavy imports happen only once a command is chosen.
"""

from __future__ import annotations

import importlib
import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
STAGE_MODULES = {"evaluate": ".lightning_cli", "zc": ".zc.stage", "cluster": ".cluster", "search": ".search.stage",
                 "generate": ".generate", "export": ".export", "pipeline": ".pipeline",
                 "report": ".report"}
STAGE_COMMANDS = tuple(STAGE_MODULES)


def run_stage(argv: list[str], config_cls, run, command: str, doc: str | None = None) -> dict:
    """Parse ``--config`` (YAML) and overrides into ``config_cls`` with jsonargparse, run the stage with
    ``run(config)`` and print the metrics it returns."""
    import json

    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"python -m lightning_nas {command}", description=doc, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the settings below")
    parser.add_class_arguments(config_cls, as_group=False)
    cfg = parser.parse_args(argv)
    cfg.pop("config", None)
    metrics = run(config_cls(**{k: v for k, v in cfg.as_dict().items() if k != "__path__"}))
    print(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m lightning_nas {" + ",".join(LIGHTNING_COMMANDS + STAGE_COMMANDS) + "} --config FILE [...]\n"
            "  fit/validate/test/predict  Lightning's commands for any module in lightning_nas.models\n"
            "  evaluate                   fit, then test the best checkpoint; writes metrics.json\n"
            "  zc                         sample cells into the archive and compute their ZC vectors\n"
            "  cluster                    GMM on the labelled cells' ZC vectors, K where BIC/AIC plateau\n"
            "  search                     HL-Evo (T-CET) under params/MACs/FLOPs budgets; history in the archive\n"
            "  generate                   SG → HL architectures → CCNF cells → T-CET: the best arch.json in budget\n"
            "  export                     a trained model as ONNX / TorchScript / torch.export (.pt2) for plain torch\n"
            "  pipeline                   zc → gvae → cluster → ccnf → search → sg → generate → evaluate, resumable\n"
            "  report <workdir>           REPORT.md of a run: stage results, Tables 1 and 2 at the run's scale, figures\n"
            "Example: python -m lightning_nas evaluate --config configs/evaluate/digits.yaml"
        )
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from .lightning_cli import NASCLI

        NASCLI(args=[command, *rest])
    elif command in STAGE_COMMANDS:  # each stage module has main(argv), imported only when chosen
        importlib.import_module(STAGE_MODULES[command], __package__).main(rest)
    else:
        sys.exit(f"lightning_nas: unknown command {command!r}; choose from {', '.join(LIGHTNING_COMMANDS + STAGE_COMMANDS)}")
