"""Hungarian matching of predicted moments to ground-truth windows (DETR's set prediction, as Moment-DETR uses it).

Each sample's cost matrix (Q predictions x W targets) is ``span * L1(cxw) - giou * GIoU(start, end) - class *
p(foreground)``; :func:`scipy.optimize.linear_sum_assignment` picks the one-to-one assignment of least total cost.
Predictions left unmatched are "no moment" (background) in the class loss.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .spans import cxw_to_se, generalized_temporal_iou

__all__ = ["FOREGROUND", "matching_costs", "hungarian_match"]

FOREGROUND = 0
"""Index of the foreground ("a moment") class in the class logits; index 1 is background, as in Moment-DETR."""


def matching_costs(
    class_logits: Tensor,
    pred_spans: Tensor,
    target_spans: Tensor,
    *,
    cost_span: float = 10.0,
    cost_giou: float = 1.0,
    cost_class: float = 4.0,
) -> Tensor:
    """(B, Q, W) matching costs of Q predictions against W (padded) targets per sample.

    ``class_logits`` (B, Q, 2), ``pred_spans`` (B, Q, 2) and ``target_spans`` (B, W, 2) in normalised (centre,
    width). The class cost is ``-p(foreground)`` (DETR approximates the NLL by 1 - p and drops the constant).
    """
    prob = class_logits.float().softmax(-1)[..., FOREGROUND]  # (B, Q)
    pred, target = pred_spans.float(), target_spans.float()
    l1 = (pred[:, :, None, :] - target[:, None, :, :]).abs().sum(-1)  # (B, Q, W)
    batch, queries, windows = l1.shape
    pred_se = cxw_to_se(pred).reshape(batch * queries, 2)
    target_se = cxw_to_se(target).reshape(batch * windows, 2)
    giou = generalized_temporal_iou(pred_se, target_se).view(batch, queries, batch, windows)
    giou = giou.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (B, Q, W): each sample against its own targets
    return cost_span * l1 - cost_giou * giou - cost_class * prob[:, :, None]


@torch.no_grad()
def hungarian_match(
    class_logits: Tensor,
    pred_spans: Tensor,
    target_spans: Tensor,
    target_mask: Tensor,
    *,
    cost_span: float = 10.0,
    cost_giou: float = 1.0,
    cost_class: float = 4.0,
) -> list[tuple[Tensor, Tensor]]:
    """Per sample, (prediction indices, target indices) of the least-cost one-to-one matching.

    ``target_mask`` (B, W) marks real targets (the rest is padding). A sample without targets gets two empty
    index tensors. Indices are sorted by prediction index, as scipy returns them.
    """
    if target_spans.shape[:2] != target_mask.shape:
        raise ValueError(
            f"`target_mask` must be (B, W) = {tuple(target_spans.shape[:2])}, got {tuple(target_mask.shape)}"
        )
    costs = matching_costs(
        class_logits,
        pred_spans,
        target_spans,
        cost_span=cost_span,
        cost_giou=cost_giou,
        cost_class=cost_class,
    )
    costs = costs.cpu().numpy()
    masks = target_mask.bool().cpu().numpy()
    out = []
    for cost, mask in zip(costs, masks, strict=True):
        real = np.flatnonzero(mask)
        rows, cols = linear_sum_assignment(cost[:, real])
        out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(real[cols], dtype=torch.int64)))
    return out
