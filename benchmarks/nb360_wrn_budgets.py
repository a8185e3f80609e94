"""Params/MACs/FLOPs of the NAS-Bench-360 "WRN" baseline on each of the 8 NB360 tasks: the SG's budgets (§4.3).

    python benchmarks/nb360_wrn_budgets.py [--write-configs] [--out benchmarks/results/nb360_wrn_budgets.md]

The paper conditions its sequence generator for the NB360 tasks on "#params and #FLOPs of the Wide-ResNet (WRN) as
this is the most basic baseline considered by Tu et al. (2022)". For every task of ``datamodules/nb360/tasks.py``
(``input_shape``, ``num_outputs``, ``dense``, ``dims``) this builds that baseline and counts it with
:func:`lightning_nas.space.cost.count_cost` on ONE sample of the task's input shape (convolutions and linear layers;
``flops = 2 · macs``; BN/ReLU/pooling/additions not counted). Models are built on the ``meta`` device (shapes only,
no memory, no arithmetic); every task whose count is below ``--cpu-check-macs`` is recounted on real CPU tensors and
must agree. Writes a markdown table to ``--out`` and everything to ``--out`` with ``.json``. ``--write-configs``:
the per-task generate budgets ``{"task": …, "budget": {"params": …, "macs": …}}`` are printed and stored in the
JSON under ``"configs"`` (the YAMLs configs/generate/nb360_<task>.yaml are not written here: the generate config
schema is being changed; the YAMLs are to be written from these dicts).

What the baselines are, read from the public code (github.com/rtu715/NAS-Bench-360 = Tu et al. 2022, and
github.com/sjunhongshen/DASH ``src/task_configs.py`` + ``src/networks/``):

- 2-D point tasks (spherical, ninapro) — VERIFIED: NB360 ``backbone/backbone_pt.py`` ``Backbone_Pt`` (the xternalz
  WideResNet), run with ``backbone: 16,4`` (``scripts/scifar100_retrain.yaml``, ``scripts/ninapro_retrain.yaml``),
  ``in_channels`` 3 / 1, 100 / 18 classes: conv3×3 (16, no bias) → 3 groups × 2 pre-activation BasicBlocks
  (BN-ReLU-conv3×3-BN-ReLU-conv3×3, no biases, stride on the first conv, 1×1 shortcut when the shape changes),
  widths 64/128/256, strides 1/2/2 → BN-ReLU → average pool → linear. Dropout 0 (ninapro) / 0.3 (spherical
  retrain) does not change the cost.
- 2-D dense tasks (darcy_flow, psicov, cosmic) — VERIFIED: NB360 ``backbone/backbone_grid_wrn.py`` ``Backbone``
  (same blocks, strides 1/1/1: no downsampling) with a per-pixel ``nn.Linear(256, 1)`` on the channels-last map
  (counted here as the equivalent 1×1 conv with bias, the same params and MACs); ``backbone: 16,4`` is in
  ``scripts/pde_retrain.yaml`` and ``scripts/cosmic_retrain.yaml``. ASSUMED: 16,4 for psicov too (its stored
  retrain yamls carry no ``backbone`` key; ``model_grid_original.py`` takes depth and width from it). Not counted:
  the module also registers an unused 3×3 ``out_conv`` (256→1) and an input BatchNorm (``in_layer``, used in the
  forward of one stored version, bypassed in another); NB360's printed parameter count includes them
  (``nb360_registered_params`` in the JSON).
- 1-D tasks (ecg, satellite, deepsea) — VERIFIED, and NOT a wide ResNet: NB360 ``backbone_1d/`` ("Experiments on Wide
  ResNet - 1D") trains ``ResNet1D(in_channels, 64, n_classes)`` (``model_def.py``, ``backbone_1d.py``, from
  okrasolar/pytorch-timeseries, the Wang et al. 2017 time-series ResNet): 3 residual blocks of 3
  Conv1d("same", bias)-BN-ReLU with kernels 8, 5, 3, widths 64/128/128, a 1×1 conv + BN shortcut where the width
  changes, no downsampling → mean over time → linear. DASH's ``networks/wrn1d.py`` is the same ``ResNet1D``.
  (No Conv1d WRN-16-4 with kernel 3 exists in either code base.)
- Cross-check, DASH's WRN baselines (``get_model``/``get_config``: ``arch_retrain_default`` 'wrn-16-4' for 2-D,
  'wrn' for 1-D): 2-D ``Wide_ResNet`` has conv biases and strides on the SECOND conv of a block (its first conv runs
  at the input resolution: more MACs); dense tasks (``remain_shape``) use strides 1 and the per-pixel linear.
  1-D uses ``mid_channels = min(4 ** (num_classes // 10 + 1), 64)`` — 4 for ECG, 64 for satellite/deepsea — and
  causal convolutions (padding (k−1), then the extra outputs chomped: a few more MACs). Reported next to the NB360
  figures (``dash`` in the JSON); the budgets use the NB360 ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_nas.space.cost import count_cost  # noqa: E402
from lightning_nas.tasks import NB360_TASKS, NB360Task  # noqa: E402


class WRNBlock(nn.Module):
    """Pre-activation BasicBlock: BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus a 1×1 conv shortcut when the shape changes.
    ``stride_first``: the stride on the first conv (NB360/xternalz) or on the second (DASH)."""

    def __init__(self, cin: int, cout: int, stride: int, bias: bool, stride_first: bool):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride if stride_first else 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1 if stride_first else stride, 1, bias=bias)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=bias) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return out + (x if self.shortcut is None else self.shortcut(h))


class WRN(nn.Module):
    """WRN-depth-widen (2-D): conv3×3 (16) → 3 groups of (depth−4)/6 blocks, widths 16/32/64·widen, strides 1/2/2
    (all 1 when ``dense``) → BN-ReLU → global average pool + linear, or (``dense``) a per-pixel linear (1×1
    conv)."""

    def __init__(self, in_channels: int, num_outputs: int, dense: bool, depth: int = 16, widen: int = 4,
                 bias: bool = False, stride_first: bool = True):
        super().__init__()
        assert (depth - 4) % 6 == 0, "WRN depth should be 6n+4"
        n, widths = (depth - 4) // 6, [16 * widen, 32 * widen, 64 * widen]
        strides = [1, 1, 1] if dense else [1, 2, 2]
        self.dense = dense
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=bias)
        blocks, cin = [], 16
        for width, stride in zip(widths, strides):
            for i in range(n):
                blocks.append(WRNBlock(cin, width, stride if i == 0 else 1, bias, stride_first))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Conv2d(cin, num_outputs, 1) if dense else nn.Linear(cin, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(out) if self.dense else self.head(out.mean((2, 3)))


class ResNet1DBlock(nn.Module):
    """Three Conv1d-BN-ReLU (kernels 8, 5, 3, stride 1, length kept) plus a 1×1 conv + BN shortcut when the width
    changes. ``causal``: DASH's padding (k−1) then chomp; else TensorFlow-style "same" padding (NB360)."""

    def __init__(self, cin: int, cout: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.convs = nn.ModuleList(nn.Conv1d(c, cout, k, padding=k - 1 if causal else "same")
                                   for c, k in ((cin, 8), (cout, 5), (cout, 3)))
        self.bns = nn.ModuleList(nn.BatchNorm1d(cout) for _ in range(3))
        self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1), nn.BatchNorm1d(cout)) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, length = x, x.shape[-1]
        for conv, bn in zip(self.convs, self.bns):
            out = conv(out)
            out = F.relu(bn(out[..., :length] if self.causal else out))
        return out if self.shortcut is None else out + self.shortcut(x)


