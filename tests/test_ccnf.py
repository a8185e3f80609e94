"""CCNF: analytic checks of the flow (identity start, linear flow, normalisation, Hutchinson), gradients of the
condition under the adjoint, reproducible sampling, stiff solves."""

import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from callbacks import MetricsFile
from lightning_nas.models.ccnf import CCNFModule, ConditionalFlow, StiffSolveError
from tests.conftest import REPO


def flow(dim=4, cond_dim=2, **kw):
    kw = {"hidden": 16, "layers": 2, "batch_norm": False, "atol": 1e-6, "rtol": 1e-6, **kw}
    return ConditionalFlow(dim, cond_dim, **kw)


def randomise(f: ConditionalFlow, scale: float = 0.3, seed: int = 0):
    """Give the zero-initialised last layer weights, so the flow is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in f.dynamics.net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return f


def test_zero_initialised_flow_is_the_identity_with_the_gaussian_nll():
    torch.manual_seed(0)
    d = 256
    f = flow(dim=d, cond_dim=4)
    x = torch.randn(4096, d)
    u, logp = f(x, torch.randn(4096, 4))
    assert torch.allclose(u, x, atol=1e-6)
    expected = 0.5 * d * math.log(2 * math.pi * math.e)  # 363.2 nats for D = 256
    assert (-logp).mean().item() == pytest.approx(expected, abs=1.0)
    assert expected == pytest.approx(363.2, abs=0.05)


class Linear(nn.Module):
    """g(x) = A x, whatever t and the condition: u = exp(T A) x and log|det| = T·tr(A)."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t, x, cond):
        return x @ self.a.T


@pytest.mark.parametrize("exact", [True, False], ids=["exact-trace", "hutchinson"])
def test_linear_flow_matches_the_analytic_density(exact):
    torch.manual_seed(0)
    d = 3
    a = torch.randn(d, d, dtype=torch.float64) * 0.5
    f = flow(dim=d, end_time=0.7, atol=1e-9, rtol=1e-9, adjoint=False).double()
    f.dynamics.net = Linear(a)
    x = torch.randn(16, d, dtype=torch.float64)
    u, logp = f(x, torch.zeros(16, 2, dtype=torch.float64), exact_trace=exact)
    m = torch.linalg.matrix_exp(0.7 * a)
    assert torch.allclose(u, x @ m.T, atol=1e-6)
    inv = torch.linalg.inv(m)
    base = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), covariance_matrix=inv @ inv.T)
    if exact:
        assert torch.allclose(logp, base.log_prob(x), atol=1e-4)
    else:  # Hutchinson is unbiased: averaged over many ε it converges to the exact trace
        estimates = torch.stack([f(x, torch.zeros(16, 2, dtype=torch.float64))[1].detach() for _ in range(400)])
        error = (estimates.mean(0) - base.log_prob(x)).abs()
        assert (error < 4 * estimates.std(0) / math.sqrt(400)).all()
        assert estimates.std(0).max() > 1e-3  # it is an estimate, not the exact value


def test_hutchinson_batch_mean_agrees_with_the_exact_trace():
    torch.manual_seed(0)
    f = randomise(flow(dim=6, cond_dim=2, adjoint=False))
    x, c = torch.randn(1, 6).expand(4000, 6).contiguous(), torch.randn(1, 2).expand(4000, 2).contiguous()
    _, hutchinson = f(x, c)
    _, exact = f(x[:1], c[:1], exact_trace=True)
    assert hutchinson.std() > 1e-3
    assert hutchinson.mean().item() == pytest.approx(exact.item(), abs=4 * hutchinson.std().item() / math.sqrt(4000))


def test_learned_2d_density_integrates_to_one():
    torch.manual_seed(0)
    f = flow(dim=2, cond_dim=1, hidden=32, layers=2, batch_norm=True, adjoint=False, atol=1e-5, rtol=1e-5)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    for _ in range(150):  # two moons-ish: a bimodal target, conditioned on which mode
        c = torch.randint(0, 2, (128, 1)).float()
        x = torch.randn(128, 2) * 0.3 + torch.cat([c * 2 - 1, (c * 2 - 1) * 0.5], 1)
        loss = -f(x, c)[1].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    f.eval()
    step = 0.05
    grid = torch.arange(-5, 5, step) + step / 2
    xy = torch.cartesian_prod(grid, grid)
    for cond in (0.0, 1.0):
        with torch.no_grad():
            _, logp = f(xy, torch.full((len(xy), 1), cond), exact_trace=True)
        assert (logp.exp().sum() * step**2).item() == pytest.approx(1.0, abs=0.01)
    assert loss.item() < 1.5  # it learned something: N(0, I) would be ≈ 2.84 + spread of the modes


