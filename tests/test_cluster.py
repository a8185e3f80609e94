"""Stage ``cluster``: the BIC/AIC plateau rule, GMM fits on mixtures with known K, the archive's clusters table and
the stage end to end on a tiny archive built here (no ZC evaluation: the vectors are drawn from known clusters)."""

import json
import sqlite3

import numpy as np
import pytest
import torch
import yaml

from lightning_nas.archive import Archive
from lightning_nas.cli import main as cli_main
from lightning_nas.cluster import (
    FORMAT_VERSION,
    RULE,
    choose_k,
    file_digest,
    fit_clusters,
    normaliser_digest,
    plateau_k,
    read_clusters,
)
from lightning_nas.cluster.stage import ClusterStageConfig, run_cluster_stage
from lightning_nas.space import sample_cells
from lightning_nas.zc.vector import ZC_NAMES, ZCNormaliser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- the rule on hand-made curves ----------------------------------------------------------------------------------
def test_choose_k_clear_elbow():
    ks = list(range(1, 9))
    bic = [1000, 400, 100, 95, 93, 92, 92, 91]  # total 909: beyond K=3 at most 9 (1%) is left
    aic = [1000, 380, 90, 80, 75, 72, 70, 69]
    assert plateau_k(ks, bic) == 3 and plateau_k(ks, aic) == 3
    assert choose_k(ks, bic, aic) == 3
    # AIC still improving (by more than 5% of its total) past BIC's plateau: the earlier plateau wins
    aic_late = [1000, 380, 200, 120, 60, 30, 20, 19]  # total 981, 5% = 49: K=5 leaves 41
    assert plateau_k(ks, aic_late) == 5
    assert choose_k(ks, bic, aic_late) == 3 == choose_k(ks, aic_late, bic)
    # the order of the ks does not matter
    perm = [3, 0, 7, 5, 1, 2, 6, 4]
    assert choose_k([ks[i] for i in perm], [bic[i] for i in perm], [aic_late[i] for i in perm]) == 3


def test_choose_k_flat_and_rising_curves_give_the_smallest_k():
    ks = [2, 3, 4, 5]
    assert choose_k(ks, [7.0] * 4, [7.0] * 4) == 2  # total == 0
    assert choose_k(ks, [1, 2, 3, 4], [1, 1.5, 2, 3]) == 2  # best at the first K
    assert choose_k([5], [3.0], [4.0]) == 5


def test_choose_k_minimum_at_the_last_k():
    ks = list(range(1, 9))
    linear = [100, 90, 80, 70, 60, 50, 40, 30]  # never plateaus: only the last K leaves nothing
    assert choose_k(ks, linear, linear) == 8
    halving = [100 / 2**i for i in range(8)]  # total 99.2, 5% = 4.96: from K=6 (3.125 - 0.78 = 2.3) on
    assert plateau_k(ks, halving) == 6
    assert choose_k(ks, halving, linear) == 6


