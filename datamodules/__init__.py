"""LightningDataModules of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .cifar import CIFARDataModule
from .digits import DigitsDataModule
from .graph_zc import GraphZCDataModule
from .hl_sequences import HLSequenceDataModule
from .imagenet import ImageNetDataModule
from .nb360 import NB360_TASKS, NB360DataModule, NB360Task
from .unlabelled_cells import UnlabelledCellDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule", "GraphZCDataModule", "HLSequenceDataModule", "ImageNetDataModule",
           "NB360DataModule", "NB360Task", "NB360_TASKS", "UnlabelledCellDataModule"]
