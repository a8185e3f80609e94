"""The sequence generator h (paper §3.3, Eq. 10–12): a GPT-Neo causal LM over HL-architecture tokens.

``pretrained``: a local directory holding a GPT-Neo checkpoint (the paper fine-tunes GPT-Neo-125M; its token
embeddings are resized to our vocabulary, :mod:`lightning_nas.hl_tokenizer`), or ``None``: a GPT-Neo of the configured
size trained from scratch (the tiny default). Nothing is ever downloaded: a hub id gets an error saying how to point
at a local copy.

Training minimises Eq. 10, the NLL of the stage tokens given the condition tokens. Decoding (:meth:`SGModule.generate`)
is deterministic — greedy, or beam search for several HL architectures — and grammar-constrained by
:class:`HLGrammar`, so every output parses into a legal HL architecture.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM, LogitsProcessor, LogitsProcessorList

from ..space.network import task_cost
from ..hl_tokenizer import BOS, EOS, PAD, HLTokenizer, task_condition
from ..space.hl import MAX_DOWNSAMPLINGS, HLArch
from ..space.hl_cost import HLParamsEstimate
from ..space.task import Task
from .checkpoint import load_module

GUIDE_QUANTILE = 0.9  # each cluster stands in for budget-guided decoding by its 90th-percentile cell by size
HUB_HINT = ("download it once where there is network, e.g. `huggingface-cli download EleutherAI/gpt-neo-125M "
            "--local-dir models/gpt-neo-125M`, copy that directory here and set `pretrained: models/gpt-neo-125M`")


class BudgetGuide:
    """Budget-guided decoding: of the tokens the grammar allows, keep those after which the architecture can still
    fit ``max_params`` by ``estimate`` (:class:`~lightning_nas.space.hl_cost.HLParamsEstimate`: each cluster stood in
    by a large cell of it) and, with ``macs_estimate`` (:class:`~lightning_nas.space.hl_cost.HLMacsEstimate`, the
    same cells at the task's input size), ``max_macs`` (a FLOPs limit is ``max_macs = flops / 2``) — the stage being
    written counted with its choices so far and one cell (an undecided stride at whichever of 1 and 2 costs less),
    the head at its smallest: a lower bound, so a kept token can still miss, a masked one never fits. If nothing
    would fit, the grammar's tokens are kept (the output stays legal; the budget check after drawing the cells
    discards it, and generate repairs)."""

    def __init__(self, tokenizer: HLTokenizer, estimate: HLParamsEstimate, max_params: float | None,
                 macs_estimate=None, max_macs: float | None = None):
        if max_macs is not None and macs_estimate is None:
            raise ValueError("BudgetGuide: a MACs limit needs macs_estimate (HLMacsEstimate)")
        self.tokenizer, self.estimate, self.max_params = tokenizer, estimate, max_params
        self.macs_estimate, self.max_macs = macs_estimate, max_macs

    def _fits(self, stages: list[tuple[int, int, int, int]], group: list[int], head: int | None = -1) -> bool:
        """Whether complete ``stages`` plus the partial ``group`` (and ``head`` when ≥ 0/None) can fit."""
        final = None if head == -1 else head
        options = [stages]
        if group:  # the stage being written, with its undecided fields at their smallest
            k, c, s, r = (group + [8, 1, 1][len(group) - 1:])[:4]
            options = [stages + [(k, c, s, r)]]
            if len(group) < 3:  # stride undecided: stride 2 may cost fewer MACs
                options.append(stages + [(k, c, 2, r)])
        if self.max_params is not None:
            total, channels = self.estimate.prefix(options[0])
            if total + self.estimate.head(channels, final) > self.max_params:
                return False
        if self.max_macs is not None:
            e = self.macs_estimate

            def macs(option):
                total, channels, size = e.prefix(option)
                return total + e.head(channels, size, final)

            if min(macs(o) for o in options) > self.max_macs:
                return False
        return True

    def __call__(self, generated: Sequence[int], allowed: tuple[int, ...]) -> tuple[int, ...]:
        vocab = self.tokenizer.vocab
        stages, group = [], []
        for t in generated:
            if vocab[t].startswith(("cluster:", "channels:", "stride:", "repeats:")):
                group.append(int(vocab[t].split(":")[1]))
                if len(group) == 4:
                    stages.append(tuple(group))
                    group = []
        keep = []
        for t in allowed:
            kind, _, value = vocab[t].partition(":")
            if kind == "head":
                ok = self._fits(stages, [], None if value == "none" else int(value))
            elif kind in ("cluster", "channels", "stride", "repeats"):
                try:
                    ok = self._fits(stages, group + [int(value)])
                except KeyError:  # a cluster the estimate has no cell for
                    ok = False
            else:
                ok = True
            if ok:
                keep.append(t)
        return tuple(keep) or allowed


class HLGrammar(LogitsProcessor):
    """Masks every token the HL grammar forbids after the prompt (:meth:`HLTokenizer.allowed`, with the task's
    ``max_downsamplings``), and with a ``guide`` (:class:`BudgetGuide`) the tokens that would break the budget."""

    def __init__(self, tokenizer: HLTokenizer, prompt_length: int, guide: BudgetGuide | None = None,
                 max_downsamplings: int = MAX_DOWNSAMPLINGS):
        self.tokenizer, self.prompt_length, self.guide = tokenizer, prompt_length, guide
        self.max_downsamplings = max_downsamplings

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            allowed = self.tokenizer.allowed(ids, self.max_downsamplings)
            if self.guide is not None and len(allowed) > 1:
                allowed = self.guide(ids, allowed)
            mask[row, list(allowed)] = 0.0
        return scores + mask


def load_pretrained(path: str) -> GPTNeoForCausalLM:
    """A GPT-Neo from a local directory (``config.json`` + ``model.safetensors``), never from the network and
    never running code: the config is read as JSON and must say ``gpt_neo`` before anything else loads, no remote
    code is trusted, and the weights come from safetensors only — a pickled ``pytorch_model.bin`` (which can run
    code when unpickled) is refused. Any unreadable file gets one paragraph naming it."""
    import json

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"pretrained: {path!r} is not a local directory; lightning-nas never downloads "
                                f"at run time — {HUB_HINT}")
    config = directory / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"pretrained: {directory} has no config.json; point it at the directory of a "
                                f"Hugging Face GPT-Neo checkpoint ({HUB_HINT})")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"pretrained: {config} is not a JSON object ({err}); the directory must be a Hugging Face "
                         f"GPT-Neo checkpoint ({HUB_HINT})") from None
    if model_type != "gpt_neo":
        raise ValueError(f"pretrained: {directory} holds a {model_type!r} model; a GPT-Neo is needed ({HUB_HINT})")
    if not (directory / "model.safetensors").is_file():
        pickled = [p.name for p in directory.glob("*.bin")]
        raise FileNotFoundError(
            f"pretrained: {directory} has no model.safetensors"
            + (f" (only {', '.join(pickled)}: a pickled file can run code when loaded, and is never opened)"
               if pickled else "")
            + f"; download the safetensors weights ({HUB_HINT})")
    from safetensors import SafetensorError

    try:
        model = GPTNeoForCausalLM.from_pretrained(directory, local_files_only=True, use_safetensors=True,
                                                  trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:  # truncated, corrupt, mismatched
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"pretrained: {directory / 'model.safetensors'} could not be loaded ({message}); the file "
                         f"is damaged or not this config's weights — download it again ({HUB_HINT})") from None
    return model


class SGModule(L.LightningModule):
    """GPT-Neo sequence generator trained on the HL search history (:class:`datamodules.HLSequenceDataModule`).

    The vocabulary comes from the datamodule when training starts (or from ``tokenizer`` when given); the tokenizer
    and the network's configuration are stored in the checkpoint, so :meth:`from_checkpoint` needs neither the data
    nor the pretrained directory.

    Validation logs ``val/loss`` (mean NLL per stage token, Eq. 10), ``val/token_acc`` (greedy next-token accuracy on
    stage tokens) and — for the datamodule's ``budget_grid`` — ``val/budget_satisfaction``: the share of greedily
    generated architectures (cells drawn from the history's cells of each cluster) within the params budget with the
    budget guide (what ``generate`` does), ``val/budget_satisfaction_unguided`` without it (the conditioning alone),
    and ``val/generate_seconds`` per architecture. ``<trainer.default_root_dir>/metrics.json`` holds the latest values.

    Args:
        pretrained: local GPT-Neo directory to fine-tune, or ``None`` to train from scratch with the sizes below.
        hidden_size, num_layers, num_heads, intermediate_size, max_positions, dropout: the from-scratch GPT-Neo.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up (the paper: constant lr 1e-3, weight decay 0.05).
        tokenizer, model_config, tasks: filled in from the data / the built network (saved with the checkpoint);
            ``tasks`` are the tasks of the training history (:meth:`task_condition` uses them).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        max_positions: int = 128,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        tokenizer: dict | None = None,
        model_config: dict | None = None,
        tasks: list[dict] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer: HLTokenizer | None = None
        self.model: GPTNeoForCausalLM | None = None
        if tokenizer is not None:
            self._build(HLTokenizer.from_dict(tokenizer), model_config)

    # ---- the network -------------------------------------------------------------------------------------------
    def _build(self, tokenizer: HLTokenizer, model_config: dict | None = None) -> None:
        h = self.hparams
        special = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
        if model_config is not None:  # restoring a checkpoint: the architecture only, weights follow
            model = GPTNeoForCausalLM(GPTNeoConfig(**{**model_config, **special}))
        elif h.pretrained is not None:
            model = load_pretrained(h.pretrained)
            model.resize_token_embeddings(len(tokenizer))
            for key, value in special.items():
                setattr(model.config, key, value)
                setattr(model.generation_config, key, value)
        else:
            model = GPTNeoForCausalLM(GPTNeoConfig(
                vocab_size=len(tokenizer), max_position_embeddings=h.max_positions, hidden_size=h.hidden_size,
                num_layers=h.num_layers, num_heads=h.num_heads, attention_types=[[["global"], h.num_layers]],
                intermediate_size=h.intermediate_size or 4 * h.hidden_size, window_size=h.max_positions,
                embed_dropout=h.dropout, resid_dropout=h.dropout, attention_dropout=h.dropout, **special))
        if model.config.vocab_size != len(tokenizer):
            raise ValueError(f"model_config: vocabulary of {model.config.vocab_size}, the tokenizer has {len(tokenizer)}")
        if model.config.max_position_embeddings < 2 + 6 + 4 * tokenizer.max_cells + 2:
            raise ValueError(f"max_positions: {model.config.max_position_embeddings} is too short for "
                             f"{tokenizer.max_cells} cells (need {2 + 6 + 4 * tokenizer.max_cells + 2})")
        self.tokenizer, self.model = tokenizer, model
        self.hparams["tokenizer"] = tokenizer.to_dict()
        self.hparams["model_config"] = {k: v for k, v in model.config.to_dict().items()
                                        if isinstance(v, int | float | str | bool | list | type(None))}

    @property
    def tasks(self) -> list[Task]:
        """The tasks of the history the SG was trained on."""
        return [Task.from_json(t) for t in self.hparams.get("tasks") or []]

    def task_condition(self, task: Task, unseen: str = "drop") -> dict[str, int]:
        """The task tokens' values for prompting with ``task`` — or none of them if no training task falls in the
        same (classes, input size) bins: the SG never learnt that condition, and an untrained token would steer it
        arbitrarily. ``unseen="drop"`` warns and drops them (the SG was trained with task tokens dropped at
        random, so it knows prompts without them); ``"error"`` raises."""
        seen = {self.tokenizer.task_bins(t) for t in self.tasks}
        if self.tokenizer.task_bins(task) in seen:
            return task_condition(task)
        trained = ", ".join(f"{t.name} ({t.num_classes} classes, {max(t.input_size)} px)" for t in self.tasks) or "none"
        message = (f"the SG was never trained on a task like {task.name!r} ({task.num_classes} classes, input size "
                   f"{max(task.input_size)}; trained on: {trained})")
        if unseen == "error":
            raise ValueError(f"{message}: run the search with this task (search's `task`) and retrain the SG, or "
                             "let generate drop the task tokens (unseen_task: drop)")
        if unseen != "drop":
            raise ValueError(f"unseen: {unseen!r}; 'drop' or 'error'")
        warnings.warn(f"{message}: its task tokens are left out of the prompt, so only the budget conditions the "
                      "generation; search with this task and retrain the SG to condition on it", UserWarning,
                      stacklevel=2)
        return {}

    def setup(self, stage: str) -> None:
        data_tasks = getattr(self.trainer.datamodule, "tasks", None)
        if data_tasks:
            self.hparams["tasks"] = [t.to_json() for t in data_tasks]
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)  # the datamodule is set up first
        if self.model is None:
            if tokenizer is None:
                raise ValueError("SGModule needs a tokenizer: train it with datamodules.HLSequenceDataModule")
            self._build(tokenizer)
        elif tokenizer is not None and tokenizer != self.tokenizer:
            raise ValueError(f"the data's vocabulary ({tokenizer.to_dict()}) differs from this SG's "
                             f"({self.tokenizer.to_dict()}): retrain the SG for this history")

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SGModule:
        """A trained SG (eval mode) from a Lightning checkpoint, loaded without running code (weights only)."""
        return load_module(cls, path, map_location, "python -m lightning_nas fit --config configs/sg.yaml")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lightning_nas"] = {"tokenizer": self.tokenizer.to_dict()}

    # ---- training ----------------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]):
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])

    def training_step(self, batch, batch_idx):
        loss = self(batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        warmup = max(1, self.hparams.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ---- validation ----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"nll": 0.0, "correct": 0, "tokens": 0}

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        n = int(mask.sum())
        self._val["nll"] += float(out.loss) * n
        self._val["correct"] += int(((out.logits[:, :-1].argmax(-1) == labels) & mask).sum())
        self._val["tokens"] += n

    def on_validation_epoch_end(self) -> None:
        v = self.trainer.strategy.reduce(torch.tensor([self._val["nll"], self._val["correct"], self._val["tokens"]],
                                                      dtype=torch.float64, device=self.device), reduce_op="sum")
        metrics = {"val_loss": float(v[0] / v[2]), "val_token_acc": float(v[1] / v[2])}
        metrics.update(self.budget_metrics())
        for name, value in metrics.items():
            self.log(f"val/{name.removeprefix('val_')}", value, batch_size=1)
        self.epoch_metrics = metrics  # written to metrics.json by callbacks.MetricsFile

    def budget_metrics(self) -> dict[str, float]:
        """Over the datamodule's params budgets, the share of architectures within budget when decoded greedily
        with the budget guide (``budget_satisfaction``, what ``generate`` does) and without it
        (``budget_satisfaction_unguided``: the conditioning alone); cells are drawn from the history's cells of
        each cluster. ``generate_seconds``: guided decoding time per architecture."""
        data = self.trainer.datamodule if self._trainer is not None else None
        grid = getattr(data, "budget_grid", None)
        if not grid:
            return {}
        task = data.task
        prompts = [self.tokenizer.prompt(task_condition(task), {"params": b["params"]}) for b in grid]
        estimate = HLParamsEstimate.for_task(data.cluster_cells, GUIDE_QUANTILE, task)
        start = time.perf_counter()
        guided = [h[0] for h in self.generate(prompts, guides=[BudgetGuide(self.tokenizer, estimate, b["params"])
                                                                for b in grid], max_downsamplings=task.max_downsamplings)]
        seconds = (time.perf_counter() - start) / len(grid)
        unguided = [h[0] for h in self.generate(prompts, max_downsamplings=task.max_downsamplings)]

        def share(archs: list[HLArch]) -> float:
            within = 0
            for n, (hl, budget) in enumerate(zip(archs, grid, strict=True)):
                try:
                    arch = task.materialise(hl, data.draw_cells(hl, random.Random(n)))
                except ValueError:  # a cluster the history never drew a cell for: counted as a miss
                    continue
                within += task_cost(task, arch)["params"] <= budget["params"]
            return within / len(archs)

        return {"budget_satisfaction": share(guided), "budget_satisfaction_unguided": share(unguided),
                "generate_seconds": seconds}

    # ---- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], num_sequences: int = 1,
                 guides: Sequence[BudgetGuide | None] | None = None,
                 max_downsamplings: int = MAX_DOWNSAMPLINGS) -> list[list[HLArch]]:
        """For each prompt (:meth:`HLTokenizer.prompt`), ``num_sequences`` HL architectures: the greedy one
        (``num_sequences=1``) or the best beams of a beam search of that width — deterministic either way, and
        legal by construction (:class:`HLGrammar`, at most ``max_downsamplings`` stride-2 stages: the task's
        limit); ``guides[i]`` (optional) steers prompt i into its budget."""
        guides = list(guides) if guides is not None else [None] * len(prompts)
        if len(guides) != len(prompts):
            raise ValueError(f"guides: {len(guides)} for {len(prompts)} prompts")
        if self.model is None:
            raise ValueError("this SGModule has no network yet: load a trained one with SGModule.from_checkpoint")
        was_training = self.model.training
        self.model.eval()
        out: list[list[HLArch]] = [[] for _ in prompts]
        by_length: dict[tuple[int, int], list[int]] = {}  # one batch per (prompt length, guide)
        for n, p in enumerate(prompts):
            by_length.setdefault((len(p), id(guides[n])), []).append(n)
        max_new = 4 * self.tokenizer.max_cells + 2
        try:
            for (length, _), rows in by_length.items():
                ids = torch.tensor([list(prompts[n]) for n in rows], dtype=torch.long, device=self.device)
                generated = self.model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                    num_beams=num_sequences, num_return_sequences=num_sequences,
                    logits_processor=LogitsProcessorList([HLGrammar(self.tokenizer, length, guides[rows[0]],
                                                                    max_downsamplings)]),
                    bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
                for j, seq in enumerate(generated.tolist()):
                    out[rows[j // num_sequences]].append(self.tokenizer.decode(seq))
        finally:
            self.model.train(was_training)
        return out