def test_condition_gets_gradients_under_the_adjoint_equal_to_backprop():
    torch.manual_seed(0)
    grads = []
    for adjoint in (True, False):
        f = randomise(flow(dim=5, cond_dim=3, adjoint=adjoint, atol=1e-8, rtol=1e-8)).double()
        x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        c = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        torch.manual_seed(3)  # the same Hutchinson ε
        (-f(x, c)[1].mean()).backward()
        grads.append((c.grad.clone(), f.sqrt_end_time.grad.clone()))
    (c_adj, t_adj), (c_bp, t_bp) = grads
    assert c_adj.abs().max() > 1e-4
    assert torch.allclose(c_adj, c_bp, atol=1e-5) and torch.allclose(t_adj, t_bp, atol=1e-5)


def test_sampling_is_reproducible_and_inverts_the_forward_map():
    f = randomise(flow(dim=4, cond_dim=2, batch_norm=True)).eval()
    c = torch.randn(10, 2)
    a = f.sample(c, generator=torch.Generator().manual_seed(7))
    b = f.sample(c, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, f.sample(c, generator=torch.Generator().manual_seed(8)))
    u, _ = f(a, c)
    assert torch.allclose(f.inverse(u, c), a, atol=1e-4)


def test_stiff_solve_is_reported():
    f = randomise(flow(dim=4, cond_dim=2, max_num_steps=3, adjoint=False), scale=3.0)
    with pytest.raises(StiffSolveError, match="ODE solve failed"):
        f(torch.randn(8, 4), torch.randn(8, 2))


# ---- training on real G-VAE latents, and generation ------------------------------------------------------------------
def test_ccnf_trains_on_the_frozen_gvae_means_and_predicted_conditions_of_unlabelled_cells(tiny_archive, tiny_gvae):
    from datamodules import UnlabelledCellDataModule
    from lightning_nas.archive import Archive
    from lightning_nas.models import GVAEModule

    data = UnlabelledCellDataModule(str(tiny_archive), batch_size=64, val_fraction=0.1, seed=0)
    data.setup("fit")
    assert len(data.train_set) + len(data.val_set) == 560  # the 600 − 40 unlabelled cells
    model = CCNFModule(gvae=str(tiny_gvae), latent_dim=8, hidden=16, layers=1)
    model.setup("fit")  # loads the frozen G-VAE
    assert model.space == {"op_set": "graphnet", "encoding": 1, "latent": 8, "zc_dims": 4}
    pairs = [model.latents_and_conditions(batch) for batch in (data.train_set.tensors, data.val_set.tensors)]
    latents, cond = (torch.cat(t) for t in zip(*pairs))
    gvae = GVAEModule.from_checkpoint(tiny_gvae)
    with Archive(tiny_archive) as archive:
        labelled = set(archive.zc(archive.resolve_probe()))
        cells = [c for h, c in archive.iter_cells() if h not in labelled]
    mine = gvae.encode(cells)
    assert torch.allclose(mine.sort(0).values, latents.sort(0).values, atol=1e-5)
    assert torch.allclose(gvae.predict_zc(mine).sort(0).values, cond.sort(0).values, atol=1e-5)
    assert not any(p.requires_grad for p in model._gvae.parameters()) and not model._gvae.training
    assert not any(k.startswith("_gvae") for k in model.state_dict())  # frozen, not saved with the flow
    with pytest.raises(ValueError, match="cond_dim: 3"):
        CCNFModule(gvae=str(tiny_gvae), latent_dim=8, cond_dim=3).setup("fit")
    with pytest.raises(FileNotFoundError, match="configs/gvae.yaml"):
        CCNFModule(gvae=str(tiny_archive.parent / "missing.ckpt"), latent_dim=8).setup("fit")