class ResNet1D(nn.Module):
    """NB360's 1-D baseline (Wang et al. 2017): blocks of widths mid, 2·mid, 2·mid → mean over time → linear."""

    def __init__(self, in_channels: int, num_outputs: int, mid: int = 64, causal: bool = False):
        super().__init__()
        self.blocks = nn.Sequential(ResNet1DBlock(in_channels, mid, causal), ResNet1DBlock(mid, 2 * mid, causal),
                                    ResNet1DBlock(2 * mid, 2 * mid, causal))
        self.head = nn.Linear(2 * mid, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(-1))


def nb360_baseline(task: NB360Task) -> tuple[nn.Module, str]:
    """The NB360 (Tu et al. 2022) baseline of ``task`` and its description."""
    channels = task.input_shape[0]
    if task.dims == 1:
        return ResNet1D(channels, task.num_outputs), "NB360 ResNet1D-64 (k 8/5/3, widths 64/128/128, no downsampling)"
    if task.dense:
        return (WRN(channels, task.num_outputs, dense=True),
                "NB360 WRN-16-4 dense (strides 1/1/1, per-pixel linear)")
    return WRN(channels, task.num_outputs, dense=False), "NB360 WRN-16-4 (strides 1/2/2, avg-pool + linear)"


def dash_baseline(task: NB360Task) -> tuple[nn.Module, str]:
    """DASH's (``get_model``) retraining baseline of ``task``, for comparison."""
    channels = task.input_shape[0]
    if task.dims == 1:
        mid = min(4 ** (task.num_outputs // 10 + 1), 64)
        return ResNet1D(channels, task.num_outputs, mid, causal=True), f"DASH ResNet1D-{mid} (causal)"
    model = WRN(channels, task.num_outputs, dense=task.dense, bias=True, stride_first=False)
    return model, "DASH Wide_ResNet-16-4" + (" remain_shape" if task.dense else "")


def count(build, task: NB360Task, device: str) -> tuple[dict[str, int], str]:
    with torch.device(device):
        model, variant = build(task)
    return count_cost(model, task.input_shape), variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-configs", action="store_true",
                        help="print the per-task generate budgets and store them in the JSON under 'configs'")
    parser.add_argument("--cpu-check-macs", type=float, default=1e9,
                        help="recount on CPU tensors every model below this many MACs (must match the meta count)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nb360_wrn_budgets.md"))
    args = parser.parse_args()

    rows, checked = [], []
    for name, task in NB360_TASKS.items():
        cost, variant = count(nb360_baseline, task, "meta")
        dash, dash_variant = count(dash_baseline, task, "meta")
        for build, figures in ((nb360_baseline, cost), (dash_baseline, dash)):
            if figures["macs"] < args.cpu_check_macs:
                on_cpu = count(build, task, "cpu")[0]
                if on_cpu != figures:
                    raise RuntimeError(f"{name}: meta count {figures} != CPU count {on_cpu}")
                checked.append(f"{name} ({build.__name__.split('_')[0]})")
        row = {"task": name, "input_shape": list(task.input_shape), "num_outputs": task.num_outputs,
               "dense": task.dense, "dims": task.dims, "variant": variant, **cost,
               "dash": {"variant": dash_variant, **dash}}
        if task.dense:  # registered by NB360's Backbone but not in its forward: 3×3 out_conv and the input BN
            row["nb360_registered_params"] = cost["params"] + 256 * 9 * task.num_outputs + task.num_outputs \
                + 2 * task.input_shape[0]
        rows.append(row)
        print(f"{name:<11} {cost['params']:>11,} params {cost['macs']:>16,} MACs   (DASH {dash['params']:,} / "
              f"{dash['macs']:,})", flush=True)

    table = ("| task | input shape | outputs | dense | params | MACs | FLOPs (2·MACs) | baseline |\n"
             "|---|---|---|---|---:|---:|---:|---|\n")
    table += "".join(f"| {r['task']} | {'×'.join(map(str, r['input_shape']))} | {r['num_outputs']} | "
                     f"{'yes' if r['dense'] else 'no'} | {r['params']:,} | {r['macs']:,} | "
                     f"{r['flops']:,} | {r['variant']} |\n" for r in rows)
    dash_table = ("| task | DASH baseline | params | MACs | FLOPs |\n|---|---|---:|---:|---:|\n"
                  + "".join(f"| {r['task']} | {r['dash']['variant']} | {r['dash']['params']:,} | "
                            f"{r['dash']['macs']:,} | {r['dash']['flops']:,} |\n" for r in rows))
    note = (f"\nCounted with `lightning_nas.space.cost.count_cost` (PyTorch's FlopCounterMode; convolutions and linear "
            "layers; BN/ReLU/pooling/additions not counted; FLOPs = 2 × MACs) on one sample of each task's "
            "`input_shape` from `datamodules/nb360/tasks.py`, models on the meta device; recounted on CPU tensors "
            f"and equal: {', '.join(checked) or 'none'} ({time.strftime('%Y-%m-%d')}). Dense tasks: the NB360 module "
            "also registers an unused 3×3 out_conv and an input BN, which its printed parameter count includes: "
            + ", ".join(f"{r['task']} {r['nb360_registered_params']:,}" for r in rows if "nb360_registered_params" in r)
            + ". What is verified in the NB360/DASH code and what is assumed: see the script's docstring.\n")
    markdown = ("# NB360 WRN-baseline budgets (paper §4.3: the SG is conditioned on the WRN's #params and #FLOPs)\n\n"
                + table + note + "\n## Cross-check: DASH's baselines (not used for the budgets)\n\n" + dash_table)
    results = {"convention": "count_cost on one sample: conv + linear MACs, flops = 2*macs", "tasks": rows}
    if args.write_configs:
        configs = [{"task": r["task"], "budget": {"params": r["params"], "macs": r["macs"]}} for r in rows]
        results["configs"] = configs
        print("\nper-task generate budgets (configs/generate/nb360_<task>.yaml not written: the schema is changing):")
        for config in configs:
            print(json.dumps(config))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n" + markdown)


if __name__ == "__main__":
    main()
