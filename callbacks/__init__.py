"""Lightning callbacks of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .checkpoint import ResumableCheckpoint
from .latent_map import LatentMapCallback, gmm_from_clusters
from .metrics_file import MetricsFile

__all__ = ["LatentMapCallback", "MetricsFile", "ResumableCheckpoint", "gmm_from_clusters"]
