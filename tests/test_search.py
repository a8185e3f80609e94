"""HL-Evo: mutations stay in the space, budgets hold, the history survives kill -9 and is a function of the seed."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lightning_nas.archive import Archive
from lightning_nas.search import ArchEvaluator, Budget, Candidate, HLEvoConfig, hl_evo, mutate, scale_width
from lightning_nas.search.mutations import mutate_cell
from lightning_nas.space import CHANNEL_GRID, MAX_CELLS, Cell
from lightning_nas.space.cost import count_cost
from lightning_nas.space.hl import MAX_DOWNSAMPLINGS, HLArch, HLStage
from lightning_nas.space.nb201 import cell_from_nb201
from lightning_nas.space.network import task_network
from lightning_nas.space.task import TASKS
from lightning_nas.zc import Probe
from tests.conftest import REPO, gen_cell


def test_scale_width_clamps_and_rounds_down_to_the_grid():
    assert scale_width(64, 2.5) == 160 and scale_width(8, 1 / 2.5) == 8 and scale_width(1024, 2) == 1024
    assert scale_width(24, 1 / 1.5) == 16 and scale_width(40, 1.25) == 48


def test_mutations_respect_every_constraint_of_the_space():
    rng = random.Random(0)
    hl = HLArch(tuple(HLStage(0, c, 2, 1) for c in (8, 16, 32, 64)), 128)
    pool = [Candidate(hl, tuple(gen_cell(None, 0, rng) for _ in hl.stages))]
    seen = set()
    for step in range(3000):
        parent = rng.choice(pool)
        exploration = step % 2 == 0
        child, changes = mutate(parent, rng, num_clusters=4, new_cell=gen_cell, exploration=exploration)
        seen.update(changes)
        assert isinstance(child.hl, HLArch) and len(child.cells) == len(child.hl.stages)
        assert 1 <= child.hl.num_cells <= MAX_CELLS
        assert all(s.channels in CHANNEL_GRID and s.stride in (1, 2) and 0 <= s.cluster < 4 for s in child.hl.stages)
        assert child.hl.final_channels in CHANNEL_GRID
        assert child.hl.downsamplings <= max(MAX_DOWNSAMPLINGS, parent.hl.downsamplings)
        child.hl.materialise(child.cells)  # a valid Arch
        if not exploration:  # exploitation keeps the cluster sequence (a stage may only disappear)
            assert "cluster" not in changes and "insert" not in changes
            clusters = [s.cluster for s in child.hl.stages]
            parent_clusters = [s.cluster for s in parent.hl.stages]
            assert clusters == parent_clusters or len(clusters) == len(parent_clusters) - 1
        pool.append(child)
    assert seen == {"cell", "cluster", "channels", "stride", "repeats", "insert", "final"}
    assert max(c.hl.num_cells for c in pool) == MAX_CELLS  # the search can grow to 20 cells
    assert max(c.hl.downsamplings for c in pool) == MAX_DOWNSAMPLINGS  # … and reach 32× downsampling, not more


def test_cell_mutations_give_valid_different_cells_and_reach_every_kind_of_change():
    rng = random.Random(1)
    cell = Cell.random(seed=0)
    kinds = set()
    for _ in range(500):
        child = mutate_cell(cell, rng)
        assert child != cell  # Cell() validated it
        kinds.add("op" if child.ops != cell.ops else "add" if len(child.edges) > len(cell.edges) else "remove")
        cell = child
    assert kinds == {"op", "add", "remove"}
    nb201 = mutate_cell(cell_from_nb201("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                        "nor_conv_3x3~1|nor_conv_1x1~2|"), rng, op_set="nb201")
    assert set(nb201.ops) <= {"conv_k1", "conv_k3", "avg_pool_k3", "skip"}


@pytest.fixture(scope="module")
def probe():
    return Probe.from_source("gaussian", seed=0, batch_size=4)


def test_budgets_are_never_violated_and_discards_are_counted(probe, tmp_path):
    budget = Budget("150k", max_params=150_000)
    config = HLEvoConfig(population=6, iterations=30, seed=0)
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        state = hl_evo(config, ArchEvaluator(probe, budget), gen_cell, 3, archive, "run")
        history = archive.archs(stage="search", run="run")
    assert len(history) == state.iterations == 31
    assert [r["metrics"]["iteration"] for r in history] == list(range(31))
    ok = [r["metrics"] for r in history if r["metrics"]["status"] == "ok"]
    over = [r["metrics"] for r in history if r["metrics"]["status"] == "over_budget"]
    assert state.evaluations == len(ok) and state.over_budget == len(over) > 0
    assert all(m["params"] <= 150_000 for m in ok) and all(m["params"] > 150_000 for m in over)
    assert all(m["score"] is None for m in over)  # over-budget children are not scored
    assert len(state.population) <= 6
    assert all(score <= state.best[1] for _, score in state.population)
    assert history[0]["budget"]["max_params"] == 150_000 and history[0]["hl_spec"]["final_channels"] == 128


_RUNNER = """
import random, sys
sys.path.insert(0, {repo!r})
from lightning_nas.archive import Archive
from lightning_nas.search import ArchEvaluator, Budget, HLEvoConfig, hl_evo
from lightning_nas.zc import Probe
from tests.conftest import gen_cell
with Archive(sys.argv[1], op_set="graphnet") as archive:
    hl_evo(HLEvoConfig(population=5, iterations=int(sys.argv[2]), seed=3),
           ArchEvaluator(Probe.from_source("gaussian", seed=0, batch_size=4), Budget("b", max_params=150_000)),
           gen_cell, 3, archive, "run")
