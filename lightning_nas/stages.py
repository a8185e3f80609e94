"""The one table of commands and stages, and the one object that names a run directory's artifacts.

:data:`COMMANDS` lists every command of ``python -m lightning_nas`` once — its name, what kind it is, the module
that runs it, its line of help and, for the eight stages of the chain, the artifacts it reads and the one whose
presence proves it finished. The CLI (:mod:`lightning_nas.cli`: dispatch and ``--help``), the pipeline
(:mod:`lightning_nas.pipeline`: the chain, its order and its skip test), the report (its table of stages) and the
tests read it; adding a stage is one entry here (litgpt's ``__main__.py`` keeps one command table the same way).

:class:`RunDir` names every artifact of a run directory (``archive.sqlite``, ``<stage>/checkpoints/last.ckpt``,
``<stage>/metrics.json``, ``cluster/clusters.json``, …) and gives the "run stage X first" error in one place
(:meth:`RunDir.require`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PROG = "python -m lightning_nas"

Kind = Literal["lightning", "stage", "evaluate", "command"]
"""``lightning``: a LightningModule fitted with Lightning's ``fit`` on a YAML (gvae, ccnf, sg); ``stage``: a
dataclass-configured stage with ``main(argv)`` (zc, cluster, search, generate); ``evaluate``: fit then test;
``command``: a tool outside the chain (export, pipeline, report)."""


@dataclass(frozen=True)
class Command:
    """One command: ``module`` (relative to ``lightning_nas``) has ``main(argv)``; a chain stage has ``artifact``
    (relative to the run directory; its presence proves the stage finished) and ``reads`` (the artifacts of earlier
    stages it needs, as :class:`RunDir` attribute names)."""

    name: str
    kind: Kind
    module: str
    help: str
    artifact: str | None = None
    reads: tuple[str, ...] = ()
    example: str = ""

    @property
    def in_chain(self) -> bool:
        return self.artifact is not None


COMMANDS: tuple[Command, ...] = (
    Command("zc", "stage", ".zc.stage", "sample cells into the archive and compute their ZC vectors",
            "zc/metrics.json", (), "zc --config configs/zc/tiny.yaml"),
    Command("gvae", "lightning", ".lightning_cli", "train the G-VAE (GCN encoder, triplet latent, ZC predictor)",
            "gvae/checkpoints/last.ckpt", ("archive",), "fit --config configs/gvae.yaml"),
    Command("cluster", "stage", ".cluster.stage", "GMM on the labelled cells' ZC vectors, K where BIC/AIC plateau",
            "cluster/clusters.json", ("archive",), "cluster --config configs/cluster/tiny.yaml"),
    Command("ccnf", "lightning", ".lightning_cli", "train the CCNF that generates cells for a cluster",
            "ccnf/checkpoints/last.ckpt", ("archive", "gvae", "clusters"), "fit --config configs/ccnf.yaml"),
    Command("search", "stage", ".search.stage",
            "HL-Evo (T-CET) under params/MACs/FLOPs/latency budgets; history in the archive",
            "search/metrics.json", ("archive", "gvae", "ccnf", "clusters"), "search --config configs/search/tiny.yaml"),
    Command("sg", "lightning", ".lightning_cli", "train the GPT-Neo sequence generator on the search history",
            "sg/checkpoints/last.ckpt", ("archive", "clusters"), "fit --config configs/sg.yaml"),
    Command("generate", "stage", ".generate",
            "SG → HL architectures → CCNF cells → T-CET: the best arch.json in budget",
            "generate/arch.json", ("archive", "gvae", "ccnf", "clusters", "sg"),
            "generate --config configs/generate/tiny.yaml --budget.params 1M"),
    Command("evaluate", "evaluate", ".lightning_cli", "fit, then test the best checkpoint; writes metrics.json",
            "evaluate/metrics.json", ("arch",), "evaluate --config configs/evaluate/digits.yaml"),
    Command("export", "command", ".export",
            "a trained model as ONNX / TorchScript / torch.export (.pt2) for plain torch"),
    Command("pipeline", "command", ".pipeline",
            "zc → gvae → cluster → ccnf → search → sg → generate → evaluate, resumable",
            example="pipeline --config configs/pipeline/tiny.yaml"),
    Command("score", "command", ".score", "zero-cost scores of arch.json files: an objective, every proxy, ‖∇θL‖",
            example="score configs/archs/digits.json --task digits"),
    Command("report", "command", ".report", "REPORT.md of a run: stage results, Tables 1 and 2, figures",
            example="report runs/demo"),
)
BY_NAME = {c.name: c for c in COMMANDS}
CHAIN: tuple[Command, ...] = tuple(c for c in COMMANDS if c.in_chain)
"""The pipeline's stages, in order."""
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")  # Lightning's own, for any module given by class_path
CLI_COMMANDS = tuple(c.name for c in COMMANDS if c.kind != "lightning")
"""The commands of ``python -m lightning_nas`` besides Lightning's (the ``lightning`` stages run through ``fit``)."""


