"""Sequence generator: tokenizer, HL sequences, GPT-Neo training, constrained and budget-guided decoding, the
``generate`` stage."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from callbacks import MetricsFile
from lightning_nas.cluster import write_clusters
from lightning_nas.hl_tokenizer import BOS, EOS, SEP, HLTokenizer, LogBins
from lightning_nas.search.hl_evo import random_candidate
from lightning_nas.space.arch import MAX_CELLS
from lightning_nas.space.cell import Cell
from lightning_nas.space.cost import count_cost
from lightning_nas.space.hl import MAX_DOWNSAMPLINGS, HLArch, HLStage
from lightning_nas.space.hl_cost import HLParamsEstimate
from lightning_nas.space.network import build_network, task_cost, task_network
from tests.conftest import REPO


def random_cell(cell, cluster, rng):
    return Cell.random(rng=random.Random(rng.randrange(2**31)))


def random_hl(rng: random.Random, clusters: int = 3) -> HLArch:
    stages, total = [], 0
    for _ in range(rng.randint(1, 8)):
        repeats = rng.randint(1, min(4, MAX_CELLS - total)) if total < MAX_CELLS else 0
        if not repeats:
            break
        stages.append(HLStage(rng.randrange(clusters), 8 * rng.randint(1, 128), rng.choice((1, 2)), repeats))
        total += repeats
    return HLArch(tuple(stages), rng.choice([None, 8 * rng.randint(1, 128)]))


# ---- tokenizer ----------------------------------------------------------------------------------------------------
def test_log_bins_hold_values_and_budget_bins_lie_under_the_limit():
    bins = LogBins(2, 10, 8)
    rng = random.Random(0)
    for _ in range(500):
        value = 10 ** rng.uniform(2, 10)
        lo, hi = bins.edges(bins.index(value))
        assert lo <= value * (1 + 1e-9) and value < hi * (1 + 1e-9)
        under = bins.index_under(value)
        assert under in (bins.index(value), bins.index(value) - 1)
        assert bins.edges(under)[1] <= value * (1 + 1e-9) or under == 0  # bin 0 when no bin lies under the limit
    assert bins.index(1.0) == 0 and bins.index(-5) == 0 and bins.index(1e12) == bins.size - 1


def test_tokenizer_round_trip_and_persistence():
    tok = HLTokenizer(3)
    rng = random.Random(1)
    for _ in range(300):
        hl = random_hl(rng)
        values = {"classes": 10, "input_size": 32, "params": rng.uniform(1e4, 1e7), "tcet": rng.choice([None, 1e5])}
        ids = tok.encode(hl, values)
        assert ids[0] == BOS and ids[-1] == EOS and tok.decode(ids) == hl
        assert ids[: ids.index(SEP) + 1] == tok.prompt(values)
    again = HLTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.vocab == tok.vocab and len(set(tok.vocab)) == len(tok)
    assert "params:[1e+06, 1.33e+06)" in tok.describe(tok.prompt({"params": 1.1e6}))
    # a budget goes in the bin under it; a value in the bin holding it
    assert tok.prompt(limits={"params": 1e6}) == tok.prompt({"params": 9.9e5})
    assert tok.prompt({"params": 1e6}) != tok.prompt(limits={"params": 1e6})


def test_tokenizer_rejects_bad_input():
    tok = HLTokenizer(2)
    with pytest.raises(ValueError, match="unknown key"):
        tok.prompt({"latency": 3})
    with pytest.raises(ValueError, match="cluster 2"):
        tok.encode(HLArch((HLStage(2, 8),)))
    ids = tok.encode(HLArch((HLStage(1, 16, 2, 3),), 64))
    with pytest.raises(ValueError, match="no <eos>"):
        tok.decode(ids[:-1])
    with pytest.raises(ValueError, match="not cluster, channels, stride, repeats"):
        tok.decode(ids[:3] + [ids[4], ids[3]] + ids[5:])
    with pytest.raises(ValueError, match="num_clusters"):
        HLTokenizer(0)


def test_hardware_tokens_only_with_a_device_and_old_tokenizers_load_unchanged():
    """Latency/energy tokens exist in a tokenizer with a device; a limit goes in the bin under it; a record saved
    before hardware tokens existed (no ``device``, six condition keys) loads with the same vocabulary."""
    plain, hw = HLTokenizer(3), HLTokenizer(3, device="raspi4")
    assert "latency_ms" not in plain.keys and hw.keys[-2:] == ("latency_ms", "energy_mj")
    assert len(hw) == len(plain) + hw.bins["latency_ms"].size + hw.bins["energy_mj"].size
    prompt = hw.prompt({"params": 1e5}, {"latency_ms": 3.0})
    lo, hi = hw.bins["latency_ms"].edges(int(hw.vocab[prompt[-2]].split(":")[1]))
    assert hw.vocab[prompt[-2]].startswith("latency_ms:") and hi <= 3.0 < hi * 10 ** (1 / 8) + 1e-9
    assert HLTokenizer.from_dict(json.loads(json.dumps(hw.to_dict()))) == hw
    old = plain.to_dict()
    del old["device"]
    assert HLTokenizer.from_dict(old).vocab == plain.vocab and "latency_ms:0" not in plain.ids
    with pytest.raises(ValueError, match="hardware keys need a tokenizer with a device"):
        plain.prompt(limits={"latency_ms": 3.0})
    with pytest.raises(ValueError, match="need exactly the condition keys"):
        HLTokenizer(3, bins=plain.bins, device="raspi4")


def test_every_sequence_the_grammar_allows_is_a_legal_hl_architecture():
    """Walk the grammar with random choices (and with the always-longest choice): every walk decodes, ≤ 20 cells."""
    tok = HLTokenizer(4)
    rng = random.Random(2)
    most_strides = 0
    for trial in range(400):
        generated = []
        while not generated or generated[-1] != EOS:
            allowed = tok.allowed(generated)
            assert allowed and all(0 <= t < len(tok) for t in allowed)
            longest = {"repeats:1"} | ({"stride:2"} if trial % 8 == 0 else set())  # many stages (all strided)
            pick = [t for t in allowed if tok.vocab[t].startswith("cluster") or tok.vocab[t] in longest] \
                if trial % 4 == 0 else []
            generated.append(pick[-1] if pick else rng.choice(allowed))
            assert len(generated) <= 4 * MAX_CELLS + 2
        hl = tok.decode([BOS, SEP, *generated])
        assert hl.num_cells <= MAX_CELLS and hl.downsamplings <= MAX_DOWNSAMPLINGS and tok.encode(hl)[2:] == generated
        most_strides = max(most_strides, hl.downsamplings)
    assert tok.allowed([*generated]) == (0,)  # after <eos> only padding
    assert most_strides == MAX_DOWNSAMPLINGS


# ---- the params estimate behind the budget guide ----------------------------------------------------------------
def test_hl_params_estimate_is_exact_for_the_cells_it_stands_for():
    rng = random.Random(3)
    for _ in range(25):
        cells = {k: Cell.random(rng=rng) for k in range(3)}
        hl = random_hl(rng)
        hl = HLArch(tuple(HLStage(s.cluster, min(s.channels, 256), s.stride, s.repeats) for s in hl.stages[:4]),
                    hl.final_channels)
        model = build_network(hl.materialise([cells[s.cluster] for s in hl.stages]), 3, 7)
        assert HLParamsEstimate(cells, 3, 7)(hl) == count_cost(model, (3, 8, 8))["params"]


# ---- data --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history_archive(tiny_archive, tmp_path_factory):
    """``tiny_archive`` plus a search history of 160 random HL architectures (2 clusters) with their real
    params/MACs/FLOPs and a synthetic score."""
    from lightning_nas.archive import Archive

    path = tmp_path_factory.mktemp("sg") / "archive.sqlite"
    shutil.copy(tiny_archive, path)
    rng = random.Random(0)
    with Archive(path) as archive:
        for i in range(160):
            c = random_candidate(rng, 2, random_cell, rng.choice([None, 64, 128]))
            arch = c.hl.materialise(c.cells)
            cost = count_cost(build_network(arch, 3, 10), (3, 32, 32))
            status = "ok" if cost["params"] < 3e5 else "over_budget"
            metrics = {**cost, "status": status, "score": 1e3 * c.hl.num_cells if status == "ok" else None,
                       "objective": "tcet", "iteration": i}
            archive.add_arch(arch.to_json(), metrics, c.hl.to_json(), {"max_params": 3e5}, stage="search", run="r")
    return path


def test_hl_sequence_datamodule(history_archive, tmp_path):
    from datamodules import HLSequenceDataModule
    from lightning_nas.hl_tokenizer import DROPPABLE_KEYS

    dm = HLSequenceDataModule(str(history_archive), val_fraction=0.2, batch_size=8, condition_dropout=0.0)
    dm.setup()
    assert dm.tokenizer.num_clusters == 2 and len(dm.train_items) + len(dm.val_items) == 160
    assert not {h for h, _ in dm.train_items} & {h for h, _ in dm.val_items}  # split by HL architecture
    assert dm.tasks == [dm.task] and dm.task.input_shape == (3, 32, 32) and dm.task.num_classes == 10
    assert len(dm.budget_grid) == 10 and sorted(dm.cluster_cells) == [0, 1]
    batch = next(iter(dm.val_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        sep = ids.tolist().index(SEP)
        assert (labels[: sep + 1] == -100).all() and labels[sep + 1] == ids[sep + 1]  # Eq. 10: α̂ given y
        assert ((labels != -100) == (mask.bool() & (torch_arange(len(ids)) > sep))).all()
    # condition dropout 1 removes every condition token (the task's too: prompts for unseen tasks leave them out),
    # 0 none
    hl, values = dm.train_items[0]
    dm.hparams.condition_dropout = 1.0
    dropped = dm.collate([(hl, values)], drop=True)["input_ids"][0].tolist()
    assert dropped[: dropped.index(SEP) + 1] == dm.tokenizer.prompt({})
    dm.hparams.condition_dropout = 0.0
    kept = dm.collate([(hl, values)], drop=True)["input_ids"][0].tolist()
    assert kept[: kept.index(SEP) + 1] == dm.tokenizer.prompt(values)
    assert kept.index(SEP) == 1 + sum(values.get(k) is not None for k in DROPPABLE_KEYS) >= 3
    with pytest.raises(FileNotFoundError, match="no archive; run the zc stage first"):
        HLSequenceDataModule(str(tmp_path / "none.sqlite")).setup()
    (tmp_path / "clusters.json").write_text(json.dumps({"means": [[0.0] * 4]}))
    with pytest.raises(ValueError, match="another clustering"):
        HLSequenceDataModule(str(history_archive), clusters=str(tmp_path / "clusters.json")).setup()


def _known_latency_table(folder: Path, device: str = "raspi4") -> list[float]:
    """A stored cost table with a known answer: 1 ms per million dense-conv MACs + 0.05 ms per kernel."""
    from lightning_nas.hw.cost import HardwareCost
    from lightning_nas.hw.predictors import NETWORK_LUT_COLUMNS

    table = [0.0] * NETWORK_LUT_COLUMNS
    table[1], table[5] = 1.0, 0.05
    HardwareCost(device, {"latency_ms": table}).save(folder / "hw" / f"{device}.json")
    return table


def test_hl_sequences_carry_the_latency_of_each_architecture_on_the_device(history_archive, tmp_path):
    """With ``device``, each sequence's condition holds the architecture's latency on it — the device's stored cost
    table applied to its network — and the tokenizer has the latency tokens."""
    import numpy as np

    from datamodules import HLSequenceDataModule
    from lightning_nas.hw.predictors import network_features
    from lightning_nas.space.arch import Arch

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    table = _known_latency_table(tmp_path)
    dm = HLSequenceDataModule(str(tmp_path / "archive.sqlite"), val_fraction=0.2, device="raspi4",
                              condition_dropout=0.0)
    dm.setup()
    assert dm.tokenizer.device == "raspi4" and "latency_ms" in dm.tokenizer.keys
    items = dm.train_items + dm.val_items
    latencies = [v["latency_ms"] for _, v in items]
    assert len(set(latencies)) > 10 and all("energy_mj" not in v for _, v in items)  # raspi4: no energy model
    hl, values = items[0]
    spec = next(r["spec"] for r in _archs(tmp_path / "archive.sqlite") if r["hl_spec"] == hl.to_json())
    arch = Arch.from_json(spec)
    expected = float(network_features(task_network(dm.task, arch), dm.task.input_shape) @ np.array(table))
    assert values["latency_ms"] == pytest.approx(expected)
    prompt = dm.collate([(hl, values)], drop=False)["input_ids"][0].tolist()
    assert dm.tokenizer.ids[f"latency_ms:{dm.tokenizer.bins['latency_ms'].index(expected)}"] in prompt
    with pytest.raises(ValueError, match="device: 'pixel9'"):
        HLSequenceDataModule(str(tmp_path / "archive.sqlite"), device="pixel9")


def test_hl_sequences_keep_each_cluster_cell_once(tiny_archive, tmp_path):
    """A cell the search drew for many architectures is one cell of its cluster, not one per use (it would weight
    ``draw_cells`` and the budget guide's quantile by reuse)."""
    from datamodules import HLSequenceDataModule
    from lightning_nas.archive import Archive

    path = tmp_path / "archive.sqlite"
    shutil.copy(tiny_archive, path)
    small, big = Cell.random(seed=1), Cell.random(seed=2)
    rng = random.Random(0)
    with Archive(path) as archive:
        for i in range(30):
            hl = HLArch((HLStage(0, 16, 1, 1), HLStage(1, 8 * (i + 1), 2, 1)))  # 30 HL archs: both splits
            cells = [small if i % 10 else big, Cell.random(seed=100 + i)]  # cluster 0: 27 uses of one cell
            arch = hl.materialise(cells)
            cost = count_cost(build_network(arch, 3, 10), (3, 32, 32))
            archive.add_arch(arch.to_json(), {**cost, "status": "ok", "score": rng.random(), "objective": "tcet",
                                              "iteration": i}, hl.to_json(), {}, stage="search", run="r")
    dm = HLSequenceDataModule(str(path), val_fraction=0.2)
    dm.setup()
    assert sorted(c.canonical_hash() for c in dm.cluster_cells[0]) == sorted({small.canonical_hash(),
                                                                              big.canonical_hash()})
    assert len(dm.cluster_cells[1]) == 30


def torch_arange(n):
    import torch

    return torch.arange(n)


# ---- the model -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_sg(history_archive, tmp_path_factory):
    import lightning as L

    from datamodules import HLSequenceDataModule
    from lightning_nas.models import SGModule

    root = tmp_path_factory.mktemp("sg_fit")
    L.seed_everything(0)
    model = SGModule(hidden_size=32, num_layers=2, num_heads=2, max_positions=96, dropout=0.0, lr=3e-3, warmup_steps=5)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        check_val_every_n_epoch=3, callbacks=[MetricsFile()])
    trainer.fit(model, datamodule=HLSequenceDataModule(str(history_archive), batch_size=16, budget_grid_size=4))
    trainer.save_checkpoint(root / "sg.ckpt")
    return root


