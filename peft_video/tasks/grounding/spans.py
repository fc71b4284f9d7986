"""Temporal spans in torch: (centre, width) <-> (start, end), temporal IoU and generalised temporal IoU.

These serve the model (matching costs and losses, with gradients). The grounding metrics
(``peft_video.tasks.grounding.metrics``) keep their own numpy IoU for scoring predictions, as the official
QVHighlights scorer does; the two are separate on purpose: the scorer must not depend on torch, and the model's
version must be differentiable and batched.

Spans are normalised to the video's time span in training (0 = first clip's start, 1 = last clip's end) and in
seconds at inference; the functions below do not care which.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cxw_to_se", "generalized_temporal_iou", "se_to_cxw", "temporal_iou"]


def cxw_to_se(spans: Tensor) -> Tensor:
    """(..., 2) spans as (centre, width) -> (start, end)."""
    centre, width = spans[..., 0], spans[..., 1]
    return torch.stack([centre - 0.5 * width, centre + 0.5 * width], dim=-1)


def se_to_cxw(spans: Tensor) -> Tensor:
    """(..., 2) spans as (start, end) -> (centre, width)."""
    start, end = spans[..., 0], spans[..., 1]
    return torch.stack([0.5 * (start + end), end - start], dim=-1)


def _check_pairs(a: Tensor, b: Tensor) -> None:
    for name, spans in (("spans1", a), ("spans2", b)):
        if spans.ndim != 2 or spans.shape[-1] != 2:
            raise ValueError(f"`{name}` must be (N, 2) (start, end) spans, got shape {tuple(spans.shape)}")


def _iou_and_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union length of (N, 2) and (M, 2) (start, end) spans: two (N, M) tensors."""
    _check_pairs(a, b)
    length_a = (a[:, 1] - a[:, 0])[:, None]
    length_b = (b[:, 1] - b[:, 0])[None, :]
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(
        min=0
    )
    union = length_a + length_b - inter
    return inter / union, union


def temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise intersection over union of (N, 2) and (M, 2) (start, end) spans: (N, M).

    Two spans of zero length give 0 / 0 = NaN, as the definition leaves it undefined; the model never produces
    them (widths come from a sigmoid) and data validation rejects them.
    """
    return _iou_and_union(spans1, spans2)[0]


def generalized_temporal_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) in one dimension: IoU - (hull - union) / hull, (N, M).

    ``hull`` is the length of the smallest span covering both; GIoU lies in (-1, 1] and, unlike IoU, still tells
    disjoint spans apart by how far apart they are, which is why DETR-style losses use 1 - GIoU.
    """
    iou, union = _iou_and_union(spans1, spans2)
    hull = (
        torch.maximum(spans1[:, None, 1], spans2[None, :, 1])
        - torch.minimum(spans1[:, None, 0], spans2[None, :, 0])
    ).clamp(min=0)
    return iou - (hull - union) / hull
