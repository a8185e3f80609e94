"""G-VAE ablation on a small real archive: the KL weight (ours 0.005, the authors' code 0.1, the paper's Eq. 4 1.0)
and the triplet term (paper Fig. 2), same data, seeds and epochs (CPU: a 12-epoch run ~2 min, a 48-epoch one ~7.5 min
on the shared 2-core machine; the 300 ZC vectors of the default archive took ~50 min there, 9.6 s a cell at load 3–8).

    python benchmarks/gvae_ablation.py [--workdir runs/gvae_ablation] [--archive PATH] [--unlabelled 3000]
                                       [--labelled 300] [--epochs 12 48:0,1] [--seeds 0 1 2]
                                       [--variants ours authors paper no_triplet]
                                       [--threads 1] [--out benchmarks/results/gvae_ablation.md]

1. The archive: ``--archive`` if given, else ``<workdir>/archive.sqlite`` built (or completed: the stage is resumable)
   by the real zc stage, ``python -m lightning_nas zc --config configs/zc/tiny.yaml --workdir <workdir>
   --unlabelled N --labelled M --workers 1 --threads T`` (M cells get a ZC vector, ~1 s each on an idle 2-core CPU).
   ``--threads`` (torch threads of the zc stage and of every fit, ``OMP_NUM_THREADS``): 1 by default — on a CPU
   shared with other jobs, 2 threads made a ZC vector ~5× slower than 1 (68 s vs 13 s a cell at load 8).
2. One G-VAE per variant and seed, trained by ``python -m lightning_nas fit`` on the shipped ``configs/gvae.yaml``
   resolved the way the pipeline's gvae stage does it (:func:`lightning_nas.pipeline.resolve_stage`: every
   ``runs/tiny`` path re-rooted at ``<workdir>/e<epochs>/<variant>_s<seed>``, then dotted overrides): the archive,
   the epochs (12 = the demo's gvae stage with --seeds, and 48 with seeds 0 and 1 only, by default), the seed
   (``seed_everything`` and the held-out split's ``data.init_args.seed``), one validation after the last epoch (the
   metrics are read from it; validating every epoch costs CPU and changes no weight), no logger, no latent-map
   callback (pictures only, its t-SNE costs CPU), and the variant's own settings:

   - ``ours``: configs/gvae.yaml as shipped (kl_weight 0.005);
   - ``authors``: kl_weight 0.1 (the authors' code);
   - ``paper``: kl_weight 1.0 (the paper's Eq. 4, unweighted ELBO);
   - ``no_triplet``: configs/gvae.yaml + configs/ablation/gvae_no_triplet.yaml (triplet_weight 0, kl_weight 0.005).

   All variants of one seed share the held-out split and the initialisation seed, so they are compared on the same
   cells; another seed draws another split (10 % of each kind held out), initialisation and batch order. A run whose
   metrics.json is of the last epoch and whose settings are unchanged is reused, not retrained.
3. Each run's ``metrics.json`` in its ``trainer.default_root_dir`` (written by ``GVAEModule`` at each validation):
   recon_exact (held-out cells decoded to the same canonical cell), validity / uniqueness / novelty (1000 prior
   samples), latent_zc_spearman (held-out labelled cells: Spearman of pairwise L1 latent vs ZC distances) and
   predictor_r2_* (held-out labelled cells). Writes a markdown table (mean ± std over seeds, then every run) to
   ``--out`` and every figure to ``--out`` with ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datamodules import GraphZCDataModule  # noqa: E402
from lightning_nas.archive import Archive  # noqa: E402
from lightning_nas.models import GVAEModule  # noqa: E402
from lightning_nas.pipeline import resolve_stage  # noqa: E402

GVAE = "configs/gvae.yaml"
VARIANTS = {  # name: (configs merged in order, dotted overrides, what it is)
    "ours": ([GVAE], {}, "configs/gvae.yaml as shipped"),
    "authors": ([GVAE], {"model.init_args.kl_weight": 0.1}, "KL weight of the authors' code"),
    "paper": ([GVAE], {"model.init_args.kl_weight": 1.0}, "paper Eq. 4 (unweighted KL)"),
    "no_triplet": ([GVAE, "configs/ablation/gvae_no_triplet.yaml"], {}, "ours without the triplet term (Fig. 2)"),
}
METRICS = ("recon_exact", "validity", "uniqueness", "novelty", "latent_zc_spearman", "predictor_r2_mean",
           "val_recon_nll", "val_kl", "active_units")


def build_archive(workdir: Path, unlabelled: int, labelled: int, threads: int) -> Path:
    """``<workdir>/archive.sqlite`` from the real zc stage (resumable: only missing cells/ZC vectors are computed)."""
    cmd = [sys.executable, "-m", "lightning_nas", "zc", "--config", "configs/zc/tiny.yaml", "--workdir", str(workdir),
           "--unlabelled", str(unlabelled), "--labelled", str(labelled), "--workers", "1", "--threads", str(threads),
           "--wandb", "false", "--run", "gvae_ablation"]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    print(f"zc stage: {time.perf_counter() - start:.0f} s", flush=True)
    return workdir / "archive.sqlite"


def archive_summary(path: Path) -> dict:
    with Archive(path, create=False) as archive:
        probe = archive.resolve_probe(None)
        return {"path": str(path), "op_set": archive.op_set, "probe": probe,
                "cells": sum(1 for _ in archive.iter_cells()), "labelled": len(archive.zc(probe))}


def settings(variant: str, seed: int, rundir: Path, archive: Path, epochs: int) -> dict:
    configs, overrides, _ = VARIANTS[variant]
    config = resolve_stage("gvae", {"config": configs, "set": {
        **overrides, "seed_everything": seed, "data.init_args.seed": seed, "data.init_args.archive": str(archive),
        "trainer.max_epochs": epochs, "trainer.check_val_every_n_epoch": epochs, "trainer.num_sanity_val_steps": 0,
        "trainer.logger": False}}, str(rundir), "runs/tiny")
    config["trainer"]["callbacks"] = [c for c in config["trainer"].get("callbacks", [])
                                      if not c["class_path"].endswith("LatentMapCallback")]
    return config


@torch.no_grad()
def held_out_terms(config: dict) -> dict:
    """Loss terms of the trained G-VAE (``last.ckpt``) on its run's held-out cells: reconstruction NLL and KL (nats a
    cell, the two terms the KL weight trades) and active units (latent dimensions whose posterior mean varies over
    the cells by more than 0.01, Burda et al. 2016: a KL weight that is too high switches dimensions off)."""
    checkpoint = Path(config["trainer"]["callbacks"][0]["init_args"]["dirpath"]) / "last.ckpt"
    model = GVAEModule.from_checkpoint(checkpoint)
    data = GraphZCDataModule(**config["data"]["init_args"])
    data.setup("fit")
    nll, kl, mus = [], [], []
    for batch in data.val_dataloader():
        mu, logvar = model.encoder(batch["adj"], batch["feat"])
        nll.append(model.reconstruction(model.decoder(mu), batch["targets"]) * len(mu))
        kl.append(model.kl(mu, logvar) * len(mu))
        mus.append(mu)
    mu = torch.cat(mus)
    return {"val_recon_nll": float(sum(nll) / len(mu)), "val_kl": float(sum(kl) / len(mu)),
            "active_units": int((mu.var(0) > 0.01).sum()), "latent": mu.shape[1]}


def train(variant: str, seed: int, workdir: Path, archive: Path, epochs: int, threads: int) -> dict:
    """Train (or reuse) one G-VAE; its last metrics.json, the seconds it took and its settings."""
    rundir = workdir / f"e{epochs}" / f"{variant}_s{seed}"
    config = settings(variant, seed, rundir, archive, epochs)
    text = yaml.safe_dump(config, sort_keys=True)
    settings_path, seconds_path = rundir / "settings.yaml", rundir / "seconds"
    metrics_path = Path(config["trainer"]["default_root_dir"]) / "metrics.json"
    done = (settings_path.is_file() and settings_path.read_text() == text and metrics_path.is_file()
            and seconds_path.is_file() and json.loads(metrics_path.read_text()).get("epoch") == epochs - 1)
    if not done:
        rundir.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)
        settings_path.write_text(text)
        cmd = [sys.executable, "-m", "lightning_nas", "fit", "--config", str(settings_path)]
        print(f"[{variant} e{epochs} s{seed}] $", " ".join(cmd[1:]), flush=True)
        start = time.perf_counter()
        with open(rundir / "fit.log", "w") as log:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads),
                                       "MKL_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            sys.exit(f"[{variant} e{epochs} s{seed}] fit failed (exit {proc.returncode}); see {rundir / 'fit.log'}")
        seconds_path.write_text(f"{time.perf_counter() - start:.1f}\n")
    metrics = json.loads(metrics_path.read_text())
    r2 = [v for k, v in metrics.items() if k.startswith("predictor_r2_")]
    metrics["predictor_r2_mean"] = sum(r2) / len(r2) if r2 else float("nan")
    metrics.update(held_out_terms(config))
    model = config["model"]["init_args"]
    out = {"variant": variant, "epochs": epochs, "seed": seed, "kl_weight": model["kl_weight"],
           "triplet_weight": model["triplet_weight"],
           "seconds": float(seconds_path.read_text()), "metrics": metrics, "rundir": str(rundir)}
    print(f"[{variant} e{epochs} s{seed}] {out['seconds']:.0f} s " +
          ", ".join(f"{m} {fmt(metrics.get(m, float('nan')))}" for m in METRICS), flush=True)
    return out


def fmt(value: float, like: float | None = None) -> str:
    """3 decimals, 1 for values (or, with ``like``, a mean) of 10 and more."""
    return f"{value:.1f}" if abs(value if like is None else like) >= 10 else f"{value:.3f}"


def mean_std(values: list[float]) -> str:
    mean = statistics.mean(values)
    return fmt(mean) if len(values) == 1 else f"{fmt(mean)} ± {fmt(statistics.stdev(values), mean)}"


def tables(runs: list[dict]) -> str:
    head = "| epochs | variant | kl_weight | triplet_weight | seeds | " + " | ".join(METRICS) + " | s/run |\n"
    rule = "|---:|---|---:|---:|---|" + "---:|" * (len(METRICS) + 1) + "\n"
    summary = head + rule
    for epochs, variant in dict.fromkeys((r["epochs"], r["variant"]) for r in runs):
        rs = [r for r in runs if r["variant"] == variant and r["epochs"] == epochs]
        summary += (f"| {epochs} | {variant} | {rs[0]['kl_weight']:g} | {rs[0]['triplet_weight']:g} | "
                    + ",".join(str(r["seed"]) for r in rs) + " | "
                    + " | ".join(mean_std([r["metrics"][m] for r in rs]) for m in METRICS)
                    + f" | {statistics.mean(r['seconds'] for r in rs):.0f} |\n")
    names = list(dict.fromkeys(k for r in runs for k in r["metrics"]
                               if k.startswith("predictor_r2_") and k != "predictor_r2_mean"))
    cols = [*(m for m in METRICS if m != "predictor_r2_mean"), *names]
    every = ("| epochs | variant | seed | " + " | ".join(c.replace("predictor_", "") for c in cols)
             + " | val cells | s |\n" + "|---:|---|---:|" + "---:|" * (len(cols) + 2) + "\n")
    for r in runs:
        every += (f"| {r['epochs']} | {r['variant']} | {r['seed']} | "
                  + " | ".join(fmt(r["metrics"].get(c, float("nan"))) for c in cols)
                  + f" | {r['metrics'].get('val_cells', '')} | {r['seconds']:.0f} |\n")
    return ("Mean ± std over the seeds (metrics after the last epoch):\n\n" + summary
            + "\nEvery run:\n\n" + every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/gvae_ablation")
    parser.add_argument("--archive", default=None, help="an existing archive (else built in <workdir> by the zc stage)")
    parser.add_argument("--unlabelled", type=int, default=3000, help="cells sampled into the archive (N)")
    parser.add_argument("--labelled", type=int, default=300, help="of those, how many get a ZC vector (M)")
    parser.add_argument("--epochs", nargs="+", default=["12", "48:0,1"],
                        help="training lengths: E (with --seeds) or E:S,S (with seeds S only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the zc stage and of each fit")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gvae_ablation.md"))
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    start = time.perf_counter()
    archive = (Path(args.archive).resolve() if args.archive
               else build_archive(workdir, args.unlabelled, args.labelled, args.threads))
    info = archive_summary(archive)
    print(f"archive: {info}", flush=True)
    plan = []  # (epochs, seeds)
    for item in args.epochs:
        epochs, _, seeds = item.partition(":")
        plan.append((int(epochs), [int(s) for s in seeds.split(",")] if seeds else args.seeds))
    runs = [train(v, s, workdir, archive, epochs, args.threads)
            for epochs, seeds in plan for v in args.variants for s in seeds]
    table = tables(runs)
    val = runs[0]["metrics"].get("val_cells")
    command = " ".join(["python benchmarks/gvae_ablation.py", *sys.argv[1:]])
    note = (f"\nArchive `{info['path'].replace(str(REPO) + '/', '')}`: {info['cells']} GraphNet cells, "
            f"{info['labelled']} with a ZC vector (probe `{info['probe']}`, configs/zc/tiny.yaml). Held out: 10 % "
            f"of each kind ({val} cells, {round(0.1 * info['labelled'])} of them labelled), one split per seed, "
            "shared by the variants. Each run: `python -m lightning_nas fit` on configs/gvae.yaml (hidden 256, "
            "latent 64) resolved as the pipeline's gvae stage, `seed_everything` = split seed = seed, CPU, "
            f"{args.threads} thread(s), one validation after the last epoch. recon_exact on every held-out cell, "
            "validity/uniqueness/novelty on 1000 prior samples, latent_zc_spearman and predictor R² on the held-out "
            "labelled cells only; val_recon_nll and val_kl: the two loss terms the KL weight trades, nats a held-out "
            "cell (from last.ckpt); active_units: latent dimensions whose posterior mean varies by more than 0.01 "
            "over the held-out cells (of 64). "
            f"Training: {sum(r['seconds'] for r in runs):.0f} s in all (shared 2-core CPU; "
            f"this invocation {time.perf_counter() - start:.0f} s, finished runs are reused). "
            f"Command: `{command}` (see its docstring).\n")
    variants = "".join(f"- `{v}`: {VARIANTS[v][2]}\n" for v in args.variants)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# G-VAE ablation: KL weight and triplet term (paper Eq. 4–5, Fig. 2)\n\n"
                              + variants + "\n" + table + note)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"archive": info, "plan": plan, "runs": runs}, indent=1, default=float))
    print(table + note)


if __name__ == "__main__":
    main()
