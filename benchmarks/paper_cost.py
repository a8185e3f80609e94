"""What the paper-scale pipeline (configs/pipeline/paper.yaml) costs, estimated from measured unit costs.

    python benchmarks/paper_cost.py [--workdir runs/demo] [--device cpu|cuda] [--out benchmarks/results/paper_cost.md]
    python benchmarks/paper_cost.py --units benchmarks/results/paper_cost.json   # re-tabulate stored unit costs

Runs the throughput benchmarks once each at the paper's network sizes (each in its own process, figures through its
``--json``): ``zc_throughput.py`` (s per α_x ZC vector + T-CET, CIFAR-shaped probe batch of 64), ``gvae.py --paper``
(graphs/s of a training step), ``ccnf.py --paper`` (s per training step of batch 256), ``sg.py --paper``
(sequences/s of a GPT-Neo-125M-shaped network at batch 1), ``search.py`` (HL-Evo evaluations/s on ``--workdir``'s
artifacts) and ``train_epoch.py`` (CIFAR images/s of a ~1M-parameter network). The amounts of work — cells, epochs,
iterations, candidates — are read from ``configs/pipeline/paper.yaml`` as the pipeline resolves it, multiplied by the
unit costs (``--units``: the unit costs of an earlier run's JSON instead of measuring again), and set next to the
paper's own cost (App. A, Table 5: ~30 V100 GPU hours of pretraining). Writes a
markdown table to ``--out`` and the unit costs to ``--out`` with ``.json``.

CPU numbers are an upper bound (the paper-scale stages are meant for GPUs: ``--device cuda`` where there is one); the
CCNF's step time depends on how stiff the learned field becomes, so its row is the least certain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.pipeline import PipelineConfig, resolve_stage  # noqa: E402

PAPER_HOURS = {"zc": 5.0, "gvae": 0.5, "ccnf": 0.5, "search": 14.0, "sg": 11.0}  # App. A, Table 5 (V100)


def measure(script: str, *args: str) -> tuple[dict, float]:
    """Run ``benchmarks/<script>`` with ``--json``; its figures and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--json", str(out)],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} failed:\n{proc.stderr[-3000:]}")
        print(f"  {script} {' '.join(args)}: {time.perf_counter() - start:.0f} s", flush=True)
        return json.loads(out.read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/demo", help="a run directory with G-VAE, CCNF, clusters (search)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--units", default=None, help="unit costs stored by an earlier run (its .json): no measuring")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "paper_cost.md"))
    args = parser.parse_args()

    config = PipelineConfig(**yaml.safe_load((REPO / "configs" / "pipeline" / "paper.yaml").read_text()))
    stage = {name: resolve_stage(name, config.stages[name], config.workdir, config.rewrite) for name in config.stages}
    zc, gvae, ccnf, search, sg = (stage[s] for s in ("zc", "gvae", "ccnf", "search", "sg"))
    evaluate = stage["evaluate"]
    cells, unlabelled = zc["unlabelled"], zc["unlabelled"] - zc["labelled"]  # the zc stage's count is every cell
    gvae_graphs = cells * gvae["trainer"]["max_epochs"]
    ccnf_steps = unlabelled / ccnf["data"]["init_args"]["batch_size"] * ccnf["trainer"]["max_epochs"]
    evaluations = search["iterations"] * len(search["budgets"])
    sg_sequences = evaluations * sg["trainer"]["max_epochs"]
    epochs = evaluate["trainer"]["max_epochs"]

    device = ["--device", args.device]
    if args.units:
        units = json.loads(Path(args.units).read_text())
    else:
        print("measuring unit costs (each benchmark in its own process) …", flush=True)
        units = {
            "zc": measure("zc_throughput.py", "--networks", "4")[0],
            "gvae": measure("gvae.py", "--paper", "--steps", "5", *device)[0],
            "ccnf": measure("ccnf.py", "--paper", "--steps", "2", *device)[0],
            "sg": measure("sg.py", "--paper", "--steps", "12", *device)[0],
            "search": measure("search.py", "--workdir", args.workdir, "--archs", "12")[0],
            "train": measure("train_epoch.py", "--images", "1024", "--device", args.device)[0],
            "measured": time.strftime("%Y-%m-%d"),
        }
    s_per_zc = 1 / units["zc"]["ours_networks_per_s"]
    rows = [
        ("zc: ZC vectors of the labelled cells", f"{zc['labelled']:,} α_x networks", f"{s_per_zc:.2f} s each",
         zc["labelled"] * s_per_zc, PAPER_HOURS["zc"]),
        ("gvae: G-VAE + predictor training", f"{gvae['trainer']['max_epochs']} epochs × {cells:,} graphs "
         f"({unlabelled:,} unlabelled + {zc['labelled']:,} labelled)",
         f"{units['gvae']['train_graphs_per_s']:.0f} graphs/s",
         gvae_graphs / units["gvae"]["train_graphs_per_s"], PAPER_HOURS["gvae"]),
        ("ccnf: CCNF training", f"{ccnf['trainer']['max_epochs']} epochs × {unlabelled:,} unlabelled latents (batch "
         f"{ccnf['data']['init_args']['batch_size']})", f"{units['ccnf']['train_step_s']:.2f} s/step",
         ccnf_steps * units["ccnf"]["train_step_s"], PAPER_HOURS["ccnf"]),
        ("search: HL-Evo (the SG's data)", f"{evaluations:,} evaluations ({len(search['budgets'])} budgets × "
         f"{search['iterations']:,})", f"{units['search']['evals_per_s']:.2f} evals/s",
         evaluations / units["search"]["evals_per_s"], PAPER_HOURS["search"]),
        ("sg: GPT-Neo-125M fine-tuning", f"{sg['trainer']['max_epochs']} epochs × {evaluations:,} sequences, batch 1",
         f"{units['sg']['paper_train_sequences_per_s']:.1f} seq/s",
         sg_sequences / units["sg"]["paper_train_sequences_per_s"], PAPER_HOURS["sg"]),
        ("generate: 100 candidates scored", f"{stage['generate']['candidates']} T-CET evaluations",
         f"{s_per_zc:.2f} s each", stage["generate"]["candidates"] * s_per_zc, None),
    ]
    total = sum(r[3] for r in rows)
    train_s = epochs * 50_000 / units["train"]["images_per_s"]
    table = ("| stage | work (configs/pipeline/paper.yaml) | measured unit cost | estimate here (h) "
             "| paper, V100 (h) |\n"
             "|---|---|---|---|---|\n")
    table += "".join(f"| {name} | {work} | {unit} | {seconds / 3600:,.1f} | {'' if paper is None else paper} |\n"
                     for name, work, unit, seconds, paper in rows)
    table += f"| **pretraining + search, total** | | | **{total / 3600:,.1f}** | **~30** (Table 5: 31) |\n"
    table += (f"| evaluate: final training (not in the paper's 30 h) | {epochs} epochs × 50,000 CIFAR images | "
              f"{units['train']['images_per_s']:.0f} images/s | {train_s / 3600:,.1f} | |\n")
    note = (f"\nUnit costs measured on `{args.device}` ({units.get('measured', 'see the .json')}); "
            f"search unit cost from `{args.workdir}`'s "
            f"G-VAE/CCNF and probe ({units['search']['probe']}; the paper's is a CIFAR-10 batch of 64, so this row "
            "is low by up to 2×, and an ImageNet budget's cost is counted at 224 px, which the 32-px unit cost "
            "does not include); an evaluation is CCNF cells + network build + T-CET, which does not depend on how "
            "well those models are trained. ZC: our proxies on α_x with a 64-image CIFAR-shaped batch. Rerun with "
            "`--device cuda` on a GPU for the GPU column.\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Paper-scale cost estimated from measured unit costs\n\n" + table + note)
    Path(args.out).with_suffix(".json").write_text(json.dumps(units, indent=1, default=str))
    print(table + note)


if __name__ == "__main__":
    main()
