"""LightningModules of lightning-nas: one per learned component (DESIGN.md §5)."""

from .classifier import ClassifierModule

__all__ = ["ClassifierModule"]
