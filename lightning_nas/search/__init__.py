"""Search: HL-Evo (Algorithm 1) in the cluster-level space, its mutations, budgets and scoring (paper §3.3, App. C)."""

from .evaluate import ArchEvaluator, Budget, Evaluation
from .hl_evo import HLEvoConfig, SearchState, hl_evo, run_id
from .mutations import Candidate, mutate, scale_width

__all__ = ["ArchEvaluator", "Budget", "Candidate", "Evaluation", "HLEvoConfig", "SearchState", "hl_evo", "mutate",
           "run_id", "scale_width"]