def test_sg_learns_and_its_checkpoint_restores_without_data_or_code(trained_sg):
    import math

    from lightning_nas.models import SGModule

    metrics = json.loads((trained_sg / "metrics.json").read_text())
    sg = SGModule.from_checkpoint(trained_sg / "sg.ckpt")
    assert set(metrics) >= {"val_loss", "budget_satisfaction", "generate_seconds", "budget_satisfaction_unguided"}
    assert metrics["val_loss"] < 0.5 * math.log(len(sg.tokenizer))  # far below a uniform guess over the vocabulary
    assert 0 <= metrics["budget_satisfaction"] <= 1 and metrics["generate_seconds"] > 0
    assert sg.tokenizer == HLTokenizer(2) and sg.model.config.vocab_size == len(sg.tokenizer)


def test_constrained_decoding_is_legal_and_deterministic_over_random_conditions(trained_sg):
    from lightning_nas.models import SGModule

    sg = SGModule.from_checkpoint(trained_sg / "sg.ckpt")
    rng = random.Random(4)
    prompts = []
    for _ in range(40):
        keys = [k for k in sg.tokenizer.keys if rng.random() < 0.6]
        prompts.append(sg.tokenizer.prompt({k: 10 ** rng.uniform(0, 9) for k in keys}))
    greedy = sg.generate(prompts)
    beams = sg.generate(prompts[:8], num_sequences=3)
    for hls in greedy + beams:
        for hl in hls:
            assert isinstance(hl, HLArch) and hl.num_cells <= MAX_CELLS and all(s.cluster < 2 for s in hl.stages)
    assert all(len(h) == 3 for h in beams)
    assert sg.generate(prompts) == greedy  # deterministic
    assert SGModule.from_checkpoint(trained_sg / "sg.ckpt").generate(prompts[:8], 3) == beams


