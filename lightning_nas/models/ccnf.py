"""Conditional continuous normalising flow over G-VAE latents (paper §3.2, Eq. 6–9; FFJORD / PointFlow style).

Read top to bottom: the ODE network (ConcatSquash layers with context [t, condition]), the dynamics that carry the
log-density and the condition as ODE states, the flow (MovingBatchNorm → CNF → MovingBatchNorm, learnable end time),
then the LightningModule.

Direction: :meth:`ConditionalFlow.forward` maps a latent x to base noise u (t: 0 → T) and returns
``log p(x | c) = log N(u; 0, I) + Δ``, with Δ the accumulated log-determinant; :meth:`ConditionalFlow.sample` runs the
same ODE backwards (T → 0) from u ~ N(0, I)·τ. The trace of the Jacobian is Hutchinson's estimate εᵀ(∂f/∂x)ε with ε
Gaussian, drawn once per solve, in training, and exact (one backward pass per dimension) when ``exact_trace``.

The condition is an ODE state with zero derivative, not a closure: under ``odeint_adjoint`` a tensor captured in a
closure gets no gradient (REFERENCE.md, CCNF pitfalls), a state does.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .checkpoint import load_module
from .gvae import GVAEModule

LOG_2PI = math.log(2 * math.pi)


def standard_normal_logprob(u: torch.Tensor) -> torch.Tensor:
    """Σ_d log N(u_d; 0, 1) per row."""
    return -0.5 * (LOG_2PI + u.pow(2)).sum(1)


class ConcatSquashLinear(nn.Module):
    """``Linear(x) · σ(gate(ctx)) + bias(ctx)`` with ``ctx = [t, condition]`` (FFJORD's ConcatSquash)."""

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int):
        super().__init__()
        self.layer = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(dim_ctx, dim_out)
        self.bias = nn.Linear(dim_ctx, dim_out, bias=False)

    def forward(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * torch.sigmoid(self.gate(ctx)) + self.bias(ctx)


class ODENet(nn.Module):
    """g(x, t, c): ConcatSquash layers ``dim → hidden × layers → dim`` with tanh between. The last layer starts at
    zero, so an untrained flow is the identity."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, layers: int):
        super().__init__()
        widths = [dim] + [hidden] * layers + [dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, 1 + cond_dim) for a, b in zip(widths[:-1], widths[1:]))
        last = self.layers[-1]
        for p in (last.layer.weight, last.layer.bias, last.gate.weight, last.gate.bias, last.bias.weight):
            nn.init.zeros_(p)

    def forward(self, t: torch.Tensor, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ctx = torch.cat([t.expand(len(x), 1), cond], dim=1)
        for i, layer in enumerate(self.layers):
            x = layer(ctx, x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class ConditionedDynamics(nn.Module):
    """The augmented ODE of a CNF: d/dt (x, log p, c) = (g(x, t, c), −tr ∂g/∂x, 0). ``trace`` is ``hutchinson``
    (εᵀ(∂g/∂x)ε with the ε set in ``noise``), ``exact`` or ``none`` (sampling). Counts function evaluations."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.nfe = 0
        self.trace = "hutchinson"
        self.noise: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, _, cond = state
        self.nfe += 1
        if self.trace == "none":
            dx = self.net(t, x, cond)
            return dx, x.new_zeros(len(x), 1), torch.zeros_like(cond)
        outer_graph = torch.is_grad_enabled() and x.requires_grad  # backprop through the solver: keep the graph
        with torch.enable_grad():
            if not outer_graph:  # the adjoint's forward pass, or evaluation: a fresh leaf to differentiate against
                x = x.detach().requires_grad_(True)
            dx = self.net(t, x, cond)
            if self.trace == "exact":
                trace = sum(
                    torch.autograd.grad(dx[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1])
                )
            else:
                vjp = torch.autograd.grad(dx, x, self.noise, create_graph=True)[0]
                trace = (vjp * self.noise).sum(1)
        return dx, -trace[:, None], torch.zeros_like(cond)


class MovingBatchNorm(nn.Module):
    """FFJORD's MovingBatchNorm1d as an invertible layer: batch statistics (and a running-average update) in
    training, running statistics in eval; ``y = (x − m)/√(v + ε)·e^w + b`` with log-det ``Σ(w − ½ log(v + ε))``."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-4):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or len(x) < 2:
            return self.running_mean, self.running_var
        mean, var = x.mean(0), x.var(0, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x → y and log|det ∂y/∂x| per row."""
        mean, var = self._stats(x)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight.exp() + self.bias
        logdet = (self.weight - 0.5 * torch.log(var + self.eps)).sum().expand(len(x))
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y → x with the running statistics."""
        return (y - self.bias) * (-self.weight).exp() * torch.sqrt(self.running_var + self.eps) + self.running_mean


class StiffSolveError(RuntimeError):
    """The ODE solver gave up (step size underflow or too many steps)."""


class ConditionalFlow(nn.Module):
    """MovingBatchNorm → CNF (learnable end time T = s², s₀ = √0.5) → MovingBatchNorm, conditioned on ``cond``."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        hidden: int = 256,
        layers: int = 3,
        end_time: float = 0.5,
        train_end_time: bool = True,
        batch_norm: bool = True,
        solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        adjoint: bool = True,
        max_num_steps: int = 1000,
    ):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.dynamics = ConditionedDynamics(ODENet(dim, cond_dim, hidden, layers))
        self.sqrt_end_time = nn.Parameter(torch.tensor(math.sqrt(end_time)), requires_grad=train_end_time)
        self.norm_in = MovingBatchNorm(dim) if batch_norm else None
        self.norm_out = MovingBatchNorm(dim) if batch_norm else None
        self.solver, self.atol, self.rtol, self.adjoint, self.max_num_steps = solver, atol, rtol, adjoint, max_num_steps

    @property
    def end_time(self) -> torch.Tensor:
        return self.sqrt_end_time.pow(2)

    def _solve(self, state: tuple[torch.Tensor, ...], times: torch.Tensor, adjoint: bool) -> tuple[torch.Tensor, ...]:
        options = {"max_num_steps": self.max_num_steps} if self.solver in _ADAPTIVE else {}
        kwargs = dict(rtol=self.rtol, atol=self.atol, method=self.solver, options=options)
        try:
            if adjoint:
                params = tuple(p for p in self.dynamics.parameters() if p.requires_grad)
                out = odeint_adjoint(self.dynamics, state, times, adjoint_params=params, **kwargs)
            else:
                out = odeint(self.dynamics, state, times, **kwargs)
        except (AssertionError, RuntimeError) as err:
            if "underflow" in str(err) or "max_num_steps" in str(err):
                raise StiffSolveError(f"ODE solve failed ({err}); T = {self.end_time.item():.4f}") from err
            raise
        return tuple(s[-1] for s in out)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, exact_trace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Data latents → (base noise u, log p(x | cond)) per row."""
        logdet = x.new_zeros(len(x))
        if self.norm_in is not None:
            x, ld = self.norm_in(x)
            logdet = logdet + ld
        self.dynamics.trace = "exact" if exact_trace else "hutchinson"
        self.dynamics.noise = torch.randn_like(x)  # ε drawn once per solve
        times = torch.stack([x.new_zeros(()), self.end_time.to(x)])
        u, delta, _ = self._solve((x, x.new_zeros(len(x), 1), cond), times, self.adjoint and torch.is_grad_enabled())
        logdet = logdet - delta[:, 0]  # the log-p state accumulates −∫tr ∂g/∂x; log|det ∂u/∂x| = +∫tr
        if self.norm_out is not None:
            u, ld = self.norm_out(u)
            logdet = logdet + ld
        return u, standard_normal_logprob(u) + logdet

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents x = flow⁻¹(u) for u ~ N(0, I)·τ, one per row of ``cond`` (running statistics)."""
        u = torch.randn(len(cond), self.dim, generator=generator).to(cond) * temperature
        return self.inverse(u, cond)

    @torch.no_grad()
    def inverse(self, u: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """flow⁻¹: base points u → latents x (the ODE backwards, T → 0; running statistics)."""
        if self.norm_out is not None:
            u = self.norm_out.inverse(u)
        self.dynamics.trace = "none"
        times = torch.stack([self.end_time.to(u), u.new_zeros(())])
        x, _, _ = self._solve((u, u.new_zeros(len(u), 1), cond), times, adjoint=False)
        return self.norm_in.inverse(x) if self.norm_in is not None else x


_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2", "heun2")


class CCNFModule(L.LightningModule):
    """Trains the conditional flow p(f | c) on G-VAE mean latents f = μ(x) with condition c = q(μ(x)) (paper §3.2).

    The module owns its frozen G-VAE (``gvae``): batches are encoder inputs (adjacency, node features) of unlabelled
    cells (:class:`datamodules.UnlabelledCellDataModule`) and each is encoded to (f, c) here. Without a G-VAE the
    batches are (latents, condition) pairs — a flow on other data.

    Loss: −log p(f | c) averaged over the batch (nats per latent). Validation reports the NLL (exact trace up to
    ``exact_trace_max_dim``; ``val/nll``, also per dimension), the function evaluations per solve (``val/nfe``), the learned end time, and —
    with a G-VAE — ``gen_success`` (valid cells per decoded sample) and ``samples_per_s``
    of conditional generation. Metrics are written to ``<trainer.default_root_dir>/metrics.json``.

    A stiff solve (step-size underflow, more than ``max_num_steps`` steps) skips that batch: the batch is saved to
    ``<default_root_dir>/stiff_batches/`` for inspection, a warning names it and ``train/stiff_skipped`` counts it;
    ``max_stiff_batches`` stiff batches in a row stop the run with an error instead of letting it idle. Under DDP
    the ranks decide together: a batch stiff on any rank is skipped on all of them (the stiff ranks save theirs as
    ``…_rank<r>.pt``), so no rank waits for the others' gradients and the replicas stay identical.

    Args:
        gvae: the frozen G-VAE checkpoint (``<gvae run>/checkpoints/last.ckpt``), loaded when fitting; its latent size
            and ZC dims must be ``latent_dim`` and ``cond_dim``, its op set the archive's.
        latent_dim, cond_dim: sizes of f and c.
        hidden, layers: ODE-net width and number of hidden ConcatSquash layers (paper 512 × 9).
        end_time, train_end_time: initial T and whether it is learned (paper 0.5, learned).
        batch_norm: MovingBatchNorm before and after the CNF.
        solver, atol, rtol, adjoint, max_num_steps: torchdiffeq settings (paper dopri5, 1e-5, 1e-5, adjoint).
        lr, weight_decay: AdamW (paper Table 6: lr 1e-3, weight decay 0.01 — what the shipped configs set; the default 0
            keeps small test flows, e.g. a 2-D density, from stiffening).
        gen_samples: cells generated at each validation to measure gen_success and samples_per_s.
        max_stiff_batches: stiff batches in a row that stop the run.
        exact_trace_max_dim: validation uses the exact trace up to this latent size, Hutchinson's estimate above.
    """

    def __init__(
        self,
        gvae: str | None = None,
        latent_dim: int = 64,
        cond_dim: int = 4,
        hidden: int = 256,
        layers: int = 3,
        end_time: float = 0.5,
        train_end_time: bool = True,
        batch_norm: bool = True,
        solver: str = "dopri5",
        atol: float = 1e-5,
        rtol: float = 1e-5,
        adjoint: bool = True,
        max_num_steps: int = 1000,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        gen_samples: int = 200,
        max_stiff_batches: int = 10,
        exact_trace_max_dim: int = 64,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.flow = ConditionalFlow(latent_dim, cond_dim, hidden, layers, end_time, train_end_time, batch_norm,
                                    solver, atol, rtol, adjoint, max_num_steps)
        self.stiff_in_a_row = 0
        self.stiff_skipped = 0
        self._skipping = False  # this step's batch is being skipped (stiff on some rank)
        self.space: dict = {}  # the G-VAE this flow's latents come from (op set, encoding, latent size)
        self._gvae = None  # the frozen G-VAE (loaded in setup; not a submodule: not trained, saved or put in train mode)
        self._val_cond: list[torch.Tensor] = []

    # ---- the frozen G-VAE ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Load the frozen G-VAE and check it against the archive (op set) and this flow (latent and ZC sizes)."""
        if self.hparams.gvae is None or self._gvae is not None:
            return
        gvae = GVAEModule.from_checkpoint(self.hparams.gvae)
        data = self.trainer.datamodule if self._trainer is not None else None
        if getattr(data, "op_set", None) is not None:
            gvae.check_space(data.op_set)
        self.check_space({**gvae.space, "latent": gvae.hparams.latent, "zc_dims": gvae.hparams.zc_dims})
        gvae.requires_grad_(False)
        self.__dict__["_gvae"] = gvae  # a plain attribute: nn.Module's setattr would register (and save) it

    @torch.no_grad()
    def latents_and_conditions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, c) of a batch: encoder inputs through the frozen G-VAE, or the batch itself when there is none."""
        if self._gvae is None:
            return batch[0], batch[1]
        if self._gvae.device != self.device:
            self._gvae.to(self.device)
        latents = self._gvae.encoder(*batch)[0]
        return latents, self._gvae.predict_zc(latents)

    def nll(self, latents: torch.Tensor, cond: torch.Tensor, exact_trace: bool = False) -> torch.Tensor:
        """−log p(latents | cond), per row (nats)."""
        return -self.flow(latents, cond, exact_trace)[1]

    def training_step(self, batch, batch_idx):
        latents, cond = self.latents_and_conditions(batch)
        self._skipping = False
        try:
            loss, err = self.nll(latents, cond).mean(), None
        except StiffSolveError as stiff:
            loss, err = None, stiff
        stiff_ranks = self._stiff_ranks(err is not None)
        if stiff_ranks:
            return self._skip_stiff((latents, cond), batch_idx, err, stiff_ranks)
        self.stiff_in_a_row = 0
        n = len(latents)
        self.log("train/nll", loss, prog_bar=True, batch_size=n)
        self.log("train/nll_per_dim", loss / self.hparams.latent_dim, batch_size=n)
        self.log("train/end_time", self.flow.end_time, batch_size=n)
        return loss

    def _stiff_ranks(self, stiff: bool) -> list[int]:
        """The ranks whose solve of this batch was stiff. Under DDP the ranks' flags are summed over all of them (one
        slot per rank), so every rank takes the same decision: a rank that skipped alone would leave the others
        waiting in the gradient all-reduce."""
        if self._trainer is None or self.trainer.world_size <= 1:
            return [self.global_rank] if stiff else []
        flags = torch.zeros(self.trainer.world_size, device=self.device)
        flags[self.global_rank] = float(stiff)
        flags = self.trainer.strategy.reduce(flags, reduce_op="sum")
        return [rank for rank, flag in enumerate(flags.tolist()) if flag]

    def _skip_stiff(self, batch, batch_idx: int, err: StiffSolveError | None, stiff_ranks: list[int]) -> torch.Tensor:
        """Skip this batch on every rank alike. The ranks whose solve was stiff save their batch; every rank counts it.

        Returns a zero-weighted loss that reaches every trainable parameter: under DDP (``find_unused_parameters``
        off) every rank must run a backward that gives every parameter a gradient, or the gradient all-reduce never
        completes (Lightning also refuses ``None`` from ``training_step`` in distributed training).
        :meth:`on_after_backward` then drops these zero gradients so the optimiser leaves the parameters (and its
        moments) untouched, as if the step had not happened."""
        self._skipping = True
        self.stiff_in_a_row += 1
        self.stiff_skipped += 1
        distributed = self.trainer.world_size > 1
        where = f" on rank(s) {stiff_ranks}" if distributed else ""
        path = None
        if err is not None:  # this rank's own solve was stiff
            out = Path(self.trainer.default_root_dir) / "stiff_batches"
            out.mkdir(parents=True, exist_ok=True)
            suffix = f"_rank{self.global_rank}" if distributed else ""
            path = out / f"epoch{self.current_epoch}_batch{batch_idx}{suffix}.pt"
            torch.save({"latents": batch[0].detach().cpu(), "cond": batch[1].detach().cpu()}, path)
        self.log("train/stiff_skipped", float(self.stiff_skipped), batch_size=len(batch[0]))
        if self.stiff_in_a_row >= self.hparams.max_stiff_batches:  # every rank counts alike, so all stop together
            saved = f"last saved to {path}" if path is not None else f"stiff{where}"
            raise StiffSolveError(
                f"{self.stiff_in_a_row} stiff batches in a row ({saved}): lower lr, raise max_num_steps, "
                "or loosen atol/rtol"
            ) from err
        reason = f"({err}); saved to {path}" if err is not None else "(every rank skips it)"
        warnings.warn(f"CCNF: skipped stiff batch {batch_idx} of epoch {self.current_epoch}{where} {reason}",
                      RuntimeWarning, stacklevel=2)
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_after_backward(self) -> None:
        """After the (all-reduced) zero gradients of a skipped batch: drop them, so AdamW, which passes over
        parameters without a gradient, changes nothing. The zeros stay with gradient accumulation (they add nothing
        to the other batches' gradients) and under a GradScaler (16-mixed), which needs a gradient to check; AdamW's
        moments then still decay on that step."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if self._skipping and self.trainer.accumulate_grad_batches == 1 and scaler is None:
            for p in self.parameters():
                p.grad = None

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ---- validation ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"nll": 0.0, "n": 0, "nfe": 0, "solves": 0}
        self._val_cond = []

    def validation_step(self, batch, batch_idx):
        latents, cond = self.latents_and_conditions(batch)
        if sum(len(c) for c in self._val_cond) < self.hparams.gen_samples:
            self._val_cond.append(cond)
        before = self.flow.dynamics.nfe
        exact = self.hparams.latent_dim <= self.hparams.exact_trace_max_dim  # O(D) backward passes per evaluation
        nll = self.nll(latents, cond, exact_trace=exact)
        self._val["nfe"] += self.flow.dynamics.nfe - before
        self._val["solves"] += 1
        self._val["nll"] += float(nll.sum())
        self._val["n"] += len(nll)

    def on_validation_epoch_end(self) -> None:
        v = self._val
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shards = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(shards, v)
            v = {k: sum(s[k] for s in shards) for k in v}
        metrics = {
            "val_nll": v["nll"] / max(1, v["n"]),
            "val_nll_per_dim": v["nll"] / max(1, v["n"]) / self.hparams.latent_dim,
            "nfe": v["nfe"] / max(1, v["solves"]),
            "end_time": self.flow.end_time.item(),
            "stiff_skipped": self.stiff_skipped,
        }
        metrics.update(self.generation_metrics())
        for name, value in metrics.items():  # val/nll, val/nfe, val/gen_success, …
            self.log(f"val/{name.removeprefix('val_')}", float(value), batch_size=1)
        self.epoch_metrics = metrics  # written to metrics.json by callbacks.MetricsFile

    def generation_metrics(self) -> dict[str, float]:
        """gen_success and samples_per_s of cells generated for the first ``gen_samples`` held-out conditions (repeated
        when there are fewer)."""
        if self._gvae is None or self.hparams.gen_samples <= 0 or not self._val_cond:
            return {}
        cond = torch.cat(self._val_cond)
        cond = cond[torch.arange(self.hparams.gen_samples, device=cond.device) % len(cond)]
        start = time.perf_counter()
        latents = self.flow.sample(cond, generator=torch.Generator().manual_seed(0))
        cells, repaired = self._gvae.decode_with_repairs(latents)
        seconds = time.perf_counter() - start
        return {"gen_success": 1.0 - sum(repaired) / len(cells), "samples_per_s": len(cells) / seconds}

    # ---- checkpoint ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lightning_nas"] = {"space": self.space}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.space = checkpoint.get("lightning_nas", {}).get("space", {})

    def check_space(self, space: dict) -> None:
        """Refuse latents of another G-VAE geometry (op set, encoding, latent size) than this flow was trained on."""
        if self.space and self.space != space:
            raise ValueError(f"CCNF checkpoint was trained on latents of {self.space}, the data is {space}: train a "
                             "CCNF for this G-VAE")
        if space.get("latent") not in (None, self.hparams.latent_dim):
            raise ValueError(f"latent_dim: {self.hparams.latent_dim}, but the G-VAE's latent size is {space['latent']}")
        if space.get("zc_dims") not in (None, self.hparams.cond_dim):
            raise ValueError(f"cond_dim: {self.hparams.cond_dim}, but the G-VAE predicts {space['zc_dims']} ZC dims")
        self.space = dict(space)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> CCNFModule:
        """A trained CCNF (eval mode) from a Lightning checkpoint, loaded without running code (weights only)."""
        return load_module(cls, path, map_location, "python -m lightning_nas fit --config configs/ccnf.yaml")
