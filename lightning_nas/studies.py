"""The paper's two studies at any scale, on the artifacts of one run directory: Table 1 (sampling around a reference
cell, §3.2) and Table 2 (search methods under one budget, §4). ``benchmarks/table1.py``, ``benchmarks/table2_search.py``
and ``python -m lightning_nas report`` call these.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .archive import Archive
from .generator import CellGenerator
from .search import ArchEvaluator, Budget, HLEvoConfig, hl_evo
from .search.mutations import mutate_cell
from .space import Arch, Cell
from .zc import ZCNormaliser
from .zc.vector import Probe, zc_vector

# ---- Table 1: sampling around a reference -----------------------------------------------------------------------

SAMPLING_METHODS = (("Random", "prior"), ("Neighbourhood", "neighbourhood"), ("CCNF", "ccnf"))


def mean_std(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    """``mean±std`` of ``values / scale``."""
    v = [x / scale for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.{digits}f}±{sd:.{digits}f}"


def sampling_study(generator: CellGenerator, probe: Probe, normaliser: ZCNormaliser, reference: Cell,
                   samples: int = 20, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Table 1: ``samples`` cells from each of Random (G-VAE prior), Neighbourhood (f⁻¹(f(r) + ε)) and CCNF
    (f⁻¹(flow⁻¹(u; z(r))), τ = 1) around ``reference``; each sampled cell's ZC vector is measured on α_x.

    Returns ``{"reference": {"zc", "cell", "predicted_distance"}, "rows": [...], "raw": {method: ...}, "seconds"}``;
    a row has generation success, mean ± std of every ZC entry, the mean L1 distance to z(r) in normalised ZC space
    (measured, and through the G-VAE predictor q(f(x))), the number of unique cells and of copies of r.
    """
    start = time.perf_counter()
    z_ref = zc_vector(reference, probe)
    z_ref_norm = normaliser.transform([z_ref])[0]
    q_ref = float((generator.gvae.predict_zc(generator.gvae.encode([reference]))[0].cpu() - z_ref_norm).abs().sum())
    rows, raw = [], {}
    for label, method in SAMPLING_METHODS:
        kwargs = {} if method == "prior" else {"reference": reference}
        if method == "ccnf":
            kwargs["reference_zc"] = z_ref_norm
        out = generator.sample(samples, method=method, seed=seed, temperature=1.0, **kwargs)
        vectors = [zc_vector(cell, probe) for cell in out.cells]
        normalised = normaliser.transform(vectors)
        finite = torch.isfinite(normalised).all(1)
        distance = (normalised[finite] - z_ref_norm).abs().sum(1)
        predicted = generator.gvae.predict_zc(generator.gvae.encode(out.cells)).cpu()
        predicted_distance = (predicted - z_ref_norm).abs().sum(1)
        # the same distance over the distinct new cells only: copies of r (distance 0) and repeats flatter a sampler
        # that barely moves; this is the fair figure for "samples near r"
        seen, new = {reference.canonical_hash()}, []
        for cell, d in zip([c for c, f in zip(out.cells, finite.tolist(), strict=True) if f], distance.tolist(),
                           strict=True):
            if cell.canonical_hash() not in seen:
                seen.add(cell.canonical_hash())
                new.append(d)
        new_distance = torch.tensor(new) if new else torch.full((1,), float("nan"))
        rows.append({
            "method": label,
            "success": f"{out.clean}/{out.attempts}",
            "naswot": mean_std([v["naswot"] for v in vectors]),
            "snip": mean_std([v["snip_ssnr"] for v in vectors]),
            "params": mean_std([v["params"] for v in vectors], 1e6, 2),
            "flops": mean_std([v["flops"] for v in vectors], 1e6, 0),
            "distance": f"{distance.mean():.2f}±{distance.std():.2f}",
            "predicted_distance": f"{predicted_distance.mean():.2f}±{predicted_distance.std():.2f}",
            "new_distance": f"{new_distance.mean():.2f}±{new_distance.std() if len(new) > 1 else 0.0:.2f}",
            "unique": len({c.canonical_hash() for c in out.cells}),
            "identical_to_r": sum(c.canonical_hash() == reference.canonical_hash() for c in out.cells),
        })
        raw[label] = {"zc": vectors, "distance": distance.tolist(), "predicted_distance": predicted_distance.tolist(),
                      "attempts": out.attempts, "repairs": out.repairs, "rejections": out.rejections,
                      "cells": [c.to_json() for c in out.cells]}
        log(f"  {label}: distance to r {rows[-1]['distance']}")
    return {"reference": {"zc": z_ref, "cell": reference.to_json(), "predicted_distance": q_ref}, "rows": rows,
            "raw": raw, "seconds": round(time.perf_counter() - start, 1)}


