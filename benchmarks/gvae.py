"""Throughput of the G-VAE hot paths: training graphs/s, encode and decode cells/s (CPU, or a GPU when present).

    python benchmarks/gvae.py [--hidden 256 --latent 64 --layers 4] [--paper] [--steps 50] [--device auto]
        [--json out.json]

``--paper`` uses the paper's sizes (hidden 512, latent 256). Cells are seeded random GraphNet cells; a training step is
forward + backward + AdamW on a batch of 64 unlabelled and 64 labelled cells (synthetic ZC targets, as the loss only
needs numbers); decoding includes repair and canonical validation of every cell.
"""

from __future__ import annotations

import argparse
import time

import torch
from _report import report

from lightning_nas.models import GVAEModule
from lightning_nas.space import sample_cells
from lightning_nas.space.cell import encode_inputs
from lightning_nas.space.decoding import batch_targets


def batch(cells, device, zc_dims=4):
    adj, feat = encode_inputs(cells)
    targets = type(t := batch_targets(cells))(*(x.to(device) for x in t))
    out = {"adj": adj, "feat": feat, "zc": torch.randn(len(cells), zc_dims),
           "hash": [c.canonical_hash() for c in cells]}
    return {**{k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}, "targets": targets}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--paper", action="store_true", help="hidden 512, latent 256, 4 layers")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.paper:
        args.hidden, args.latent, args.layers = 512, 256, 4
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = GVAEModule(hidden=args.hidden, latent=args.latent, layers=args.layers, triplet_mining="all").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cells = list(sample_cells(args.batch * 8, seed=0))
    batches = [{"unlabelled": batch(cells[i:i + args.batch], device),
                "labelled": batch(cells[i:i + args.batch], device)}
               for i in range(0, len(cells), args.batch)]

    def step(b):  # GVAEModule.training_step's loss, without Lightning's logging
        loss, _ = model.loss(b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    step(batches[0])  # warm-up
    sync(device)
    start = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % len(batches)])
    sync(device)
    train_s = time.perf_counter() - start

    model.eval()
    start = time.perf_counter()
    latents = model.encode(cells)
    sync(device)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = model.decode(latents)
    decode_s = time.perf_counter() - start

    figures = {
        "device": str(device),
        "sizes": f"hidden {args.hidden}, latent {args.latent}, layers {args.layers}",
        "train_graphs_per_s": round(args.steps * 2 * args.batch / train_s, 1),
        "train_step_ms": round(1000 * train_s / args.steps, 1),
        "encode_cells_per_s": round(len(cells) / encode_s, 1),
        "decode_cells_per_s": round(len(decoded) / decode_s, 1),
        "threads": args.threads,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
