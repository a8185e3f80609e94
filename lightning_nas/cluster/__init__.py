"""GMM clustering of cells (paper §3.1): the mixture and the choice of K (:mod:`.gmm`), ``clusters.json``
(:mod:`.clusters_file`), the figures (:mod:`.plots`) and the ``cluster`` stage
(:mod:`.stage`, imported by the CLI only: the library parts do not pull in the command line)."""

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

__all__ = ["COVARIANCE_TYPES", "FORMAT", "FORMAT_VERSION", "RULE", "ClusterFit", "check_clusters",
           "choose_k", "clusters_source", "file_digest", "fit_clusters", "gmm_from_fit",
           "measured_or_predicted", "normaliser_digest", "plateau_k", "plot_curves", "plot_latent_map",
           "read_clusters", "rerun_hint", "write_clusters"]
