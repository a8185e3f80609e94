"""LightningDataModules of lightning-nas (a top-level package of the `lightning-nas` distribution)."""

from .digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
