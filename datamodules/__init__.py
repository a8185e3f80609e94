"""LightningDataModules of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .digits import DigitsDataModule
from .graph_zc import GraphZCDataModule
from .hl_sequences import HLSequenceDataModule
from .latents import LatentDataModule

__all__ = ["DigitsDataModule", "GraphZCDataModule", "HLSequenceDataModule", "LatentDataModule"]