"""


def _history(path):
    with Archive(path) as archive:
        return [(r["metrics"]["iteration"], r["spec"], r["metrics"]["status"], r["metrics"]["score"])
                for r in archive.archs(stage="search", run="run")]


def test_kill_9_resume_loses_and_repeats_nothing_and_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER.format(repo=str(REPO)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "24"], cwd=REPO, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or len(_history(killed)) < 8):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _history(killed)
    assert 8 <= len(partial) < 25
    subprocess.run([sys.executable, str(script), str(killed), "24"], cwd=REPO, env=env, check=True, timeout=300)
    resumed = _history(killed)
    assert [i for i, *_ in resumed] == list(range(25))  # nothing lost, nothing repeated
    assert resumed[: len(partial)] == partial

    clean = tmp_path / "clean.sqlite"
    subprocess.run([sys.executable, str(script), str(clean), "24"], cwd=REPO, env=env, check=True, timeout=300)
    assert _history(clean) == resumed  # same seed → same history, interrupted or not


def test_search_stage_end_to_end_writes_history_outputs_and_resumes(tiny_archive, tiny_gvae, tiny_ccnf, tmp_path,
                                                                    monkeypatch):
    """The stage on real (tiny) artifacts: G-VAE, a CCNF trained on its latents, two clusters; two budgets, T-CET on
    the archive's 2-image Gaussian probe."""
    import json
    import shutil

    from lightning_nas.cli import main as cli_main
    from lightning_nas.cluster import write_clusters
    from lightning_nas.search.stage import SearchStageConfig, run_search_stage

    shutil.copy(tiny_archive, tmp_path / "archive.sqlite")
    shutil.copy(tiny_ccnf, tmp_path / "ccnf.ckpt")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    config = SearchStageConfig(
        workdir=str(tmp_path), gvae=str(tiny_gvae), ccnf=str(tmp_path / "ccnf.ckpt"),
        clusters=str(tmp_path / "clusters.json"), population=3, iterations=4, seed=1,
        # "small" must admit α₀, whose size depends on the cells the tiny CCNF draws (≈ 166k–200k params with the
        # up-to-6-node sampler's cells); 150k no longer did
        budgets=[{"name": "small", "max_params": 400_000}, {"name": "big", "max_macs": 50_000_000}],
    )
    metrics = run_search_stage(config)
    from lightning_nas.zc.objectives import DEFAULT_OBJECTIVE

    assert metrics["objective"] == DEFAULT_OBJECTIVE  # recorded: generate ranks by it
    best_big, best_small = f"best_{DEFAULT_OBJECTIVE}_big", f"best_{DEFAULT_OBJECTIVE}_small"
    assert (metrics["iterations"] == 10
            and metrics["evaluations"] + metrics["discarded_over_budget"] + metrics["rejected"] + metrics["failed"]
            == 10)  # every iteration counted once: scored, over budget, rejected by the guard, or failed
    assert metrics["evals_per_s"] > 0 and metrics[best_big] > 0 and metrics[best_small] > 0
    out = tmp_path / "search"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "pareto_big.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads((out / "best_big.json").read_text())
    with Archive(tmp_path / "archive.sqlite") as archive:
        history = archive.archs(stage="search", run=metrics["run_big"])
        scores = [r["metrics"]["score"] for r in history if r["metrics"]["status"] == "ok"]
        assert len(history) == 5 and max(scores) == metrics[best_big]
        assert best in [r["spec"] for r in history]
        total = len(archive.archs(stage="search"))
    # rerunning the same config resumes the finished runs: nothing is evaluated again
    cli_main_args = ["search", "--workdir", str(tmp_path), "--gvae", str(tiny_gvae), "--ccnf",
                             str(tmp_path / "ccnf.ckpt"), "--clusters", str(tmp_path / "clusters.json"),
                             "--population", "3", "--iterations", "4", "--seed", "1", "--budgets",
                             json.dumps(config.budgets)]
    cli_main(cli_main_args)
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert len(archive.archs(stage="search")) == total
    assert json.loads((out / "metrics.json").read_text())[best_big] == metrics[best_big]
    with pytest.raises(ValueError, match="clusters.json has 2"):
        run_search_stage(SearchStageConfig(**{**config.__dict__, "initial": [[5, 8, 2, 1]]}))
    # W&B: an offline run per budget with the best-so-far curve and the Pareto plot (one budget's run is finished
    # before the next starts: a process holds one W&B run at a time)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_search_stage(SearchStageConfig(**{**config.__dict__, "iterations": 1, "wandb": True,
                                          "budgets": [{"name": "w"}, {"name": "v"}]}))
    runs = list((out / "wandb" / "wandb").glob("offline-run-*")) + list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(any(r.rglob("*.wandb")) for r in runs)
    assert (out / "pareto_w.png").exists() and (out / "pareto_v.png").exists()