def sampling_table(study: dict, reference_label: str = "reference r", reference_accuracy: str = "",
                   accuracy: str = "needs GPU training") -> str:
    """Markdown of :func:`sampling_study` in the paper's column order (reference row after Random)."""
    z, q = study["reference"]["zc"], study["reference"]["predicted_distance"]
    header = ("| Sampling method | Gen. success | NASWOT | SNIP-SSNR | Params (M) | FLOPs (M) "
              "| L1 to z(r) (normalised) "
              "| L1 to z(r), distinct new cells | L1 of q(f(x)) to z(r) | unique | = r | C-10 acc. |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['method']} | {r['success']} | {r['naswot']} | {r['snip']} | {r['params']} | {r['flops']} | "
             f"{r['distance']} | {r.get('new_distance', '–')} | {r['predicted_distance']} | {r['unique']} | "
             f"{r['identical_to_r']} | {accuracy} |\n" for r in study["rows"]]
    ref = (f"| {reference_label} | | {z['naswot']:.0f} | {z['snip_ssnr']:.0f} | {z['params'] / 1e6:.2f} | "
           f"{z['flops'] / 1e6:.0f} | 0 | 0 | {q:.2f} (q(f(r))) | | | {reference_accuracy} |\n")
    return header + lines[0] + ref + "".join(lines[1:])


def best_archived_cell(archive: Archive, probe_id: str, objective: str = "tcet") -> tuple[Cell, float]:
    """The labelled cell of ``archive`` with the highest ``objective`` on the probe ``probe_id``."""
    best = None
    for cell_hash, zc in archive.zc(probe_id).items():
        value = zc.get(objective)
        if value is not None and value == value and (best is None or value > best[1]):
            best = (cell_hash, float(value))
    if best is None:
        raise ValueError(f"{archive.path}: no labelled cell with a finite {objective}; run the zc stage first")
    best = (archive.get_cell(best[0]), best[1])
    return best


# ---- Table 2: search methods under one budget -------------------------------------------------------------------

SEARCH_METHODS = {
    "HL-Evo(T-CET)+CCNF": {"objective": "tcet", "hl": True},
    "Evo(T-CET)": {"objective": "tcet", "hl": False},
    "Evo(Zen)": {"objective": "zen", "hl": False},
    "Evo(ZiCo)": {"objective": "zico", "hl": False},
    "Random(T-CET)": {"objective": "tcet", "hl": False, "random": True},
}


def graphnet_cell(cell: Cell | None, cluster: int, rng: random.Random) -> Cell:
    """The GraphNet baselines' cells: random at the start, then cell-level mutations."""
    return Cell.random(rng=random.Random(rng.randrange(2**31))) if cell is None else mutate_cell(cell, rng)


