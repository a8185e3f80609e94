"""One CIFAR-10-shaped training epoch of a ~1M-parameter architecture with the ``zennas_cifar`` recipe on synthetic
data: images/s and peak memory (the [train] issue's GPU check; runs on CPU too, with fewer images).

    python benchmarks/train_epoch.py [--arch configs/archs/cifar.json] [--images 50000] [--device cuda]

Synthetic 3×32×32 images (no data set needed) pass through the recipe's training transforms on the GPU/CPU side
that matter for throughput: mixup 0.2, label smoothing 0.1, SGD Nesterov with warm-up + cosine, BN momentum 0.01,
batch 64 (the ZenNAS CIFAR batch). AutoAugment/random erasing run in DataLoader workers on real data and are not
part of this number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.models import ClassifierModule  # noqa: E402


class Throughput(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=str(REPO / "configs" / "archs" / "cifar.json"))
    parser.add_argument("--images", type=int, default=None, help="default: 50,000 on a GPU, 2,048 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    n = args.images or (50_000 if args.device == "cuda" else 2_048)
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2,
                        pin_memory=args.device == "cuda", persistent_workers=True)
    model = ClassifierModule(args.arch, num_classes=10, lr=0.025, warmup_epochs=5, label_smoothing=0.1,
                             mixup_alpha=0.2, bn_momentum=0.01)
    cost = model.cost((3, 32, 32))
    meter = Throughput()
    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision=args.precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[meter])
    trainer.fit(model, loader)
    images = len(loader) * args.batch_size
    memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if args.device == "cuda" else ""
    print(f"{Path(args.arch).name}: {cost['params'] / 1e6:.2f}M params, {cost['macs'] / 1e6:.0f}M MACs; "
          f"{images} images in {meter.seconds:.1f} s = {images / meter.seconds:.0f} images/s on {args.device}{memory}")
    if args.json:
        Path(args.json).write_text(json.dumps({"images_per_s": images / meter.seconds, "device": args.device,
                                               "params": cost["params"], "macs": cost["macs"]}, indent=2))


if __name__ == "__main__":
    main()