class CountingEvaluator:
    """A stand-in scorer (no network): score = number of cells, so the search logic runs in milliseconds."""

    objective, budget = "cells", Budget("none")
    task = TASKS["cifar10"]

    def materialise(self, hl, cells):
        return self.task.materialise(hl, cells)

    def __call__(self, arch):
        from lightning_nas.search import Evaluation

        return Evaluation("ok", float(arch.num_cells), 1, 1, 1, 0.0)


class CostEvaluator(CountingEvaluator):
    """Counts cells, but checks a params budget on the task's real network first."""

    budget = Budget("small", max_params=150_000)

    def cost(self, model):  # ArchEvaluator.cost: what the random baseline's rejection sampling checks
        return count_cost(model, self.task.input_shape)

    def __call__(self, arch):
        from lightning_nas.search import Evaluation

        params = count_cost(task_network(self.task, arch), self.task.input_shape)["params"]
        status = "over_budget" if self.budget.violations({"params": params, "macs": 0, "flops": 0}) else "ok"
        return Evaluation(status, float(arch.num_cells) if status == "ok" else None, params, 1, 1, 0.0)


def test_random_baseline_draws_within_the_budget(tmp_path):
    """#20 item 8: the random baseline used to spend most iterations on over-budget networks (91 of 101 discarded in
    the demo); it now draws until a network fits, and says how many draws that took."""
    config = HLEvoConfig(population=4, iterations=12, seed=0, random_search=True,
                         initial=((0, 8, 2, 1), (0, 16, 2, 1)), initial_final_channels=None)
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        state = hl_evo(config, CostEvaluator(), gen_cell, 3, archive, "random")
        rows = archive.archs(run="random")
    draws = [int(r["metrics"]["changes"][1].split(":")[1]) for r in rows[1:]]
    assert state.over_budget == 0 and state.evaluations == 13 and max(draws) > 1
    assert all(r["metrics"]["params"] <= 150_000 for r in rows)


