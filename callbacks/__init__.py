"""Lightning callbacks of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .checkpoint import ResumableCheckpoint
from .latent_map import LatentMapCallback, gmm_from_clusters

__all__ = ["LatentMapCallback", "ResumableCheckpoint", "gmm_from_clusters"]