def test_choose_k_tolerance_and_validation():
    ks = [1, 2, 3, 4, 5]
    curve = [100, 20, 12, 11, 10]  # total 90
    assert plateau_k(ks, curve, tolerance=0.1) == 3  # K=2 leaves 10 > 9; K=3 leaves 2
    assert plateau_k(ks, curve, tolerance=0.2) == 2  # 10 ≤ 18
    assert plateau_k(ks, curve, tolerance=0.0) == 5  # 0: the argmin
    assert plateau_k(ks, [5, 1, 3, 1, 2], tolerance=0.0) == 2  # the first argmin
    with pytest.raises(ValueError, match="3 values for 2 ks"):
        choose_k([1, 2], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        choose_k([1, 2], [1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="duplicates"):
        choose_k([1, 1], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="tolerance"):
        choose_k([1, 2], [1, 2], [1, 2], tolerance=1.5)


# ---- GMM fits on mixtures with known K -----------------------------------------------------------------------------
def mixture(k: int, n: int = 150, sep: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` isotropic unit-variance 4-D Gaussians, ``n`` points each, means on a grid of spacing ``sep`` (≥ 10σ
    between any two) in a random plane of R⁴.

    Why a plane and not, say, corners of a 4-D hypercube: for K equal, well-separated clusters in d dimensions the
    K-th component improves BIC/AIC by only ≈ 2/(K·d) of the whole curve's improvement (merging two clusters costs
    ~2n·log(sep) while the K=1 fit pays ~N·d·log(sep)), so with tolerance 0.05 a 4-D hypercube with K = 8 sits right
    at the rule's resolution (≈ 6% vs 5%). Means spread in 2 dimensions leave the 8th component ≈ 11%."""
    rng = np.random.default_rng(seed)
    grid = np.array([(i % 3, i // 3, 0, 0) for i in range(k)], dtype=float)
    rotation, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    means = sep * grid @ rotation.T
    x = np.concatenate([m + rng.standard_normal((n, 4)) for m in means])
    return x, np.repeat(np.arange(k), n)


def _same_partition(a, b) -> bool:
    pairs = set(zip(a, b, strict=True))
    return len(pairs) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("k", [3, 5, 8])
def test_fit_clusters_finds_the_true_k(k):
    x, truth = mixture(k, seed=k)
    fit = fit_clusters(torch.from_numpy(x) if k == 5 else x, range(1, 13), seed=0)
    assert fit.k == k
    assert fit.ks == list(range(1, 13)) and len(fit.bic) == len(fit.aic) == 12
    assert fit.k_bic <= k and fit.k_aic <= k
    assert fit.rule == RULE and fit.tolerance == 0.05 and all(fit.converged)
    weights = np.array(fit.weights)
    assert weights.shape == (k,) and weights.sum() == pytest.approx(1) and (np.diff(weights) <= 0).all()
    assert np.array(fit.means).shape == (k, 4)
    cov = np.array(fit.covariances)
    assert cov.shape == (k, 4, 4) and np.allclose(cov, np.eye(4), atol=0.35)  # unit variance recovered
    assert _same_partition(fit.labels, truth.tolist())
    # the model is the one at K, numbered like the lists
    model = fit.model
    assert model.n_components == k and model.predict(x).tolist() == fit.labels
    assert np.allclose(model.means_, fit.means)
    json.dumps(fit.to_json(), allow_nan=False)  # JSON-ready


def test_fit_clusters_is_deterministic_and_converts_covariances():
    x, _ = mixture(3, n=60, seed=1)
    a, b = fit_clusters(x, [2, 3, 4], seed=7), fit_clusters(x, [4, 3, 2], seed=7)
    assert a == b and a.to_json() == b.to_json()  # the model is not compared
    for covariance_type in ("tied", "diag", "spherical"):
        fit = fit_clusters(x, [2, 3, 4], covariance_type=covariance_type)
        assert fit.k == 3 and np.array(fit.covariances).shape == (3, 4, 4)
        assert fit.model.predict(x).tolist() == fit.labels
    with pytest.raises(ValueError, match="NaN"):
        fit_clusters(np.array([[0.0, np.nan], [1.0, 2.0]]), [1])
    with pytest.raises(ValueError, match="at least that many rows"):
        fit_clusters(x[:3], [2, 4])


# ---- the archive's clusters table ----------------------------------------------------------------------------------
def test_archive_clusters_replace_and_validate(tmp_path):
    path = tmp_path / "archive.sqlite"
    with Archive(path, op_set="graphnet") as archive:
        assert archive.clusters("x") == {}
        archive.set_clusters("x", {"a": 0, "b": np.int64(2)})
        archive.set_clusters("it's", {"a": 1}, source="predicted")  # bound parameters: quotes are data
        assert archive.clusters("x") == {"a": 0, "b": 2}
        archive.set_clusters("x", {"c": 1})  # replaces every row of that name
        assert archive.clusters("x") == {"c": 1} and archive.clusters("it's") == {"a": 1}
        for bad in (True, 1.0, -1, "0"):
            with pytest.raises(ValueError, match="cluster must be"):
                archive.set_clusters("x", {"a": bad})
        assert archive.clusters("x") == {"c": 1}  # a refused call writes nothing
    # an archive written before the table existed (schema version 1): migrated on opening, reads as empty
    con = sqlite3.connect(path)
    con.execute("DROP TABLE clusters")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with Archive(path) as archive:
        assert archive.clusters("x") == {}
        archive.set_clusters("x", {"a": 3})
        assert archive.clusters("x") == {"a": 3}


# ---- the stage end to end ------------------------------------------------------------------------------------------
CENTRES = [(0.0, 0.0, 10.0, 12.0), (8.0, 3.0, 12.0, 15.0), (2.0, 9.0, 14.0, 13.0)]  # naswot, snip, log params/flops
PER_CLUSTER = 25
K_RANGE = {"k_min": 1, "k_max": 6}


def build_archive(workdir, labelled_per_cluster: int = PER_CLUSTER, normaliser: bool = True) -> dict[str, int]:
    """A tiny archive: unique graphnet cells, 3 × ``labelled_per_cluster`` with ZC vectors drawn around the
    ``CENTRES`` (σ = 0.3; params/FLOPs log-normal), one failed row and a few cells without a ZC row. Returns the
    true cluster of each labelled cell."""
    rng = np.random.default_rng(0)
    cells = {c.canonical_hash(): c for c in sample_cells(200, seed=5, op_set="graphnet")}
    hashes = list(cells)
    needed = 3 * labelled_per_cluster
    assert len(hashes) >= needed + 6
    truth, rows = {}, []
    with Archive(workdir / "archive.sqlite", op_set="graphnet") as archive:
        archive.add_cells([cells[h] for h in hashes[: needed + 6]])
        archive.add_probe("p", "gaussian", 0, torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
        for i, cell_hash in enumerate(hashes[:needed]):
            c = i % 3
            naswot, snip, log_params, log_flops = np.array(CENTRES[c]) + 0.3 * rng.standard_normal(4)
            values = {"naswot": naswot, "snip_ssnr": snip, "params": np.exp(log_params), "flops": np.exp(log_flops)}
            archive.add_zc(cell_hash, "p", {**values, "tcet": 1.0})
            truth[cell_hash] = c
            rows.append(values)
        archive.add_zc(hashes[needed], "p", None, status="failed", reason="NaN gradient")
        if normaliser and len(rows) >= 2:
            archive.set_normaliser("p", ZCNormaliser.fit(rows).to_dict())
    return truth


def test_stage_end_to_end(tmp_path):
    truth = build_archive(tmp_path)
    metrics = run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path), **K_RANGE))
    out = tmp_path / "cluster"

    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["k"] == 3 and metrics["cells"] == 3 * PER_CLUSTER and metrics["skipped"] == 0
    assert metrics["probe"] == "p"
    clusters = json.loads((out / "clusters.json").read_text())
    assert clusters["K"] == 3 and clusters["ks"] == list(range(1, 7))
    assert len(clusters["bic"]) == len(clusters["aic"]) == 6
    assert metrics["bic_at_k"] == clusters["bic"][2] and metrics["aic_at_k"] == clusters["aic"][2]
    assert clusters["weights"] == pytest.approx([1 / 3] * 3)
    assert np.array(clusters["means"]).shape == (3, 4) and np.array(clusters["covariances"]).shape == (3, 4, 4)
    assert clusters["rule"] == RULE and clusters["tolerance"] == 0.05
    assert clusters["probe_id"] == "p" and clusters["zc_names"] == list(ZC_NAMES)
    assert clusters["cells"] == 3 * PER_CLUSTER and clusters["op_set"] == "graphnet"
    assert clusters["archive_clusters"] == {"name": "p", "zc": 3 * PER_CLUSTER, "gvae": 0}
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert clusters["normaliser"] == archive.get_normaliser("p")
        assigned = archive.clusters("p")
    # what it was computed from: the reader checks these against the G-VAE and the archive it is used with
    assert clusters["format"] == "lightning-nas-clusters" and clusters["version"] == FORMAT_VERSION == 2
    assert clusters["source"] == {"archive": str(tmp_path / "archive.sqlite"), "probe_id": "p",
                                  "normaliser_sha256": normaliser_digest(clusters["normaliser"]),
                                  "gvae": None, "gvae_sha256": None}
    assert read_clusters(out / "clusters.json", zc_dims=4, archive=tmp_path / "archive.sqlite") == clusters
    # the means live in the normalised ZC space: mapping the true centres through the normaliser lands on them
    normaliser = ZCNormaliser.from_dict(clusters["normaliser"])
    centres = normaliser.transform(
        [{"naswot": a, "snip_ssnr": b, "params": np.exp(c), "flops": np.exp(d)} for a, b, c, d in CENTRES]
    ).numpy()
    distance = np.abs(np.array(clusters["means"])[:, None] - centres[None]).sum(-1)
    assert sorted(distance.argmin(1).tolist()) == [0, 1, 2] and distance.min(1).max() < 0.3

    png = (out / "bic_aic.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    assert json.loads((out / "config.json").read_text())["config"]["k_max"] == 6

    # every labelled cell (and only those: not the failed one, not the cells without ZC) has a cluster in range(K)
    assert set(assigned) == set(truth)
    assert set(assigned.values()) == set(range(3))
    assert _same_partition([assigned[h] for h in truth], list(truth.values()))

    # the CLI with a YAML config reruns it: same answer, archive rows replaced
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"workdir": str(tmp_path), **K_RANGE, "n_init": 3}))
    cli_main(["cluster", "--config", str(config)])
    assert json.loads((out / "metrics.json").read_text())["k"] == 3
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert archive.clusters("p") == assigned


def test_stage_assigns_the_other_cells_through_a_gvae(tmp_path):
    """With ``gvae:`` every archived cell gets a component: labelled ones from their ZC vector (source zc), the rest
    from the GMM applied to q(f(x)) (source gvae), exactly as computed here by hand; foreign checkpoints are refused."""
    import lightning as L

    from datamodules import GraphZCDataModule
    from lightning_nas.cluster import gmm_from_fit
    from lightning_nas.models import GVAEModule

    truth = build_archive(tmp_path)
    model = GVAEModule(hidden=32, latent=8, layers=2, prior_samples=20)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path / "g")
    trainer.fit(model, datamodule=GraphZCDataModule(str(tmp_path / "archive.sqlite"), batch_size=16, val_fraction=0.1))
    checkpoint = tmp_path / "gvae.ckpt"
    trainer.save_checkpoint(checkpoint)

    metrics = run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path), gvae=str(checkpoint), batch_size=7,
                                                   **K_RANGE))
    with Archive(tmp_path / "archive.sqlite") as archive:
        assigned = archive.clusters("p")
        cells = dict(archive.iter_cells())
        sources = dict(archive._read("SELECT cell_hash, source FROM clusters WHERE name = 'p'"))
    others = [h for h in cells if h not in truth]
    assert metrics["gvae_assigned"] == len(others) == 6 and set(assigned) == set(cells)
    assert {sources[h] for h in truth} == {"zc"} and {sources[h] for h in others} == {"gvae"}
    loaded = GVAEModule.from_checkpoint(checkpoint)
    gmm = gmm_from_fit(json.loads((tmp_path / "cluster" / "clusters.json").read_text()))
    by_hand = gmm.predict(loaded.predict_zc(loaded.encode([cells[h] for h in others])).double().numpy())
    assert [assigned[h] for h in others] == by_hand.tolist()
    # clusters.json records the G-VAE's digest; a generator loads it with that G-VAE and refuses another one
    from lightning_nas.generator import CellGenerator

    clusters_path = tmp_path / "cluster" / "clusters.json"
    source = json.loads(clusters_path.read_text())["source"]
    assert source["gvae"] == str(checkpoint) and source["gvae_sha256"] == file_digest(checkpoint)
    generator = CellGenerator.load(checkpoint, clusters=clusters_path, archive=tmp_path / "archive.sqlite")
    assert len(generator.clusters["means"]) == metrics["k"]
    retrained = torch.load(checkpoint, weights_only=True)
    retrained["state_dict"] = {k: v.clone() + 0.5 for k, v in retrained["state_dict"].items()}
    torch.save(retrained, tmp_path / "retrained.ckpt")
    with pytest.raises(ValueError, match=r"clusters.json: computed with the G-VAE .*gvae.ckpt.*run the cluster stage "
                                         r"again: .* --gvae .*gvae.ckpt"):
        CellGenerator.load(tmp_path / "retrained.ckpt", clusters=clusters_path)

    with pytest.raises(FileNotFoundError, match="configs/gvae.yaml"):
        run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path), gvae=str(tmp_path / "none.ckpt"), **K_RANGE))
    foreign = torch.load(checkpoint, weights_only=True)
    foreign["lightning_nas"]["space"]["op_set"] = "nb201"
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="op set and encoding must match"):
        run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path), gvae=str(tmp_path / "foreign.ckpt"), **K_RANGE))
    other = torch.load(checkpoint, weights_only=True)
    other["lightning_nas"]["zc_normaliser"]["mean"][0] += 1.0
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="another ZC normaliser"):
        run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path), gvae=str(tmp_path / "other.ckpt"), **K_RANGE))
    with pytest.raises(ValueError, match="clusters.json: clustered in another normalised ZC space.*another archive"):
        CellGenerator.load(tmp_path / "other.ckpt", clusters=clusters_path)
    with Archive(tmp_path / "archive.sqlite") as archive:
        assert archive.clusters("p") == assigned  # refused runs replaced nothing


def test_stage_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the zc stage first"):
        run_cluster_stage(ClusterStageConfig(workdir=str(tmp_path / "nowhere")))

    few = tmp_path / "few"
    build_archive(few, labelled_per_cluster=2)  # 6 labelled cells
    with pytest.raises(ValueError, match=r"6 labelled cells.*k_max = 6.*zc stage"):
        run_cluster_stage(ClusterStageConfig(workdir=str(few), **K_RANGE))
    assert not (few / "cluster" / "metrics.json").exists()

    bare = tmp_path / "bare"
    build_archive(bare, labelled_per_cluster=3, normaliser=False)
    with pytest.raises(ValueError, match="no ZC normaliser.*run the zc stage"):
        run_cluster_stage(ClusterStageConfig(workdir=str(bare), k_max=4))
    with pytest.raises(ValueError, match="no probe 'q'"):
        run_cluster_stage(ClusterStageConfig(workdir=str(bare), probe="q", k_max=4))
    with Archive(bare / "archive.sqlite") as archive:
        archive.add_probe("q", "gaussian", 1, torch.ones(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="2 probes.*probe:"):
        run_cluster_stage(ClusterStageConfig(workdir=str(bare), k_max=4))

    with pytest.raises(ValueError, match="k_min"):
        ClusterStageConfig(k_min=5, k_max=4)
    from lightning_nas.cli import main

    for bad in (["--covariance_type", "banana"], ["--n_init", "0"]):  # refused by the parser, before anything runs
        with pytest.raises(SystemExit) as exit_:
            main(["cluster", "--workdir", str(bare), *bad])
        assert exit_.value.code == 2