def help_text(debug_env: str) -> str:
    """``python -m lightning_nas --help``: one line per command, from :data:`COMMANDS`."""
    width = max(map(len, ("fit/validate/test/predict", *CLI_COMMANDS))) + 2
    lines = [f"usage: {PROG} {{{','.join(LIGHTNING_COMMANDS + CLI_COMMANDS)}}} --config FILE [...]",
             f"  {'fit/validate/test/predict':<{width}} Lightning's commands for any module in lightning_nas.models"
             f" ({', '.join(c.name for c in COMMANDS if c.kind == 'lightning')})"]
    lines += [f"  {c.name + (' <workdir>' if c.name == 'report' else ''):<{width}} {c.help}" for c in COMMANDS
              if c.kind != "lightning"]
    lines += [f"{PROG} <command> --help describes a command. A bad setting or input file prints one 'error:' line and",
              f"exits with code 2 ({debug_env}=1 shows the traceback).",
              f"Example: {PROG} evaluate --config configs/evaluate/digits.yaml"]
    return "\n".join(lines)


@dataclass(frozen=True)
class RunDir:
    """The artifacts of one run directory (the pipeline's ``workdir``), by name."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ---- artifacts ---------------------------------------------------------------------------------------------
    @property
    def archive(self) -> Path:
        return self.root / "archive.sqlite"

    @property
    def clusters(self) -> Path:
        return self.root / "cluster" / "clusters.json"

    @property
    def gvae(self) -> Path:
        return self.checkpoint("gvae")

    @property
    def ccnf(self) -> Path:
        return self.checkpoint("ccnf")

    @property
    def sg(self) -> Path:
        return self.checkpoint("sg")

    @property
    def arch(self) -> Path:
        return self.root / "generate" / "arch.json"

    @property
    def hw(self) -> Path:
        """Fitted hardware cost tables (:func:`lightning_nas.hw.cost.hardware_cost_for`)."""
        return self.root / "hw"

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def stage(self, name: str) -> Path:
        """The stage's own folder."""
        return self.root / name

    def checkpoint(self, stage: str) -> Path:
        return self.root / stage / "checkpoints" / "last.ckpt"

    def metrics(self, stage: str) -> Path:
        return self.root / stage / "metrics.json"

    def artifact(self, stage: str) -> Path:
        """The artifact whose presence proves ``stage`` finished."""
        return self.root / BY_NAME[stage].artifact

    # ---- the one "run stage X first" -----------------------------------------------------------------------------
    PRODUCER = {"archive": "zc", "clusters": "cluster", "gvae": "gvae", "ccnf": "ccnf", "sg": "sg", "arch": "generate"}

    def require(self, what: str, path: str | Path | None = None) -> Path:
        """``path`` (default: the artifact named ``what``) if it exists, else ``FileNotFoundError`` naming the stage
        that writes it and its command."""
        target = Path(path) if path is not None else getattr(self, what)
        if target.exists():
            return target
        stage = BY_NAME[self.PRODUCER[what]]
        raise FileNotFoundError(f"{target}: no {what}; run the {stage.name} stage first ({PROG} {stage.example}, "
                                f"or the pipeline: {PROG} pipeline --config configs/pipeline/tiny.yaml)")
