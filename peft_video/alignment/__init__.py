"""PVLA: partial video-language alignment (READ-PVLA, section 3.3): the partial-OT solver, the loss, the hooks."""

from .capture import PVLAAttachment, SingleStream, TwoTower, attach_pvla
from .pvla import PVLALoss, cosine_cost
from .solver import ConvergenceWarning, PartialOTResult, partial_ot, regularized_cost

__all__ = [
    "ConvergenceWarning",
    "PVLAAttachment",
    "PVLALoss",
    "PartialOTResult",
    "SingleStream",
    "TwoTower",
    "attach_pvla",
    "cosine_cost",
    "partial_ot",
    "regularized_cost",
]
