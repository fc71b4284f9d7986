"""Moment-DETR's training losses: matched span L1 and gIoU, foreground/background class loss, saliency margin loss.

After Hungarian matching (:mod:`.matching`):

* ``span``: mean absolute error of matched (centre, width) pairs (mean over pairs and both coordinates);
* ``giou``: mean of ``1 - GIoU`` over matched pairs;
* ``label``: cross-entropy of every query against "foreground" (matched) or "background" (unmatched), the
  background class weighted by ``eos_coef``, averaged over all queries (Moment-DETR's plain mean of the weighted
  per-query losses);
* ``saliency``: for sampled (positive clip, negative clip) pairs, ``max(0, margin + s_neg - s_pos)``, summed and
  divided by the number of pairs, times 2 (Moment-DETR's scaling).

With auxiliary losses, every intermediate decoder layer's predictions are matched and scored again (span, gIoU,
class; saliency only once, on the encoder output). Records that carry no windows (highlight-only data such as
YouTube Highlights or TVSum) supervise saliency only: the moment terms skip them rather than calling all of
their queries background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .matching import FOREGROUND, hungarian_match
from .spans import cxw_to_se, generalized_temporal_iou

__all__ = ["MomentLosses", "moment_losses", "saliency_margin_loss"]


@dataclass
class MomentLosses:
    """Unweighted moment loss terms of one decoder layer's predictions."""

    span: Tensor
    giou: Tensor
    label: Tensor


def moment_losses(
    class_logits: Tensor,
    pred_spans: Tensor,
    span_labels: Tensor,
    span_mask: Tensor,
    *,
    eos_coef: float = 0.1,
    cost_span: float = 10.0,
    cost_giou: float = 1.0,
    cost_class: float = 4.0,
) -> MomentLosses:
    """Match predictions to targets and compute the span L1, gIoU and class losses.

    ``class_logits`` (B, Q, 2), ``pred_spans`` (B, Q, 2) normalised (centre, width); ``span_labels`` (B, W, 2)
    targets in the same form, ``span_mask`` (B, W) marking the real ones. Samples without any target are left out
    of all three terms; with none in the batch the terms are zeros that still depend on the predictions.
    """
    has_targets = span_mask.any(1)
    zero = pred_spans.sum() * 0.0 + class_logits.sum() * 0.0
    if not bool(has_targets.any()):
        return MomentLosses(span=zero, giou=zero, label=zero)
    class_logits, pred_spans = class_logits[has_targets], pred_spans[has_targets]
    span_labels, span_mask = span_labels[has_targets], span_mask[has_targets]
    matches = hungarian_match(
        class_logits,
        pred_spans,
        span_labels,
        span_mask,
        cost_span=cost_span,
        cost_giou=cost_giou,
        cost_class=cost_class,
    )
    device = pred_spans.device
    batch_index = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(matches)]).to(device)
    pred_index = torch.cat([rows for rows, _ in matches]).to(device)
    target_index = torch.cat([cols for _, cols in matches]).to(device)

    matched_pred = pred_spans[batch_index, pred_index].float()
    matched_target = span_labels[batch_index, target_index].float()
    span = F.l1_loss(matched_pred, matched_target)
    giou = 1.0 - torch.diag(generalized_temporal_iou(cxw_to_se(matched_pred), cxw_to_se(matched_target)))

    classes = torch.full(class_logits.shape[:2], 1 - FOREGROUND, dtype=torch.long, device=device)
    classes[batch_index, pred_index] = FOREGROUND
    weight = torch.ones(2, device=device)
    weight[1 - FOREGROUND] = eos_coef
    label = F.cross_entropy(class_logits.float().transpose(1, 2), classes, weight=weight, reduction="none")
    return MomentLosses(span=span, giou=giou.mean(), label=label.mean())


def saliency_margin_loss(
    saliency_scores: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2
) -> Tensor:
    """Moment-DETR's saliency ranking loss over clip pairs: ``2 * mean(max(0, margin + s[neg] - s[pos]))``.

    ``saliency_scores`` (B, L); ``positive`` / ``negative`` (B, P) clip indices, P pairs per sample, -1 where a
    sample has no pair in that column (e.g. a video without any positive clip). Pairs with -1 on either side are
    left out of the mean. No valid pair: a zero that depends on the scores.
    """
    if (
        positive.shape != negative.shape
        or positive.ndim != 2
        or positive.shape[0] != saliency_scores.shape[0]
    ):
        raise ValueError(
            f"`positive` and `negative` must both be (B, P) with B = {saliency_scores.shape[0]}, got "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    valid = (positive >= 0) & (negative >= 0)
    if not bool(valid.any()):
        return saliency_scores.sum() * 0.0
    scores = saliency_scores.float()
    pos = scores.gather(1, positive.clamp(min=0))
    neg = scores.gather(1, negative.clamp(min=0))
    hinge = (margin + neg - pos).clamp(min=0)
    return 2.0 * hinge[valid].sum() / valid.sum()