def test_budget_guide_keeps_the_estimate_within_budget_even_for_an_untrained_sg(history_archive):
    import lightning as L

    from lightning_nas.models import SGModule
    from lightning_nas.models.sg import BudgetGuide

    L.seed_everything(1)
    sg = SGModule(tokenizer=HLTokenizer(2).to_dict(), hidden_size=16, num_layers=1, num_heads=1, max_positions=96)
    rng = random.Random(5)
    estimate = HLParamsEstimate({k: Cell.random(rng=rng) for k in range(2)})
    for budget in (6e4, 2e5, 1e6, 5e6):
        prompt = sg.tokenizer.prompt(limits={"params": budget})
        guided = sg.generate([prompt], 4, [BudgetGuide(sg.tokenizer, estimate, budget)])[0]
        assert all(estimate(hl) <= budget for hl in guided)
    unguided = sg.generate([sg.tokenizer.prompt(limits={"params": 6e4})], 4)[0]
    assert any(estimate(hl) > 6e4 for hl in unguided)  # the guide, not luck, kept them in budget


def test_pretrained_gpt_neo_from_a_local_directory_and_the_offline_error(tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from lightning_nas.models import SGModule

    config = GPTNeoConfig(vocab_size=50, max_position_embeddings=200, hidden_size=16, num_layers=2, num_heads=2,
                          attention_types=[[["global", "local"], 1]], window_size=32)
    GPTNeoForCausalLM(config).save_pretrained(tmp_path / "gpt-neo-mini")
    sg = SGModule(pretrained=str(tmp_path / "gpt-neo-mini"), tokenizer=HLTokenizer(3).to_dict())
    assert sg.model.config.vocab_size == len(sg.tokenizer) and sg.model.config.max_position_embeddings == 200
    assert sg.model.get_input_embeddings().weight.shape == (len(sg.tokenizer), 16)
    assert len(sg.generate([sg.tokenizer.prompt({"params": 1e6})])[0]) == 1
    with pytest.raises(FileNotFoundError, match="never downloads at run time.*huggingface-cli download"):
        SGModule(pretrained="EleutherAI/gpt-neo-125M", tokenizer=HLTokenizer(3).to_dict())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SGModule(pretrained=str(tmp_path / "empty"), tokenizer=HLTokenizer(3).to_dict())


# ---- the generate stage ------------------------------------------------------------------------------------------
def test_parse_quantity():
    from lightning_nas.generate import parse_quantity

    assert parse_quantity("1M", "p") == 1e6 and parse_quantity("300k", "p") == 3e5
    assert parse_quantity("1.1G", "p") == 1.1e9 and parse_quantity(5, "p") == 5.0 and parse_quantity(None, "p") is None
    for bad in ("1 MB", "-3", "M", 0):
        with pytest.raises(ValueError, match="p:"):
            parse_quantity(bad, "p")


def test_generate_stage_end_to_end_within_budget_and_reproducible(history_archive, trained_sg, tiny_gvae, tiny_ccnf,
                                                                  tmp_path):
    from lightning_nas.cli import main as cli_main
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.space.arch import Arch
    from lightning_nas.zc.objectives import DEFAULT_OBJECTIVE

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    common = dict(workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
                  clusters=str(tmp_path / "clusters.json"), candidates=6, sequences=2, threads=1)
    # one torch thread per process in both runs: T-CET's float sums change with the thread count (~1e-4 relative)
    metrics = run_generate(GenerateConfig(**common, budget={"params": "250k"}, out=str(tmp_path / "a")))
    arch = Arch.load(tmp_path / "a" / "arch.json")
    model = build_network(arch, 3, 10)
    assert count_cost(model, (3, 32, 32))["params"] == metrics["params"] <= 250_000
    assert metrics["objective"] == DEFAULT_OBJECTIVE  # no search recorded one: the project's default
    searched = metrics.get("fallback", {}).get("search_evaluations", 0)  # the guard may leave the SG's unscored
    assert metrics["score"] > 0 and 1 <= metrics["zc_evaluations"] - searched <= 6 and metrics["seconds"] > 0
    assert 0 < metrics["budget_satisfaction"] <= 1
    assert (tmp_path / "a" / "arch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    assert sum(r["origin"] == "sg" for r in rows) == 6 and max(r["score"] or 0 for r in rows) == metrics["score"]
    # the same seed and config through the CLI, the candidates scored across two ranks (gloo): the same candidates,
    # evaluations and arch.json; another task sizes the head
    cli_main(["generate", *[f"--{k}={v}" for k, v in common.items()], "--budget.params", "250k",
              "--out", str(tmp_path / "b"), "--workers", "2"])
    assert (tmp_path / "b" / "arch.json").read_text() == (tmp_path / "a" / "arch.json").read_text()
    two = [json.loads(line) for line in (tmp_path / "b" / "candidates.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in two] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    with pytest.raises(ValueError, match="measured on this machine"):
        GenerateConfig(**common, budget={"latency_ms": 3}, workers=2)
    with pytest.warns(UserWarning, match="never trained on a task like 'cifar100'"):  # the SG saw 10 classes only
        other = run_generate(GenerateConfig(**common, budget={"params": 250_000}, task="cifar100",
                                            out=str(tmp_path / "c")))
    assert other["task"]["num_classes"] == 100 and other["params"] <= 250_000
    wide = Arch.load(tmp_path / "c" / "arch.json")
    assert wide.task.name == "cifar100" and count_cost(build_network(wide, 3, 100), (3, 32, 32))["params"] == \
        other["params"]
    with pytest.raises(ValueError, match="never trained on a task like 'cifar100'"):
        run_generate(GenerateConfig(**common, budget={"params": 250_000}, task="cifar100", unseen_task="error",
                                    out=str(tmp_path / "d")))
    with pytest.raises(ValueError, match="at least one of"):
        GenerateConfig(budget={})
    write_clusters(tmp_path / "clusters3.json", [[0.0] * 4] * 3, archive=tmp_path / "archive.sqlite")
    with pytest.raises(ValueError, match="SG knows 2 clusters"):
        run_generate(GenerateConfig(**{**common, "clusters": str(tmp_path / "clusters3.json")}, budget={"params": 1e6}))


def test_generate_ranks_by_the_objective_its_run_searched_with(history_archive, trained_sg, tiny_gvae, tiny_ccnf,
                                                              tmp_path):
    """No ``objective``: the one ``search/metrics.json`` records (here NASWOT); an explicit one wins; the score is
    the objective's value of the chosen network, recomputed here on the archive's probe."""
    import torch

    from lightning_nas.archive import Archive
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.space.arch import Arch
    from lightning_nas.zc.proxies import evaluate_proxies
    from lightning_nas.zc.vector import Probe

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "metrics.json").write_text(json.dumps({"objective": "naswot"}))
    common = dict(workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
                  clusters=str(tmp_path / "clusters.json"), candidates=6, sequences=2, threads=1,
                  budget={"params": "250k"})
    metrics = run_generate(GenerateConfig(**common, out=str(tmp_path / "a")))
    rows = [json.loads(line) for line in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    assert metrics["objective"] == "naswot" and metrics["tcet"] is None
    assert metrics["score"] == max(r["score"] for r in rows if r["status"] == "ok")
    arch = Arch.load(tmp_path / "a" / "arch.json")
    with Archive(tmp_path / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(probe.seed)
        model = build_network(arch, in_channels=probe.x.shape[1], num_classes=probe.num_classes)
        values, _ = evaluate_proxies(model, probe.x, probe.y, ["naswot"])
    assert values["naswot"] == pytest.approx(metrics["score"], rel=1e-6)
    explicit = run_generate(GenerateConfig(**common, objective="tcet", out=str(tmp_path / "b")))
    assert explicit["objective"] == "tcet" and explicit["tcet"] == explicit["score"] > 0
    with pytest.raises(ValueError, match="objective: unknown 'T-CET'"):
        GenerateConfig(**common, objective="T-CET")


@pytest.mark.parametrize("rank", ["val_metric", "train_loss"])
def test_generate_trains_the_top_n_and_keeps_the_best_by_validation(history_archive, trained_sg, tiny_gvae, tiny_ccnf,
                                                                    tmp_path, rank):
    """select.top_n: the objective's top 2 within budget — the best of each HL architecture first — are trained
    (digits: 1 epoch, or the first 5 training steps) and arch.json is the one with the better validation accuracy
    (or the smaller sum of training losses); selection.json records both in the objective's order."""
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.select import diverse_top
    from lightning_nas.space.arch import Arch

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    select = {"top_n": 2, "config": str(REPO / "configs" / "evaluate" / "digits.yaml"), "epochs": 1, "rank": rank,
              "steps": 5, "set": {"trainer.logger": False, "data.init_args.image_size": 32}}
    metrics = run_generate(GenerateConfig(
        workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
        clusters=str(tmp_path / "clusters.json"), candidates=6, sequences=2, task="digits",
        budget={"params": "150k", "macs": "20M"}, select=select, out=str(tmp_path / "a"),
        objective="tcet"))  # unguarded: every in-budget candidate scored, so two to train
    selection = json.loads((tmp_path / "a" / "selection.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    ok = sorted((i for i, r in enumerate(rows) if r["status"] == "ok"), key=lambda i: (-rows[i]["score"], i))
    expected = diverse_top(ok, [json.dumps(r["hl_spec"], sort_keys=True) for r in rows], 2)
    assert [s["candidate"] for s in selection] == expected and metrics["trained_candidates"] == 2
    assert [s["score"] for s in selection] == [rows[i]["score"] for i in expected]
    assert metrics["distinct_hl_archs_trained"] == len({json.dumps(rows[i]["hl_spec"]) for i in expected})
    assert {s["objective"] for s in selection} == {metrics["objective"]} and metrics["select_rank"] == rank
    if rank == "val_metric":
        chosen = max(selection, key=lambda s: (s["val_metric"], s["score"]))  # ties: the better score
    else:
        assert all(len(s["losses"]) == 5 and s["train_loss_sum"] == pytest.approx(sum(s["losses"]))
                   for s in selection)
        chosen = min(selection, key=lambda s: (s["train_loss_sum"], -s["score"]))
    assert metrics["score"] == chosen["score"] and metrics["selected_rank"] == selection.index(chosen) + 1
    arch = Arch.load(tmp_path / "a" / "arch.json")
    assert arch == Arch.load(tmp_path / "a" / "select" / f"candidate_{selection.index(chosen)}" / "arch.json")
    assert arch.task.name == "digits" and metrics["params"] <= 150_000 and metrics["macs"] <= 20e6


def test_generate_for_dense_and_sequence_tasks_respects_their_shapes(history_archive, trained_sg, tiny_gvae,
                                                                     tiny_ccnf, tmp_path):
    """A dense task gets only stride-1 stages and a per-pixel network; a 1-D task with 4 input channels gets a
    Conv1d network; both budgets hold on the network evaluate trains (the task's, counted at its input shape)."""
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.space.arch import Arch
    from lightning_nas.space.network import DenseGraphNet

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    common = dict(workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
                  clusters=str(tmp_path / "clusters.json"), candidates=4, sequences=2, unseen_task="drop")
    dense = {"name": "dense-16", "in_channels": 2, "input_size": 16, "num_classes": 1, "dense": True}
    with pytest.warns(UserWarning, match="never trained"):
        metrics = run_generate(GenerateConfig(**common, budget={"params": "250k", "macs": "200M"}, task=dense,
                                              out=str(tmp_path / "dense")))
    arch = Arch.load(tmp_path / "dense" / "arch.json")
    assert arch.task.dense and all(s.stride == 1 for s in arch.stages) and arch.stem_stride == 1
    cost = count_cost(DenseGraphNet(arch, 2, 1), (2, 16, 16))
    assert (cost["params"], cost["macs"]) == (metrics["params"], metrics["macs"]) and cost["macs"] <= 200e6
    sequence = {"name": "seq-4x200", "in_channels": 4, "input_size": [200], "num_classes": 36}
    with pytest.warns(UserWarning, match="never trained"):
        metrics = run_generate(GenerateConfig(**common, budget={"params": "250k"}, task=sequence,
                                              out=str(tmp_path / "seq")))
    arch = Arch.load(tmp_path / "seq" / "arch.json")
    model = build_network(arch, 4, 36, dims=1)
    assert count_cost(model, (4, 200))["params"] == metrics["params"] <= 250_000
    assert arch.task.dims == 1 and sum(s.stride == 2 for s in arch.stages) <= arch.task.max_downsamplings


def test_a_history_of_several_tasks_conditions_the_sg_on_each(tiny_archive, tmp_path):
    """The 'learn the task' path: searches for two task shapes write rows that carry their task; the sequences use
    each row's own task tokens and the SG records both tasks, so prompts for either keep their task tokens."""
    from datamodules import HLSequenceDataModule
    from lightning_nas.archive import Archive
    from lightning_nas.models import SGModule
    from lightning_nas.space.task import named_task

    path = tmp_path / "archive.sqlite"
    shutil.copy(tiny_archive, path)
    rng = random.Random(0)
    with Archive(path) as archive:
        for i in range(40):
            task = named_task("cifar10" if i % 2 else "cifar100")
            c = random_candidate(rng, 2, random_cell, 64)
            arch = task.materialise(c.hl, c.cells)
            archive.add_arch(arch.to_json(), {**task_cost(task, arch), "status": "ok", "score": 1.0 + i,
                                              "objective": "tcet", "iteration": i}, c.hl.to_json(), {},
                             stage="search", run=task.name)
    dm = HLSequenceDataModule(str(path), val_fraction=0.2)
    dm.setup()
    assert {t.name for t in dm.tasks} == {"cifar10", "cifar100"}
    assert {v["classes"] for _, v in dm.train_items + dm.val_items} == {10, 100}
    sg = SGModule(hidden_size=16, num_layers=1, num_heads=1, tokenizer=dm.tokenizer.to_dict(),
                  tasks=[t.to_json() for t in dm.tasks])
    assert sg.task_condition(named_task("cifar100")) == {"classes": 100, "input_size": 32}
    with pytest.warns(UserWarning, match="never trained on a task like 'imagenet'"):
        assert sg.task_condition(named_task("imagenet")) == {}


@pytest.mark.filterwarnings("ignore:the SG's hardware tokens are for None")  # asserted once below
def test_generate_with_a_latency_budget_on_a_device_and_on_the_host(history_archive, trained_sg, tiny_gvae, tiny_ccnf,
                                                                     tmp_path):
    """``--budget.latency_ms`` with ``--device``: candidates judged by the device's stored cost table (here one with a
    known answer: 1 ms per million dense-conv MACs + 0.05 ms per kernel), the pick reported with its prediction and,
    on the host, measured and stored in the archive."""
    from lightning_nas.archive import Archive
    from lightning_nas.cli import main as cli_main
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.hw.cost import HardwareCost
    from lightning_nas.hw.measure import host_fingerprint
    from lightning_nas.hw.predictors import network_features
    from lightning_nas.space.arch import Arch
    from lightning_nas.space.task import Task
    from lightning_nas.zc.vector import Probe

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    common = dict(workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
                  clusters=str(tmp_path / "clusters.json"), candidates=6, sequences=2)
    table = _known_latency_table(tmp_path)
    with Archive(tmp_path / "archive.sqlite") as archive:
        task = Task.from_probe(Probe.from_archive(archive))
    HardwareCost("host", {"latency_ms": table}).save(
        tmp_path / "hw" / f"host_{task.name}_{host_fingerprint('eager', 1).id}.json")
    # every candidate's predicted latency (a limit all pass), then a limit between them: some over, some within
    with pytest.warns(UserWarning, match="hardware tokens are for None"):
        run_generate(GenerateConfig(**common, budget={"latency_ms": 1e6}, device="raspi4", out=str(tmp_path / "free")))
    free = [json.loads(line)["latency_ms"]
            for line in (tmp_path / "free" / "candidates.jsonl").read_text().splitlines()]
    distinct = sorted(set(free))
    assert len(distinct) >= 2, free
    limit = (distinct[0] + distinct[1]) / 2  # the cheapest candidates fit, the others not
    cli_main(["generate", *[f"--{k}={v}" for k, v in common.items()], "--budget.latency_ms", str(limit),
              "--device", "raspi4", "--out", str(tmp_path / "raspi4")])
    metrics = json.loads((tmp_path / "raspi4" / "metrics.json").read_text())
    arch = Arch.load(tmp_path / "raspi4" / "arch.json")
    predicted = network_features(build_network(arch, 3, 10), (3, 32, 32)) @ table
    assert metrics["device"] == "raspi4" and metrics["latency_ms_predicted"] == pytest.approx(predicted)
    assert predicted <= limit and "latency_ms_measured" not in metrics
    rows = [json.loads(line) for line in (tmp_path / "raspi4" / "candidates.jsonl").read_text().splitlines()]
    assert all((r["status"] == "over_budget") == (r["latency_ms"] > limit) for r in rows if r["params"] is not None)
    assert sum(r["status"] == "over_budget" for r in rows) >= 1
    assert metrics["hardware_tokens"] is False  # this SG was trained without a device: no latency condition
    history = [r for r in _archs(tmp_path / "archive.sqlite")]
    fitting = [r["metrics"]["params"] for r in history
               if network_features(build_network(Arch.from_json(r["spec"]), 3, 10), (3, 32, 32)) @ table <= limit]
    assert metrics["guide_params_from_hardware"] == (max(fitting) if fitting else None)  # brute force over 160
    host = run_generate(GenerateConfig(**common, budget={"latency_ms": limit}, device="host",
                                       out=str(tmp_path / "host")))
    assert host["latency_ms_measured"] > 0 and host["host"]["runtime"] == "eager"
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert [r["p10_ms"] for r in archive.latencies()] == [pytest.approx(host["latency_ms_measured"], abs=1e-4)]
    with pytest.raises(SystemExit):  # jsonargparse refuses an unknown device before anything runs
        cli_main(["generate", *[f"--{k}={v}" for k, v in common.items()], "--budget.latency_ms", "3",
                  "--device", "pixel9"])


def _archs(path):
    from lightning_nas.archive import Archive

    with Archive(path, create=False) as archive:
        return archive.archs(stage="search")


@pytest.mark.filterwarnings("ignore:the SG was never trained on a task")  # an untrained SG: no task tokens
def test_a_device_sg_is_prompted_with_the_latency_limit(history_archive, tiny_gvae, tiny_ccnf, tmp_path):
    """An SG whose hardware tokens are for the budget's device gets the latency limit in its prompt (the bin under
    it); one for another device gets none, with a warning."""
    from lightning_nas.archive import Archive
    from lightning_nas.generate import generate_architectures
    from lightning_nas.generator import CellGenerator
    from lightning_nas.hw.cost import HardwareCost
    from lightning_nas.hw.predictors import NETWORK_LUT_COLUMNS
    from lightning_nas.models import SGModule
    from lightning_nas.search.evaluate import ArchEvaluator, Budget
    from lightning_nas.zc.vector import Probe

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    generator = CellGenerator.from_workdir(tmp_path, str(tiny_gvae), str(tiny_ccnf), str(tmp_path / "clusters.json"))
    with Archive(tmp_path / "archive.sqlite", create=False) as archive:
        probe = Probe.from_archive(archive)
    table = [0.0] * NETWORK_LUT_COLUMNS
    table[1] = 1.0
    evaluator = ArchEvaluator(probe, Budget("b", max_latency_ms=2.5, device="raspi4"), "tcet",
                              hardware=HardwareCost("raspi4", {"latency_ms": table}))
    for device, expect in (("raspi4", True), ("pixel3", False)):
        sg = SGModule(tokenizer=HLTokenizer(2, device=device).to_dict(), hidden_size=16, num_layers=1, num_heads=1,
                      max_positions=128)
        prompts = []
        real = sg.generate
        sg.generate = lambda p, *a, **k: (prompts.extend(p), real(p, *a, **k))[1]
        if expect:
            generate_architectures(sg, generator, evaluator, candidates=2, sequences=1, progress=False)
        else:
            with pytest.warns(UserWarning, match="'pixel3', the budget is on 'raspi4'"):
                generate_architectures(sg, generator, evaluator, candidates=2, sequences=1, progress=False)
        tokens = sg.tokenizer.describe(prompts[0])
        assert ("latency_ms:[2.37, 3.16)" not in tokens) and (("latency_ms:[1.78, 2.37)" in tokens) == expect), tokens


def test_generate_answers_a_budget_no_candidate_fits_and_rejects_an_infeasible_one(history_archive, trained_sg,
                                                                                   tiny_gvae, tiny_ccnf, tmp_path):
    """A MACs limit far below every generated candidate (the budget guide off, so the SG writes what it learnt and
    none fits — with the guide on it may fit a limit this small by itself): generate still answers in budget (by
    repair, or the fallback search) and says which path answered; an infeasible budget is a one-paragraph ValueError
    naming the smallest network's cost, and removes the previous run's arch.json so no later stage reads it."""
    from lightning_nas.generate import GenerateConfig, run_generate
    from lightning_nas.space.arch import Arch

    shutil.copy(history_archive, tmp_path / "archive.sqlite")
    write_clusters(tmp_path / "clusters.json", [[0.0] * 4, [1.0] * 4], archive=tmp_path / "archive.sqlite")
    common = dict(workdir=str(tmp_path), sg=str(trained_sg / "sg.ckpt"), gvae=str(tiny_gvae), ccnf=str(tiny_ccnf),
                  clusters=str(tmp_path / "clusters.json"), candidates=4, sequences=2, task="digits",
                  out=str(tmp_path / "a"))
    with pytest.warns(UserWarning, match="outside the search history"):
        metrics = run_generate(GenerateConfig(**common, budget={"params": "400k", "macs": "1M"}, budget_guide=False))
    assert metrics["budget_satisfaction"] == 0 and metrics["answer"] in ("repaired", "search", "smallest")
    assert metrics["fallback"]["over_budget"] == 4 and metrics["macs"] <= 1e6 and metrics["params"] <= 400_000
    arch = Arch.load(tmp_path / "a" / "arch.json")
    assert count_cost(build_network(arch, 1, 10), (1, 32, 32))["macs"] == metrics["macs"]
    origins = [json.loads(line)["origin"] for line in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    assert origins[:4] == ["sg"] * 4 and metrics["answer"] in origins[4:]
    with pytest.raises(ValueError, match=r"no architecture of the space fits.*costs params 194.*--budget.params"):
        run_generate(GenerateConfig(**common, budget={"params": 10}))
    assert not (tmp_path / "a" / "arch.json").exists() and not (tmp_path / "a" / "metrics.json").exists()


def test_budget_guide_bounds_macs_too_and_the_macs_estimate_is_the_counted_cost():
    """#30 item 1: the guide masks tokens for a MACs limit as for params; the estimate it uses equals the counted
    MACs of the network the task builds (the demo's failure: all 30 candidates in params, none in MACs)."""
    import lightning as L

    from lightning_nas.models import SGModule
    from lightning_nas.models.sg import BudgetGuide
    from lightning_nas.space.cost import count_cost
    from lightning_nas.space.hl_cost import HLMacsEstimate
    from lightning_nas.space.network import task_network
    from lightning_nas.space.task import TASKS

    rng = random.Random(5)
    cells = {k: Cell.random(rng=rng) for k in range(2)}
    for name in ("digits", "cifar10"):
        task = TASKS[name]
        macs = HLMacsEstimate.for_task(cells, task)
        for hl in (HLArch((HLStage(0, 16, 1, 2), HLStage(1, 32, 2, 1), HLStage(0, 64, 2, 3)), 128),
                   HLArch((HLStage(1, 8, 2, 1), HLStage(1, 24, 1, 1)), None)):
            arch = task.materialise(hl, [cells[s.cluster] for s in hl.stages])
            assert macs(hl) == count_cost(task_network(task, arch), task.input_shape)["macs"]
    L.seed_everything(1)
    sg = SGModule(tokenizer=HLTokenizer(2).to_dict(), hidden_size=16, num_layers=1, num_heads=1, max_positions=96)
    params = HLParamsEstimate(cells, in_channels=1)
    macs = HLMacsEstimate.for_task(cells, TASKS["digits"])
    for limit in (3e6, 2e7):
        prompt = sg.tokenizer.prompt(limits={"params": 5e6, "macs": limit})
        guided = sg.generate([prompt], 4, [BudgetGuide(sg.tokenizer, params, 5e6, macs, limit)])[0]
        assert all(macs(hl) <= limit and params(hl) <= 5e6 for hl in guided)
    unguided = sg.generate([sg.tokenizer.prompt(limits={"params": 5e6, "macs": 3e6})], 4,
                           [BudgetGuide(sg.tokenizer, params, 5e6)])[0]
    assert any(macs(hl) > 3e6 for hl in unguided)  # the MACs guide, not the params one, kept them in budget
    with pytest.raises(ValueError, match="needs macs_estimate"):
        BudgetGuide(sg.tokenizer, params, 5e6, None, 1e6)