def search_study(generator: CellGenerator, probe: Probe, budget: Budget, methods: Iterable[str],
                 seeds: Iterable[int], iterations: int, population: int, done: Iterable[dict] = (),
                 log: Callable[[dict], None] | None = None, task=None) -> list[dict]:
    """Table 2: every method of ``methods`` (keys of :data:`SEARCH_METHODS`) × seed in the same harness
    (:func:`~lightning_nas.search.hl_evo`, same α₀ structure, budget and iterations). For each run: the T-CET of the
    best architecture by the method's own objective after 25 %, 50 % and 100 % of the iterations (Zen/ZiCo winners
    rescored with T-CET), its params and MACs, evaluations, over-budget children and seconds. Rows in ``done`` (same
    settings, e.g. from an interrupted study) are kept instead of rerun. ``task`` (default: the probe's shape) is the
    network every budget is checked on, as in the search stage."""
    methods, seeds = list(methods), list(seeds)
    unknown = [m for m in methods if m not in SEARCH_METHODS]
    if unknown:
        raise ValueError(f"methods: {unknown}; choose from {list(SEARCH_METHODS)}")
    k = len(generator.clusters["means"])
    tcet = ArchEvaluator(probe, budget, "tcet", task)

    def ccnf_cell(cell, cluster, rng):
        return generator.sample(1, cluster=cluster, temperature=0.4, seed=rng.randrange(2**31)).cells[0]

    rows = [r for r in done if r["method"] in methods and r["seed"] in seeds]
    finished = {(r["method"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp, Archive(Path(tmp) / "study.sqlite", op_set="graphnet") as study:
        for name in methods:
            m = SEARCH_METHODS[name]
            for seed in seeds:
                if (name, seed) in finished:
                    continue
                start = time.perf_counter()
                config = HLEvoConfig(population, iterations, seed, two_phase=m["hl"],
                                     random_search=m.get("random", False))
                run = f"{name}-{seed}"
                state = hl_evo(config, ArchEvaluator(probe, budget, m["objective"], task),
                               ccnf_cell if m["hl"] else graphnet_cell, k if m["hl"] else 1, study, run, method=name)
                history = study.archs(stage="search", run=run)
                row = {"method": name, "seed": seed, "evaluations": state.evaluations,
                       "over_budget": state.over_budget, "failed": state.failed,
                       "seconds": round(time.perf_counter() - start, 1)}
                for share in (0.25, 0.5, 1.0):
                    upto = [r for r in history if r["metrics"]["iteration"] <= share * iterations
                            and r["metrics"]["status"] == "ok"]
                    best = max(upto, key=lambda r: r["metrics"]["score"])
                    score = (best["metrics"]["score"] if m["objective"] == "tcet"
                             else tcet(Arch.from_json(best["spec"])).score)
                    row[f"tcet@{int(share * 100)}%"] = score
                row["params"], row["macs"] = best["metrics"]["params"], best["metrics"]["macs"]
                stages = Arch.from_json(best["spec"]).stages  # how dense the winner's cells are (edges per cell)
                row["edges_per_cell"] = round(sum(len(s.cell.edges) for s in stages) / len(stages), 2)
                row["cells"] = sum(s.repeats for s in stages)
                rows.append(row)
                if log is not None:
                    log(row)
    rows.sort(key=lambda r: (methods.index(r["method"]), r["seed"]))
    return rows


def cluster_quality(generator: CellGenerator, probe: Probe, budget: Budget, initial: HLEvoConfig | None = None,
                    samples: int = 4, seed: int = 0, task=None) -> list[dict]:
    """Why HL-Evo wins or loses (Table 2's diagnosis): α₀'s macro structure with every stage's cell drawn by the CCNF
    from one cluster (τ = 0.4, as HL-Evo draws), per cluster, and with the GraphNet baselines' random cells — T-CET
    and cost of each, ``samples`` draws each. A cluster whose cells score no higher than random cells gives HL-Evo
    nothing that Evo's random start lacks; the spread between clusters is what exploring clusters can gain."""
    config = initial or HLEvoConfig()
    hl = config.initial_hl()
    evaluator = ArchEvaluator(probe, budget, "tcet", task)
    sources = [(f"cluster {k}", k) for k in range(len(generator.clusters["means"]))] + [("random GraphNet", None)]
    rows = []
    for name, k in sources:
        scores, params, over = [], [], 0
        for i in range(samples):
            rng = random.Random(f"cluster-quality:{seed}:{name}:{i}")
            if k is None:
                cells = tuple(graphnet_cell(None, 0, rng) for _ in hl.stages)
            else:
                cells = tuple(generator.sample(1, cluster=k, temperature=0.4, seed=rng.randrange(2**31)).cells[0]
                              for _ in hl.stages)
            evaluation = evaluator(evaluator.materialise(hl, cells))
            if evaluation.status == "over_budget":
                over += 1
            elif evaluation.status == "ok":
                scores.append(evaluation.score)
                params.append(evaluation.params)
        rows.append({"source": name, "cluster": k, "samples": samples, "over_budget": over,
                     "tcet_mean": statistics.mean(scores) if scores else None,
                     "tcet_max": max(scores) if scores else None,
                     "params_mean": statistics.mean(params) if params else None})
    return rows


def cluster_quality_table(rows: list[dict]) -> str:
    """Markdown of :func:`cluster_quality`."""
    def num(v):
        return "–" if v is None else f"{v:.3g}"

    table = "| cells of α₀ from | mean T-CET | best T-CET | mean params | over budget |\n|---|---|---|---|---|\n"
    for r in rows:
        table += (f"| {r['source']} | {num(r['tcet_mean'])} | {num(r['tcet_max'])} | {num(r['params_mean'])} | "
                  f"{r['over_budget']}/{r['samples']} |\n")
    return table


def search_table(rows: list[dict]) -> str:
    """Markdown of :func:`search_study`: mean ± std over seeds per method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def cell(method, key, fmt="{:.3g}"):
        values = [r[key] for r in rows if r["method"] == method and r.get(key) is not None]
        if not values:
            return "–"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"

    table = ("| method | best T-CET @25 % | @50 % | @100 % of iterations | params of best | MACs of best | "
             "cells / edges per cell of best | scored | over budget | s per run |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n")
    for name in methods:
        table += (f"| {name} | {cell(name, 'tcet@25%')} | {cell(name, 'tcet@50%')} | {cell(name, 'tcet@100%')} | "
                  f"{cell(name, 'params')} | {cell(name, 'macs')} | {cell(name, 'cells', '{:.1f}')} / "
                  f"{cell(name, 'edges_per_cell', '{:.1f}')} | {cell(name, 'evaluations', '{:.0f}')} | "
                  f"{cell(name, 'over_budget', '{:.0f}')} | {cell(name, 'seconds', '{:.0f}')} |\n")
    return table
