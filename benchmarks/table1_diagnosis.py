"""Why Table 1's ordering does or does not hold: the CCNF's fidelity to its condition in latent space, and what
decoding does to it (seconds; no ZC evaluation).

    python benchmarks/table1_diagnosis.py [--workdir runs/tiny] [--samples 200]

Prints, for the best NB201 cell r and its measured z(r) (from ``benchmarks/results/table1.json``):
- L1 between q(f(r)) and z(r) (the predictor's error on r itself);
- per τ: |q(latent) − z(r)|₁ of CCNF and neighbourhood latents, and their mean per-dimension distance to f(r);
- on held-out training conditions c: |q(sample | c) − c|₁ against a shuffled c (does the flow honour c?);
- cycle consistency |f(f⁻¹(z)) − z| per dimension and the drift of q through decode → encode, for data, CCNF,
  neighbourhood and prior latents (is the G-VAE's latent space decodable off the data?).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from table1 import DEFAULT_CSV, REPO, best_nb201_cell

from datamodules import UnlabelledCellDataModule
from lightning_nas.archive import Archive
from lightning_nas.generator import CellGenerator
from lightning_nas.zc import ZCNormaliser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/tiny")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--table", default=str(REPO / "benchmarks" / "results" / "table1.json"))
    args = parser.parse_args()
    w, n = Path(args.workdir), args.samples
    g = CellGenerator.from_workdir(w)
    with Archive(w / "archive.sqlite", create=False) as archive:
        normaliser = ZCNormaliser.from_dict(archive.get_normaliser(archive.probes()[0]))
    z_r = normaliser.transform([json.loads(Path(args.table).read_text())["reference"]["zc"]])[0]
    _, reference = best_nb201_cell(DEFAULT_CSV)
    q, f_r = g.gvae.predict_zc, g.gvae.encode([reference])
    print(f"|q(f(r)) - z(r)|_1 = {(q(f_r)[0] - z_r).abs().sum():.2f}")
    gen = torch.Generator().manual_seed(0)
    for tau in (1.0, 0.4):
        flow = g.ccnf.flow.sample(z_r.expand(n, -1), tau, torch.Generator().manual_seed(0))
        near = f_r + tau * torch.randn(n, f_r.shape[1], generator=gen)
        print(f"tau {tau}: CCNF |q - z(r)|_1 {(q(flow) - z_r).abs().sum(1).mean():.2f}, per-dim distance to f(r) "
              f"{(flow - f_r).abs().mean():.2f} | neighbourhood {(q(near) - z_r).abs().sum(1).mean():.2f}, "
              f"{(near - f_r).abs().mean():.2f}")
    data = UnlabelledCellDataModule(str(w / "archive.sqlite"))
    data.setup()
    latents = g.gvae.encoder(*(t[:n] for t in data.val_set.tensors))[0].detach()
    cond = q(latents).detach()
    sampled = g.ccnf.flow.sample(cond, 1.0, torch.Generator().manual_seed(1))
    shuffled = cond[torch.randperm(len(cond), generator=gen)]
    print(f"held-out conditions: |q(sample|c) - c|_1 {(q(sampled) - cond).abs().sum(1).mean():.2f}, "
          f"shuffled c {(q(sampled) - shuffled).abs().sum(1).mean():.2f}")

    def cycle(z):
        z2 = g.gvae.encode(g.gvae.decode(z))
        return f"{(z2 - z).abs().mean():.2f} / {(q(z2) - q(z)).abs().sum(1).mean():.2f}"

    flow = g.ccnf.flow.sample(z_r.expand(n, -1), 1.0, torch.Generator().manual_seed(0))
    near = f_r + torch.randn(n, f_r.shape[1], generator=gen)
    prior = torch.randn(n, f_r.shape[1], generator=gen)
    print(f"cycle |f(f^-1(z)) - z| per dim / q drift: data {cycle(latents)}, CCNF {cycle(flow)}, "
          f"neighbourhood {cycle(near)}, prior {cycle(prior)}")


if __name__ == "__main__":
    main()