def test_ccnf_trains_writes_metrics_and_generates_valid_cells(tiny_archive, tiny_gvae, tmp_path):
    import json

    import lightning as L

    from datamodules import UnlabelledCellDataModule
    from lightning_nas.generator import CellGenerator
    from lightning_nas.models import GVAEModule
    from lightning_nas.space import Cell

    torch.manual_seed(0)
    model = CCNFModule(str(tiny_gvae), latent_dim=8, hidden=32, layers=2, atol=1e-4, rtol=1e-4, gen_samples=50)
    data = UnlabelledCellDataModule(str(tiny_archive), batch_size=64, val_fraction=0.1)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        gradient_clip_val=5.0, callbacks=[MetricsFile()])
    trainer.fit(model, datamodule=data)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val_nll", "nfe", "gen_success", "samples_per_s"} <= set(metrics)
    assert metrics["gen_success"] == 1.0 and metrics["nfe"] > 2 and metrics["samples_per_s"] > 0
    # it learned: the held-out NLL beats a Gaussian fitted to the training latents (diagonal, per dimension)
    train = model.latents_and_conditions(data.train_set.tensors)[0]
    val = model.latents_and_conditions(data.val_set.tensors)[0]
    gaussian = -torch.distributions.Normal(train.mean(0), train.std(0)).log_prob(val).sum(1).mean().item()
    assert metrics["val_nll"] < gaussian

    checkpoint = tmp_path / "ccnf.ckpt"
    trainer.save_checkpoint(checkpoint)
    loaded = CCNFModule.from_checkpoint(checkpoint)
    assert loaded.space == {"op_set": "graphnet", "encoding": 1, "latent": 8, "zc_dims": 4}
    clusters = {"means": [[0.0, 0.0, 0.0, 0.0], [1.5, 1.5, 1.5, 1.5]]}
    generator = CellGenerator(GVAEModule.from_checkpoint(tiny_gvae), loaded, clusters)
    reference = Cell.random(seed=3)
    for kwargs in ({"cluster": 1}, {"reference": reference}, {"condition": torch.zeros(4)}):
        a = generator.sample(20, seed=5, **kwargs)
        b = generator.sample(20, seed=5, **kwargs)
        assert len(a.cells) == 20 and all(isinstance(c, Cell) for c in a.cells)
        assert a.cells == b.cells and a.attempts == 20 and a.repairs == 0 and a.rejections == 0
        assert a.success == 1.0
    assert generator.sample(20, seed=6, cluster=1).cells != generator.sample(20, seed=5, cluster=1).cells
    near = generator.sample(20, reference=reference, method="neighbourhood", temperature=0.01)
    assert len(near.cells) == 20
    assert len(generator.sample(20, method="uniform").cells) == 20
    prior = generator.sample(20, method="prior", seed=1)
    assert len(prior.cells) == 20 and prior.cells == generator.sample(20, method="prior", seed=1).cells
    # cells outside the generator's op set are rejected and redrawn, and a hopeless request stops with a reason
    seen = sorted({op for c in near.cells for op in c.ops})
    within = CellGenerator(GVAEModule.from_checkpoint(tiny_gvae), loaded, clusters, op_set=seen)
    again = within.sample(20, reference=reference, method="neighbourhood", temperature=0.01)
    assert again.cells == near.cells and again.rejections == 0
    nb201 = CellGenerator(GVAEModule.from_checkpoint(tiny_gvae), loaded, clusters, op_set="nb201")
    with pytest.raises(RuntimeError, match="outside op set 'nb201'"):
        nb201.sample(3, method="neighbourhood", reference=reference, temperature=3.0)
    with pytest.raises(ValueError, match="exactly one of"):
        generator.sample(2, cluster=0, condition=torch.zeros(4))
    with pytest.raises(ValueError, match="is not one of the 2 clusters"):
        generator.sample(2, cluster=2)


def test_ccnf_checkpoint_of_another_gvae_is_refused(tiny_gvae):
    from lightning_nas.generator import CellGenerator
    from lightning_nas.models import GVAEModule

    ccnf = CCNFModule(latent_dim=8)
    ccnf.space = {"op_set": "graphnet", "encoding": 1, "latent": 16, "zc_dims": 4}
    with pytest.raises(ValueError, match="train the CCNF on this G-VAE"):
        CellGenerator(GVAEModule.from_checkpoint(tiny_gvae), ccnf)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_stiff_batches_are_skipped_saved_and_stop_the_run_when_persistent(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = CCNFModule(latent_dim=4, hidden=16, layers=2, max_num_steps=2, max_stiff_batches=3, adjoint=False)
    randomise(model.flow, scale=3.0)
    loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 4)), batch_size=8)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="skipped stiff batch"), pytest.raises(StiffSolveError, match="3 stiff"):
        trainer.fit(model, train_dataloaders=loader)
    saved = sorted((tmp_path / "stiff_batches").glob("*.pt"))
    assert [p.name for p in saved] == ["epoch0_batch0.pt", "epoch0_batch1.pt", "epoch0_batch2.pt"]
    batch = torch.load(saved[0], weights_only=True)
    assert torch.equal(batch["latents"], loader.dataset.tensors[0][:8])


