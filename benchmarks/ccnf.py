"""Throughput of the CCNF hot paths: a training step (forward + adjoint backward + Adam), the function evaluations
per solve, and cells generated per second (flow sampling + G-VAE decoding), on CPU or a GPU when present.

    python benchmarks/ccnf.py [--paper] [--steps 5] [--batch 256] [--device auto] [--json out.json]

Tiny sizes are ``configs/ccnf.yaml`` (latent 64, hidden 128 × 2, dopri5 at 1e-5); ``--paper`` the paper's (latent 256,
hidden 512 × 9, batch 256). Latents are Gaussian with a random linear correlation (the step time depends on the
stiffness of the learned field, so the first steps of a run are what this measures); conditions are 4-D Gaussian.
Generation decodes with a randomly initialised G-VAE decoder of the matching latent size (decoding cost does not depend
on training).
"""

from __future__ import annotations

import argparse
import time

import torch
from _report import report

from lightning_nas.models import CCNFModule, GVAEModule


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="latent 256, hidden 512, 9 layers")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    dim, hidden, layers = (256, 512, 9) if args.paper else (64, 128, 2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = CCNFModule(latent_dim=dim, hidden=hidden, layers=layers, atol=args.tol, rtol=args.tol).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mix = torch.randn(dim, dim) / dim**0.5
    data = [((torch.randn(args.batch, dim) @ mix).to(device), torch.randn(args.batch, 4).to(device))
            for _ in range(args.steps + 1)]

    def step(x, c):
        loss = model.nll(x, c).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    step(*data[0])  # warm-up
    sync(device)
    nfe0, start = model.flow.dynamics.nfe, time.perf_counter()
    for x, c in data[1:]:
        step(x, c)
    sync(device)
    train_s = (time.perf_counter() - start) / args.steps
    nfe_train = (model.flow.dynamics.nfe - nfe0) / args.steps

    model.eval()
    gvae = GVAEModule(hidden=256, latent=dim).to(device).eval()
    cond = torch.randn(args.samples, 4, device=device)
    nfe0, start = model.flow.dynamics.nfe, time.perf_counter()
    latents = model.flow.sample(cond, 1.0, torch.Generator().manual_seed(0))
    sync(device)
    sample_s = time.perf_counter() - start
    nfe_sample = model.flow.dynamics.nfe - nfe0
    start = time.perf_counter()
    cells = gvae.decode(latents)
    decode_s = time.perf_counter() - start

    figures = {
        "device": str(device),
        "sizes": f"latent {dim}, hidden {hidden} x {layers}, batch {args.batch}, tol {args.tol}",
        "train_step_s": round(train_s, 3),
        "train_latents_per_s": round(args.batch / train_s, 1),
        "nfe_per_train_step": round(nfe_train, 1),
        "nfe_per_sampling_solve": nfe_sample,
        "flow_samples_per_s": round(args.samples / sample_s, 1),
        "cells_per_s": round(len(cells) / (sample_s + decode_s), 1),
        "threads": args.threads,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
