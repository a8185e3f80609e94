"""GMM clustering of cells (paper §3.1): the mixture and the choice of K (:mod:`.gmm`), ``clusters.json``
(:mod:`.clusters_file`), the figures (:mod:`.plots`) and the ``cluster`` stage (:mod:`.stage`)."""

from .clusters_file import (
    FORMAT,
    FORMAT_VERSION,
    check_clusters,
    clusters_source,
    file_digest,
    normaliser_digest,
    read_clusters,
    rerun_hint,
    write_clusters,
)
from .gmm import (
    COVARIANCE_TYPES,
    RULE,
    ClusterFit,
    choose_k,
    fit_clusters,
    gmm_from_fit,
    measured_or_predicted,
    plateau_k,
)
from .plots import plot_curves, plot_latent_map
from .stage import ClusterStageConfig, main, run_cluster_stage

__all__ = ["COVARIANCE_TYPES", "FORMAT", "FORMAT_VERSION", "RULE", "ClusterFit", "ClusterStageConfig", "check_clusters",
           "choose_k", "clusters_source", "file_digest", "fit_clusters", "gmm_from_fit", "main",
           "measured_or_predicted", "normaliser_digest", "plateau_k", "plot_curves", "plot_latent_map",
           "read_clusters", "rerun_hint", "run_cluster_stage", "write_clusters"]
