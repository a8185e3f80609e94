"""Lightning callbacks of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .latent_map import LatentMapCallback, gmm_from_clusters

__all__ = ["LatentMapCallback", "gmm_from_clusters"]
