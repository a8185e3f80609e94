"""GraphNet-digits: trained ground truth in the GraphNet macro space (issue #29, item 1).

Each row is one training of one architecture on scikit-learn's digits with the demo's evaluate recipe
(``configs/evaluate/digits.yaml`` as ``configs/pipeline/tiny.yaml`` sets it: 32 px, 15 epochs, gradient clipping 5.0,
the last weights, no checkpoint selection), with the validation and test accuracy after epoch 5 and after epoch 15 of
the same run (the cosine schedule is the 15-epoch one's), and, measured before training on the same network:
every proxy :func:`lightning_nas.zc.proxies.evaluate_proxies` knows (on the probe of ``configs/zc/tiny.yaml``: digits,
seed 0, 32 images), the AZ-NAS components (Kaiming-initialised copy), ‖∇θL‖ at initialisation
(:func:`lightning_nas.zc.trainability.init_grad_norm`) and the training loss after a few SGD steps (the training-speed
estimator of Ru et al. 2021: the summed loss of the first ``TSE_STEPS`` steps, and the mean of the last five).

Groups (the plan is a pure function of the group, the index and the seed — any process makes the same architectures):

- ``random-500k``: uniform random architectures (:func:`lightning_nas.search.hl_evo.random_within_budget`, GraphNet
  cells from the space's sampler) within 500k params / 20M MACs, the demo's generate budget;
- ``random-1.5M``: the same within 1.5M / 150M, the demo's second search budget;
- ``seed1``: the first architectures of ``random-500k`` trained again with training seed 1 (seed noise);
- ``rows`` from other groups (an objective's argmax, mutations around the best) are appended by
  :func:`train_row` callers with their own ``group`` name and the spec.

Resumable: rows are appended to ``data/graphnet_digits/rows.jsonl`` (one JSON line per finished training, written
by the parent process only); a rerun skips the (group, index, train_seed) keys already there and a line cut short by
a kill is ignored. Parallel over ``--workers`` processes of ``--threads`` torch threads each.

    python benchmarks/graphnet_digits.py --group random-500k --count 240 --workers 1 --threads 1
    python benchmarks/graphnet_digits.py --group seed1 --count 50
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "data" / "graphnet_digits" / "rows.jsonl"
BUDGETS = {"500k": (500_000, 20_000_000), "1.5M": (1_500_000, 150_000_000)}
GROUPS = {"random-500k": ("500k", 0), "random-1.5M": ("1.5M", 0), "seed1": ("500k", 1)}
EPOCHS, EARLY_EPOCH = 15, 5
TSE_STEPS = 20
PROXY_NAMES = ("naswot", "snip", "snip_ssnr", "tcet", "tcet_none", "tcet_mean", "grad_norm", "zen", "zico", "params",
               "macs", "flops")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def recipe() -> dict:
    """The demo's evaluate settings (configs/pipeline/tiny.yaml's ``evaluate.set``) on configs/evaluate/digits.yaml,
    without a logger."""
    import yaml

    base = yaml.safe_load((REPO / "configs" / "evaluate" / "digits.yaml").read_text())
    base["trainer"].update({"max_epochs": EPOCHS, "gradient_clip_val": 5.0, "logger": False,
                            "enable_progress_bar": False})
    base["data"]["init_args"]["image_size"] = 32
    return base


def planned_arch(group: str, index: int):
    """The ``index``-th architecture of a random group: rejection-sampled within the group's budget from a stream
    seeded by (budget, index) only."""
    from lightning_nas.search.evaluate import ArchEvaluator, Budget
    from lightning_nas.search.hl_evo import random_within_budget
    from lightning_nas.space.task import TASKS
    from lightning_nas.studies import graphnet_cell
    from lightning_nas.zc.vector import Probe

    budget_name, _ = GROUPS[group]
    params, macs = BUDGETS[budget_name]
    task = TASKS["digits"]
    evaluator = ArchEvaluator(Probe.from_source("gaussian", seed=0, batch_size=2), Budget(budget_name, params, macs),
                              None, task)
    rng = random.Random(f"graphnet-digits:{budget_name}:{index}")
    for _ in range(20):
        child, draws = random_within_budget(rng, 1, graphnet_cell, 128, evaluator, max_draws=400)
        arch = evaluator.materialise(child.hl, child.cells)
        if evaluator(arch).status == "unscored":
            return arch
    raise RuntimeError(f"{group}[{index}]: no architecture within {budget_name} in 8,000 draws")


def measure(arch) -> dict:
    """Proxies, AZ-NAS, ‖∇θL‖ at init and the early training loss of ``arch`` (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from lightning_nas.space.cost import count_cost
    from lightning_nas.space.network import build_network, task_network
    from lightning_nas.zc.az_nas import az_nas_components, kaiming_init_
    from lightning_nas.zc.proxies import evaluate_proxies
    from lightning_nas.zc.trainability import init_grad_norm
    from lightning_nas.zc.vector import Probe

    probe = Probe.from_source("digits", seed=0, batch_size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(probe.seed)
        model = build_network(arch, in_channels=3, num_classes=10, dims=2)
    values, problems = evaluate_proxies(model, probe.x, probe.y, PROXY_NAMES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(probe.seed)
        az_model = kaiming_init_(build_network(arch, in_channels=3, num_classes=10, dims=2), seed=probe.seed)
    az = az_nas_components(az_model, probe.x, seed=probe.seed)
    task = arch.task
    cost = count_cost(task_network(task, arch), task.input_shape)
    # the training-speed estimator: SGD on the digits training images at the recipe's learning rate
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    images = torch.tensor(data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    images = (images - images.mean()) / images.std()
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    labels = torch.tensor(labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = task_network(task, arch).train()
        gen = torch.Generator().manual_seed(0)
        optimiser = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        losses = []
        for _ in range(TSE_STEPS):
            index = torch.randint(0, len(labels), (64,), generator=gen)
            loss = F.cross_entropy(net(images[index]), labels[index])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss) if math.isfinite(float(loss)) else 1e6)
    return {"proxies": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
            "proxy_problems": problems, "az_nas": az, "grad_norm_at_init": init_grad_norm(arch, task, 0),
            "tse": sum(losses), "loss_after_steps": sum(losses[-5:]) / 5, "params": cost["params"],
            "macs": cost["macs"]}


class EpochAccuracy:
    """A Lightning callback: val accuracy every epoch and the test accuracy after the epochs in ``at``."""

    def __new__(cls, at: tuple[int, ...]):
        import lightning.pytorch as pl
        import torch

        class _Callback(pl.Callback):
            def __init__(self):
                self.val, self.test = {}, {}

            def on_train_epoch_end(self, trainer, module):
                epoch = trainer.current_epoch + 1
                value = trainer.callback_metrics.get("val/acc")
                if value is not None:
                    self.val[epoch] = float(value)
                if epoch in at:
                    datamodule = trainer.datamodule
                    datamodule.setup("test")
                    was_training = module.training
                    module.eval()
                    correct = total = 0
                    with torch.no_grad():
                        for x, y in datamodule.test_dataloader():
                            correct += int((module(x).argmax(-1) == y).sum())
                            total += len(y)
                    module.train(was_training)
                    self.test[epoch] = correct / total

        return _Callback()


def train_row(group: str, index: int, train_seed: int, spec: dict | None = None, threads: int = 1) -> dict:
    """Measure and train one architecture (the planned one, or ``spec``); the row of the module docstring."""
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from lightning_nas.lightning_cli import EvaluateCLI
    from lightning_nas.select import training_config
    from lightning_nas.space.arch import Arch

    start = time.perf_counter()
    arch = Arch.from_json(spec) if spec is not None else planned_arch(group, index)
    row = {"group": group, "index": index, "train_seed": train_seed, "budget": GROUPS.get(group, (None,))[0],
           "spec": arch.to_json(), **measure(arch)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        arch.save(root / "arch.json")
        tree, _, _ = training_config(copy.deepcopy(recipe()), root / "arch.json", root, f"gt-{group}-{index}",
                                     train_seed)
        cli = EvaluateCLI(args=tree, run=False)
        callback = EpochAccuracy((EARLY_EPOCH, EPOCHS))
        cli.trainer.callbacks.append(callback)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    row.update({f"val_acc_{e}": callback.val.get(e) for e in (EARLY_EPOCH, EPOCHS)})
    row.update({f"test_acc_{e}": callback.test.get(e) for e in (EARLY_EPOCH, EPOCHS)})
    row.update({"seconds": round(time.perf_counter() - start, 1), "commit": commit(), "threads": threads})
    return row


def done_keys(path: Path) -> set[tuple]:
    from lightning_nas.datasets.files import read_jsonl

    return {(r["group"], r["index"], r["train_seed"]) for r in read_jsonl(path)} if path.is_file() else set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=sorted(GROUPS), default="random-500k")
    parser.add_argument("--count", type=int, default=240, help="architectures of the group (indices 0..count-1)")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    seed = GROUPS[args.group][1]
    source = "random-500k" if args.group == "seed1" else args.group  # seed 1 retrains random-500k's architectures
    done = done_keys(args.out)
    todo = [i for i in range(args.start, args.start + args.count) if (args.group, i, seed) not in done]
    print(f"[graphnet-digits] {args.group}: {len(todo)} to train, {args.count - len(todo)} done -> {args.out}",
          flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(_job, source, args.group, i, seed, args.threads): i for i in todo}
        for n, future in enumerate(as_completed(futures), 1):
            try:
                row = future.result()
            except Exception as err:  # one architecture that cannot train is a row of its own, not a lost run
                print(f"[graphnet-digits] {args.group}[{futures[future]}] failed: {err}", flush=True)
                continue
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
            print(f"[graphnet-digits] {n}/{len(todo)} {args.group}[{row['index']}] params {row['params']:.0f} "
                  f"macs {row['macs']:.3g} test@5 {row['test_acc_5']:.3f} test@15 {row['test_acc_15']:.3f} "
                  f"|g| {row['grad_norm_at_init']:.3g} {row['seconds']} s", flush=True)


def _job(source: str, group: str, index: int, seed: int, threads: int) -> dict:
    spec = planned_arch(source, index).to_json() if source != group else None
    return train_row(group, index, seed, spec, threads)


if __name__ == "__main__":
    main()