def test_random_search_and_single_phase_modes(tmp_path):
    from lightning_nas.search.hl_evo import random_candidate

    rng = random.Random(0)
    for _ in range(200):
        c = random_candidate(rng, 3, gen_cell)
        assert 2 <= len(c.hl.stages) <= 6 and c.hl.num_cells <= MAX_CELLS and c.hl.downsamplings <= MAX_DOWNSAMPLINGS
        c.hl.materialise(c.cells)
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        hl_evo(HLEvoConfig(population=4, iterations=30, seed=0, random_search=True), CountingEvaluator(),
               gen_cell, 3, archive, "random")
        hl_evo(HLEvoConfig(population=4, iterations=60, seed=0), CountingEvaluator(), gen_cell, 3, archive, "two")
        hl_evo(HLEvoConfig(population=4, iterations=60, seed=0, two_phase=False), CountingEvaluator(), gen_cell, 3,
               archive, "one")
        changes = {run: [(r["metrics"]["iteration"], r["metrics"]["changes"]) for r in archive.archs(run=run)]
                   for run in ("random", "two", "one")}
    assert all(c == ["random", "draws:1"] for i, c in changes["random"][1:])  # no budget: the first draw
    late = lambda run: {x for i, c in changes[run] if i > 30 for x in c}  # noqa: E731
    assert "cluster" not in late("two") and "insert" not in late("two")  # exploitation phase
    assert "cluster" in late("one")


# ---- over ranks ------------------------------------------------------------------------------------------------------
def _batched_search(ranks, path: str, batch: int) -> list:
    """HL-Evo with generations of ``batch`` children scored across the ranks; rank 0 writes the history."""
    evaluate = ArchEvaluator(Probe.from_source("gaussian", seed=0, batch_size=4), Budget("b", max_params=150_000))
    with Archive(path, op_set="graphnet") as archive:
        hl_evo(HLEvoConfig(population=4, iterations=9, seed=0, batch=batch), evaluate, gen_cell, 3, archive, "run",
               evaluate_many=lambda archs: ranks.map(evaluate, archs), write=ranks.rank == 0)
    return _history(path) if ranks.rank == 0 else None


def test_batched_generations_give_the_same_history_on_one_and_two_ranks(tmp_path):
    """batch: 4 — each generation's children drawn from the population at its start and scored across ranks: the
    history depends on the batch, not on the number of processes; batch 1 is Algorithm 1 as before."""
    from lightning_nas.distributed import launch

    # one torch thread per process in both: the proxies' float sums change with the thread count
    one = launch(_batched_search, str(tmp_path / "one.sqlite"), 4, threads=1)
    two = launch(_batched_search, str(tmp_path / "two.sqlite"), 4, workers=2, threads=1)
    assert [i for i, *_ in one] == list(range(10)) and two == one
    sequential = launch(_batched_search, str(tmp_path / "seq.sqlite"), 1)
    assert sequential != one  # a generation's children see no sibling: another history than one at a time
    with Archive(tmp_path / "seq2.sqlite", op_set="graphnet") as archive:  # batch 1 = the sequential loop
        hl_evo(HLEvoConfig(population=4, iterations=9, seed=0),
               ArchEvaluator(Probe.from_source("gaussian", seed=0, batch_size=4), Budget("b", max_params=150_000)),
               gen_cell, 3, archive, "run")
    assert _history(tmp_path / "seq2.sqlite") == sequential


def _threads(ranks) -> int:
    import torch

    return torch.get_num_threads()


def test_one_process_launch_runs_under_the_threads_asked_for_and_restores_them():
    """``threads`` holds for one process too (it used to be ignored there, so ``--threads 1`` on one worker scored
    with every core and its T-CET differed from a two-rank run's at ~1e-4)."""
    import torch

    from lightning_nas.distributed import launch

    before = torch.get_num_threads()
    assert launch(_threads, threads=1) == 1 and torch.get_num_threads() == before
    assert launch(_threads) == before


def test_history_shards_merge_once_and_skip_a_torn_line(tmp_path):
    import json

    from lightning_nas.search.stage import ShardHistory, merge_history_shards

    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        archive.add_arch({"a": 0}, {"iteration": 0}, None, None, stage="search", run="r")
        shard = ShardHistory(archive.archs(stage="search", run="r"), tmp_path / "shards" / "r.jsonl")
        for i in range(3):
            shard.add_arch({"a": i}, {"iteration": i}, None, None, "search", "r")  # iteration 0 is stored already
        assert [r["metrics"]["iteration"] for r in shard.archs()] == [0, 0, 1, 2]
        with open(shard.path, "a") as f:
            f.write(json.dumps({"spec": {}, "metrics": {"iteration": 3}})[:15])  # cut short by a kill
        copy = (tmp_path / "shards" / "r.jsonl").read_text()
        assert merge_history_shards(archive, tmp_path / "shards") == 2
        (tmp_path / "shards" / "again.jsonl").write_text(copy)  # merged twice (killed before the unlink)
        assert merge_history_shards(archive, tmp_path / "shards") == 0
        assert [r["metrics"]["iteration"] for r in archive.archs(stage="search", run="r")] == [0, 1, 2]
        assert list((tmp_path / "shards").iterdir()) == []


