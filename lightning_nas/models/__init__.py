"""LightningModules of lightning-nas: one per learned component (DESIGN.md §5)."""

from .ccnf import CCNFModule
from .classifier import ClassifierModule, DenseModule, network_from_checkpoint
from .gvae import GVAEModule
from .sg import SGModule

__all__ = ["CCNFModule", "ClassifierModule", "DenseModule", "GVAEModule", "SGModule", "network_from_checkpoint"]
