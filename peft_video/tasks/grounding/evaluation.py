"""Quick grounding scores with their exact chance levels (for the tiny model's record and tests).

The official scorers (QVHighlights' mAP, R1, HL-mAP / Hit1; YouTube Highlights' and TVSum's mAP) are
``peft_video.metrics.load("qvhighlights")`` etc. These two are their simplest members, with chance levels computed
exactly rather than sampled, to say how far above chance a model is:

* ``R1@t``: the top-ranked window's IoU with the ground-truth window it overlaps most is at least ``t``.
  Chance: a window drawn uniformly from all clip-aligned windows of the video.
* ``Hit1``: the clip of highest predicted saliency is one that some annotator scored at least ``min_score``
  (QVHighlights' "VeryGood" = 4). Chance: a clip drawn uniformly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .data import GroundingRecord
from .metrics.scoring import temporal_iou, top1_iou

__all__ = ["chance_hit1", "chance_top1_recall", "hit1", "top1_recall"]


def _by_qid(rows: Iterable[Mapping[str, Any]]) -> dict[Any, Mapping[str, Any]]:
    return {row["qid"]: row for row in rows}


def _labelled(records: Sequence[GroundingRecord], what: str) -> list[GroundingRecord]:
    chosen = [r for r in records if r.windows] if what == "windows" else [r for r in records if r.clip_ids]
    if not chosen:
        raise ValueError(f"no record has {what} to score against")
    return chosen


def top1_recall(
    rows: Iterable[Mapping[str, Any]], records: Sequence[GroundingRecord], threshold: float
) -> float:
    """Fraction of records (with windows) whose first listed window reaches IoU >= ``threshold`` with the
    ground-truth window it overlaps most (the official R1's :func:`~.metrics.scoring.top1_iou`)."""
    predictions = _by_qid(rows)
    hits = []
    for record in _labelled(records, "windows"):
        if record.qid not in predictions:
            raise ValueError(f"no prediction for qid={record.qid!r}")
        first = predictions[record.qid]["pred_relevant_windows"][0]
        hits.append(float(top1_iou(first, record.windows) >= threshold))
    return float(np.mean(hits))


def chance_top1_recall(records: Sequence[GroundingRecord], threshold: float, clip_length: float) -> float:
    """Expected :func:`top1_recall` of a window drawn uniformly from the video's clip-aligned windows."""
    values = []
    for record in _labelled(records, "windows"):
        n = int(round(record.duration / clip_length))
        starts, ends = np.triu_indices(n + 1, k=1)
        candidates = np.stack([starts, ends], axis=1) * clip_length
        best = temporal_iou(candidates, record.windows).max(axis=1)
        values.append(float(np.mean(best >= threshold)))
    return float(np.mean(values))


def _positives(record: GroundingRecord, min_score: float) -> set[int]:
    return {c for c, scores in zip(record.clip_ids, record.saliency, strict=True) if max(scores) >= min_score}


def hit1(
    rows: Iterable[Mapping[str, Any]], records: Sequence[GroundingRecord], min_score: float = 4.0
) -> float:
    """Fraction of records whose highest-saliency clip some annotator scored >= ``min_score``."""
    predictions = _by_qid(rows)
    hits = []
    for record in _labelled(records, "clip_ids"):
        saliency = predictions[record.qid]["pred_saliency_scores"]
        hits.append(float(int(np.argmax(saliency)) in _positives(record, min_score)))
    return float(np.mean(hits))


def chance_hit1(records: Sequence[GroundingRecord], clip_length: float, min_score: float = 4.0) -> float:
    """Expected :func:`hit1` of a clip drawn uniformly from the video."""
    values = []
    for record in _labelled(records, "clip_ids"):
        n = int(round(record.duration / clip_length))
        values.append(len(_positives(record, min_score)) / n)
    return float(np.mean(values))