def test_a_two_rank_search_with_two_budgets_equals_two_one_rank_searches(tiny_archive, tiny_gvae, tiny_ccnf,
                                                                        tmp_path):
    import shutil

    from lightning_nas.cluster import write_clusters
    from lightning_nas.search.stage import SearchStageConfig, run_search_stage

    budgets = [{"name": "small", "max_params": 400_000}, {"name": "big", "max_macs": 50_000_000}]
    histories = {}
    for name, workers, runs in (("two", 2, [budgets]), ("one", 1, [[b] for b in budgets])):
        workdir = tmp_path / name
        workdir.mkdir()
        shutil.copy(tiny_archive, workdir / "archive.sqlite")
        write_clusters(workdir / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=workdir / "archive.sqlite")
        for chosen in runs:
            metrics = run_search_stage(SearchStageConfig(
                workdir=str(workdir), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf), clusters=str(workdir / "clusters.json"),
                population=3, iterations=3, seed=1, budgets=chosen, workers=workers, threads=1))
        assert metrics["processes"] == workers
        with Archive(workdir / "archive.sqlite") as archive:  # by budget: a run id hashes the workdir too
            histories[name] = {r["budget"]["name"]: [] for r in archive.archs(stage="search")}
            for r in archive.archs(stage="search"):
                histories[name][r["budget"]["name"]].append((r["metrics"]["iteration"], r["spec"],
                                                             r["metrics"]["status"], r["metrics"]["score"]))
        assert not (workdir / "search" / "shards").exists() or not list((workdir / "search" / "shards").iterdir())
    assert len(histories["two"]) == 2 and all(len(h) == 4 for h in histories["two"].values())
    assert histories["two"] == histories["one"]


def test_a_rejected_initial_architecture_is_redrawn_and_rejections_are_counted_apart(probe, tmp_path):
    """#29: a guarded objective that refuses α₀ used to stop the search ("the initial architecture is over budget or
    failed"); the search now redraws random in-budget architectures until one is admitted, and counts rejections
    apart from failures."""
    from lightning_nas.space.arch import Arch
    from lightning_nas.zc.trainability import TrainableRange, init_grad_norm

    config = HLEvoConfig(population=4, iterations=12, seed=0)
    evaluator = ArchEvaluator(probe, Budget("150k", max_params=150_000), "guarded_naswot",
                              trainable=TrainableRange(0.0, 1e12))
    with Archive(tmp_path / "a.sqlite", op_set="graphnet") as archive:
        hl_evo(HLEvoConfig(population=4, iterations=0, seed=0), evaluator, gen_cell, 3, archive, "alpha0")
        g0 = init_grad_norm(Arch.from_json(archive.archs(run="alpha0")[0]["spec"]), evaluator.task)
        evaluator.trainable = TrainableRange(0.0, 0.9 * g0, "test")  # α₀ just outside
        state = hl_evo(config, evaluator, gen_cell, 3, archive, "run")
        rows = archive.archs(stage="search", run="run")
    statuses = [r["metrics"]["status"] for r in rows]
    assert statuses[0] == "rejected" and "grad_norm_at_init" in rows[0]["metrics"]["reason"]
    assert state.rejected == statuses.count("rejected") >= 1 and state.failed == statuses.count("failed")
    assert state.evaluations == statuses.count("ok") >= 1 and state.best is not None
    first_ok = statuses.index("ok")
    assert all(r["metrics"]["changes"][0] == "redraw" for r in rows[1:first_ok + 1])  # redraws until admitted
    assert all(init_grad_norm(Arch.from_json(r["spec"]), evaluator.task) <= 0.9 * g0 for r in rows
               if r["metrics"]["status"] == "ok")
