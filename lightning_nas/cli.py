"""``python -m lightning_nas <command>``: LightningCLI for every LightningModule, plus the pipeline stages.

Commands now: ``fit``, ``validate``, ``test``, ``predict`` (Lightning's own, for any module/datamodule given by
``class_path`` in the config), ``evaluate`` (fit, then test the best checkpoint, print the test metrics and
write them to ``<trainer.default_root_dir>/metrics.json``), ``zc`` (the ZC stage, :mod:`lightning_nas.zc.stage`) and
``cluster`` (GMM clustering, :mod:`lightning_nas.cluster`), ``search`` (HL-Evo,
:mod:`lightning_nas.search.stage`) and ``generate`` (SG + CCNF + T-CET selection, :mod:`lightning_nas.generate`). Heavy imports happen only once a command is chosen.
"""

from __future__ import annotations

import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
STAGE_COMMANDS = ("evaluate", "zc", "cluster", "search", "generate", "export", "pipeline")


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
            "Example: python -m lightning_nas evaluate --config configs/evaluate/digits.yaml"
        )
        return
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        from .lightning_cli import NASCLI

        NASCLI(args=[command, *rest])
    elif command == "evaluate":
        from .lightning_cli import evaluate

        evaluate(rest)
    elif command == "zc":
        from .zc.stage import main as zc_main

        zc_main(rest)
    elif command == "cluster":
        from .cluster import main as cluster_main

        cluster_main(rest)
    elif command == "search":
        from .search.stage import main as search_main

        search_main(rest)
    elif command == "generate":
        from .generate import main as generate_main

        generate_main(rest)
    elif command == "export":
        from .export import main as export_main

        export_main(rest)
    elif command == "pipeline":
        from .pipeline import main as pipeline_main

        pipeline_main(rest)
    else:
        sys.exit(f"lightning_nas: unknown command {command!r}; choose from {', '.join(LIGHTNING_COMMANDS + STAGE_COMMANDS)}")
