"""PVLA: partial video-language alignment (READ-PVLA, section 3.3): the partial-OT solver, the loss, the hooks."""

from .solver import ConvergenceWarning, PartialOTResult, partial_ot, regularized_cost

__all__ = ["ConvergenceWarning", "PartialOTResult", "partial_ot", "regularized_cost"]