class StiffAtBatch1(CCNFModule):
    """Batch 1 is solved with a step limit of 0: torchdiffeq gives up at once, a genuine :class:`StiffSolveError`."""

    def on_train_start(self) -> None:
        self.params_after: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.flow.max_num_steps = 0 if batch_idx == 1 else self.hparams.max_num_steps

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.params_after.append({n: p.detach().clone() for n, p in self.named_parameters()})


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_a_stiff_batch_is_skipped_without_an_optimiser_step_and_training_goes_on(tmp_path):
    """One process: the stiff batch is counted, saved and warned about, no parameter or optimiser state moves on it,
    and the next batches train. ``training_step`` returns a zero loss rather than ``None`` (which Lightning refuses
    under DDP, and warns about here)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = StiffAtBatch1(latent_dim=8, cond_dim=4, hidden=16, layers=2, atol=1e-4, rtol=1e-4, gen_samples=0)
    loader = DataLoader(TensorDataset(torch.randn(24, 8), torch.randn(24, 4)), batch_size=8)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0)
    with pytest.warns(RuntimeWarning, match=r"skipped stiff batch 1 of epoch 0 \(ODE solve failed"):
        trainer.fit(model, train_dataloaders=loader)
    assert model.stiff_skipped == 1 and model.stiff_in_a_row == 0
    assert [p.name for p in (tmp_path / "stiff_batches").iterdir()] == ["epoch0_batch1.pt"]
    after, names = model.params_after, [n for n, _ in model.named_parameters()]
    assert len(after) == 3
    assert all(torch.equal(after[1][n], after[0][n]) for n in names)  # the skipped step moved nothing
    assert not all(torch.equal(after[2][n], after[1][n]) for n in names)  # the next one trains
    assert all(int(state["step"]) == 2 for state in trainer.optimizers[0].state.values())  # two AdamW steps, not 3


def test_ddp_skips_a_batch_stiff_on_one_rank_on_every_rank(tmp_path):
    """Two CPU processes (gloo, ``strategy=ddp``), rank 1's solve of batch 1 stiff (tests/ccnf_ddp_stiff.py): every
    rank skips that batch (no rank waits for the others' gradients), nothing moves on the skipped step, training
    goes on, and the replicas end identical. Before, rank 1 alone returned ``None`` and the run died or hung."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    # Lightning starts rank 1 as a child of rank 0: a session of their own lets a timeout end both. The helper ends a
    # run still training 90 s after the rendezvous (a hang); the timeout here also covers two slow imports of torch.
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "ccnf_ddp_stiff.py"), str(tmp_path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("2-process DDP run hung:\n" + log[-3000:])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a rank left behind
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in ranks:
        assert rank["skipped"] == [1] and rank["stiff_skipped"] == 1
        assert rank["global_step"] == 4 and len(rank["params_after"]) == 4  # the epoch went on past the skip
    assert sorted(p.name for p in (tmp_path / "stiff_batches").iterdir()) == ["epoch0_batch1_rank1.pt"]
    (a, b), names = ranks, ranks[0]["params"].keys()
    assert all(torch.equal(a["params"][n], b["params"][n]) for n in names)  # identical replicas
    for step in range(4):
        assert all(torch.equal(a["params_after"][step][n], b["params_after"][step][n]) for n in names)
    after = a["params_after"]
    assert all(torch.equal(after[1][n], after[0][n]) for n in names)  # the skipped step moved nothing
    assert not all(torch.equal(after[3][n], after[1][n]) for n in names)  # the steps after it train
    assert a["params"]["flow.dynamics.net.layers.2.layer.weight"].abs().sum() > 0  # zero-initialised, now trained


def test_cluster_quality_scores_each_clusters_cells_in_the_searches_start(tiny_gvae, tiny_ccnf):
    """Table 2's diagnosis: per cluster and for random GraphNet cells, α₀ with those cells is really scored (T-CET on
    the probe), reproducibly, and over-budget draws are counted instead of scored."""
    from lightning_nas.generator import CellGenerator
    from lightning_nas.models import GVAEModule
    from lightning_nas.search import Budget, HLEvoConfig
    from lightning_nas.studies import cluster_quality, cluster_quality_table
    from lightning_nas.zc import Probe

    clusters = {"means": [[0.0, 0.0, 0.0, 0.0], [1.5, 1.5, 1.5, 1.5]]}
    generator = CellGenerator(GVAEModule.from_checkpoint(tiny_gvae), CCNFModule.from_checkpoint(tiny_ccnf), clusters)
    probe = Probe.from_source("gaussian", seed=0, batch_size=4)
    small = HLEvoConfig(initial=((0, 8, 2, 1), (0, 16, 2, 1)), initial_final_channels=None)
    rows = cluster_quality(generator, probe, Budget("b", max_params=10**7), small, samples=2)
    assert [r["source"] for r in rows] == ["cluster 0", "cluster 1", "random GraphNet"]
    assert all(r["over_budget"] == 0 and r["tcet_mean"] > 0 and r["tcet_max"] >= r["tcet_mean"] for r in rows)
    assert rows == cluster_quality(generator, probe, Budget("b", max_params=10**7), small, samples=2)
    tight = cluster_quality(generator, probe, Budget("b", max_params=10), small, samples=2)
    assert all(r["over_budget"] == 2 and r["tcet_mean"] is None for r in tight)
    assert "| random GraphNet |" in cluster_quality_table(rows) and "2/2" in cluster_quality_table(tight)
