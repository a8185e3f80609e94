"""benchmarks/objectives.py and benchmarks/found_vs.py: the judge's numbers against hand-computed ones, the default
rule, the measured trainable range on the shipped ground truth, the found-vs table's pairing; and ``run_objective``
on a search written before objectives were recorded."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import found_vs  # noqa: E402
import objectives as bench  # noqa: E402


def test_judge_ranks_top_tenth_and_pick_by_hand():
    values = [float(v) for v in range(20)]  # the objective ranks network 19 first
    accuracy = [50.0 + v for v in range(20)]
    accuracy[19] = 10.0  # its best network trains badly
    j = bench.judge(values, accuracy, bootstrap=50)
    assert j["search_pick"] == 10.0 and j["n"] == 20
    assert j["top10pct_mean"] == pytest.approx((10.0 + 68.0) / 2)  # the top 2 of 20
    assert -1 < j["spearman"] < 1 and j["spearman_sd"] > 0
    rejected = bench.judge([-math.inf, *values[1:]], accuracy, bootstrap=0)  # a rejected network ranks last
    assert rejected["search_pick"] == 10.0 and rejected["spearman_sd"] is None


def test_default_rule_takes_the_best_mean_top_tenth_gap_over_both_spaces():
    gts = ["graphnet-digits", "graphnet-digits-e5", *(g for g, _ in bench.NB201_SETS)]
    top = {"a": [99, 90, 93, 70, 45], "b": [98, 97, 92, 69, 44], "params": [100, 100, 100, 100, 100]}
    rows = [{"objective": name, "ground_truth": gt, "top10pct_mean": v, "pointwise": True}
            for name, values in top.items() for gt, v in zip(gts, values, strict=True)]
    # a: digits gaps (0, −7), NB201 (0, 0, 0) → −1.75; b: digits (−1, 0), NB201 (−1, −1, −1) → −0.75; params excluded
    assert bench.default_by_rule(rows) == "b"
    rows.append({"objective": "c", "ground_truth": gts[0], "top10pct_mean": 100, "pointwise": True})  # incomplete
    assert bench.default_by_rule(rows) == "b"


def test_the_measured_range_separates_the_shipped_ground_truth():
    records = bench.digits_records()
    assert len(records) >= 100
    trainable, floor = bench.measured_range(records)
    acc = [r["accuracy"]["graphnet-digits"] for r in records]
    grad = [r["grad_norm_at_init"] for r in records]
    admitted_good = sum(trainable.admits(g) for g, a in zip(grad, acc, strict=True) if a >= floor)
    admitted_bad = sum(trainable.admits(g) for g, a in zip(grad, acc, strict=True) if a < floor)
    good, bad = sum(a >= floor for a in acc), sum(a < floor for a in acc)
    assert admitted_good / good >= 0.84 and admitted_bad / bad <= 0.15  # measured: 62/73 and 4/27 (margin 1 point)
    shipped = json.loads(bench.RANGE_FILE.read_text())["spaces"]
    assert shipped["graphnet"]["hi"] == pytest.approx(trainable.hi, rel=0.5)  # the shipped file is this rule's output
    nb201, _ = bench.nb201_range(bench.nb201_records())  # set by validation accuracy, never test
    assert shipped["nb201"]["lo"] == pytest.approx(nb201.lo, rel=0.5) and nb201.lo > trainable.lo


def test_found_vs_table_pairs_found_with_each_alternative():
    def row(name, g, t, e, acc):
        return {"name": name, "generate_seed": g, "train_seed": t, "epochs": e, "test_metric": acc,
                "grad_norm_at_init": 3.0, "params": 1e5, "macs": 1e7, "objective": "guarded_tcet", "spec": {}}

    rows = [row("found", g, t, 15, 0.97 + 0.001 * g) for g in (0, 1) for t in (0, 1)]
    rows += [row("random", g, t, 15, 0.95) for g in (0, 1) for t in (0, 1)]
    rows += [row("hand-picked", None, t, 15, 0.99) for t in (0, 1)]
    table = found_vs.summary(rows)
    random_line = next(line for line in table.splitlines() if line.startswith("| random |"))
    hand_line = next(line for line in table.splitlines() if line.startswith("| hand-picked |"))
    assert "+2.05 ± 0.03 (4)" in random_line  # found − random: 0.02 and 0.021, twice each
    assert "-1.95 ± 0.03 (4)" in hand_line  # the one hand-picked network paired with every found one
    assert "## 5 epochs" in table and found_vs.spec_key({"a": 1}) == found_vs.spec_key({"a": 1})
    # later runs with a final selection, then with another guard bound: each a section of its own, hand-picked shared
    later = [{**row(name, 0, t, 15, acc), "selection": "top10-train_loss"}
             for name, acc in (("found", 0.99), ("random", 0.98)) for t in (0, 1)]
    tighter = [{**row(name, 0, t, 15, acc), "guard_hi": 108.1} for name, acc in (("found", 0.96),) for t in (0, 1)]
    sections = found_vs.summary(rows + later + tighter).split("\n## ")
    assert [s.split("\n", 1)[0] for s in sections[1:]] == [
        "guarded_tcet (‖∇θL‖ ≤ 108), selection none", "guarded_tcet, selection top10-train_loss",
        "guarded_tcet, selection none"]  # the newest first
    sections = sections[1:]
    new_random = next(line for line in sections[1].splitlines() if line.startswith("| random |"))
    new_hand = next(line for line in sections[1].splitlines() if line.startswith("| hand-picked |"))
    assert "| 2 |" in new_random and "+1.00 ± 0.00 (2)" in new_random and "0.00 ± 0.00 (2)" in new_hand


def test_run_objective_reads_a_search_written_before_objectives_were_recorded(tmp_path):
    from lightning_nas.generate import run_objective
    from lightning_nas.stages import RunDir
    from lightning_nas.zc.objectives import DEFAULT_OBJECTIVE

    run = RunDir(tmp_path)
    assert run_objective(run) == DEFAULT_OBJECTIVE  # no search at all
    run.metrics("search").parent.mkdir(parents=True)
    legacy = {"evaluations": 10, "best_tcet_500k": 1.0, "best_params_500k": 1, "best_macs_500k": 2,
              "run_500k": "hl-evo-500k-s0-abc"}
    run.metrics("search").write_text(json.dumps(legacy))
    assert run_objective(run) == "tcet"
    run.metrics("search").write_text(json.dumps({**legacy, "objective": "naswot"}))
    assert run_objective(run) == "naswot"


def test_found_vs_reuses_an_identical_training_of_another_setting(tmp_path):
    """A network that a new setting picks and an old setting already trained (same name, seeds and spec) counts for
    the new setting's table too, once; a shared row (hand-picked) is not copied."""
    old = {"name": "random", "generate_seed": 4, "train_seed": 0, "epochs": 15, "test_metric": 0.99, "spec": {"a": 1},
           "objective": "guarded_tcet", "guard_hi": 108.0, "selection": "none", "score": 1.0}
    hand = {**old, "name": "hand-picked", "generate_seed": None}
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in (old, hand)))
    nets = [{"name": "random", "generate_seed": 4, "spec": {"a": 1}, "objective": "guarded_snip_ssnr", "guard_hi": 20.4,
             "selection": "none", "score": 2.0}, {**hand, "spec": {"a": 1}}]
    found_vs.reuse(nets, [0], found_vs.read_rows(out), out)
    rows = found_vs.read_rows(out)
    assert len(rows) == 3 and rows[2]["objective"] == "guarded_snip_ssnr" and rows[2]["test_metric"] == 0.99
    assert rows[2]["reused_from"] == found_vs.setting(old) != found_vs.setting(rows[2])
    found_vs.reuse(nets, [0], rows, out)  # idempotent
    assert len(found_vs.read_rows(out)) == 3
