"""Throughput of the sequence generator: training steps and constrained decoding (CPU unless --device says otherwise).

    python benchmarks/sg.py [--steps 20] [--device cpu] [--paper]

- training: sequences/s of the tiny GPT-Neo (configs/sg.yaml sizes, batch 32) on HL sequences of 10 stages, and with
  ``--paper`` of a randomly initialised GPT-Neo-125M-shaped network (768 wide, 12 layers, the paper's batch 1) — the
  unit cost behind the paper-scale estimate (no checkpoint is downloaded: the weights' values do not change the time);
- decoding: HL architectures/s, greedy, without and with the budget guide, and beam search of width 4.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.hl_tokenizer import SEP, HLTokenizer  # noqa: E402
from lightning_nas.models.sg import BudgetGuide, SGModule  # noqa: E402
from lightning_nas.space.cell import Cell  # noqa: E402
from lightning_nas.space.hl import HLArch, HLStage  # noqa: E402
from lightning_nas.space.hl_cost import HLParamsEstimate  # noqa: E402


def batch(tokenizer: HLTokenizer, size: int, device: str) -> dict[str, torch.Tensor]:
    rng = random.Random(0)
    seqs = []
    for _ in range(size):
        hl = HLArch(tuple(HLStage(rng.randrange(tokenizer.num_clusters), 8 * rng.randint(1, 64), rng.choice((1, 2)))
                          for _ in range(10)), 128)
        seqs.append(tokenizer.encode(hl, {"classes": 10, "input_size": 32, "params": 1e6, "macs": 1e8}))
    ids = torch.tensor(seqs, device=device)
    labels = ids.clone()
    labels[:, : seqs[0].index(SEP) + 1] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def train_rate(sg: SGModule, data: dict, steps: int) -> float:
    sg.train()
    optimizer = torch.optim.AdamW(sg.parameters(), lr=1e-4)
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        loss = sg(data).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if data["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return steps * len(data["input_ids"]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="also time a GPT-Neo-125M-shaped network")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = {}
    tokenizer = HLTokenizer(8)
    torch.manual_seed(0)
    tiny = SGModule(tokenizer=tokenizer.to_dict()).to(args.device)
    params = sum(p.numel() for p in tiny.parameters())
    figures["tiny_train_sequences_per_s"] = train_rate(tiny, batch(tokenizer, 32, args.device), args.steps)
    print(f"tiny GPT-Neo ({params / 1e6:.2f}M params), batch 32, {len(batch(tokenizer, 1, 'cpu')['input_ids'][0])} "
          f"tokens: {figures['tiny_train_sequences_per_s']:.0f} sequences/s")
    if args.paper:
        big = SGModule(tokenizer=tokenizer.to_dict(), hidden_size=768, num_layers=12, num_heads=12,
                       max_positions=2048).to(args.device)
        params = sum(p.numel() for p in big.parameters())
        rate = figures["paper_train_sequences_per_s"] = train_rate(big, batch(tokenizer, 1, args.device),
                                                                   max(3, args.steps // 4))
        print(f"GPT-Neo-125M-shaped ({params / 1e6:.0f}M params with our vocabulary), batch 1: {rate:.1f} sequences/s "
              f"→ {60_000 / rate / 3600:.2f} h per epoch of the paper's 60,000 architectures")
    tiny.eval()
    prompt = tokenizer.prompt({"classes": 10, "input_size": 32}, {"params": 1e6})
    rng = random.Random(1)
    estimate = HLParamsEstimate({k: Cell.random(rng=rng) for k in range(tokenizer.num_clusters)})
    for name, kw in (("greedy", {}), ("greedy + budget guide", {"guides": [BudgetGuide(tokenizer, estimate, 1e6)]}),
                     ("beam 4", {"num_sequences": 4})):
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < 3:
            n += len(tiny.generate([prompt], **kw)[0])
        figures[f"decode_{name}_per_s"] = n / (time.perf_counter() - start)
        print(f"decoding, {name}: {figures[f'decode_{name}_per_s']:.1f} HL architectures/s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
