"""Scoring a grounding model on a dataset, and quick scores with their exact chance levels.

:func:`evaluate_grounding` predicts every record of a dataset and scores the predictions with the official
QVHighlights definitions (``qvhighlights_scores``, percent, unrounded): what the recipe reports and selects on.
:data:`GROUNDING_COLUMNS` / :data:`GROUNDING_SERIES` are the recipe's table and plot.

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
import torch

from ..report import Column, Series, count, fixed
from .data import GroundingDataset, GroundingRecord
from .inference import predict_dataset
from .metrics.records import qvhighlights_scores, tvsum_scores, youtube_highlights_scores
from .metrics.scoring import temporal_iou, top1_iou

__all__ = [
    "GROUNDING_COLUMNS",
    "GROUNDING_SERIES",
    "ORDER_KEY",
    "SCORE_KEYS",
    "SCORERS",
    "UMT_KEY",
    "chance_hit1",
    "chance_top1_recall",
    "evaluate_grounding",
    "hit1",
    "top1_recall",
]

SCORE_KEYS: tuple[str, ...] = (
    "MR-full-R1@0.5",
    "MR-full-R1@0.7",
    "MR-full-mAP",
    "HL-min-VeryGood-mAP",
    "HL-min-VeryGood-Hit1",
)
"""The scores the recipe reports (percent): moment retrieval R1 at IoU 0.5 / 0.7 and mAP over IoU 0.5:0.95,
highlight detection mAP and Hit@1 at QVHighlights' "VeryGood" level (the levels its papers report)."""
UMT_KEY = "UMT-mAP"
"""YouTube Highlights' or TVSum's mAP as UMT computes it (percent), for ``scorer="youtube"`` / ``"tvsum"``."""
SCORERS: tuple[str, ...] = ("qvhighlights", "youtube", "tvsum")
"""How :func:`evaluate_grounding` scores: QVHighlights' official definitions, or UMT's YouTube Highlights / TVSum mAP."""
ORDER_KEY = "order-R1@0.5"
"""R1@0.5 (percent) over the synthetic world's order-dependent queries (``extra["order_dependent"]``)."""

GROUNDING_COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("trainable_params", "trainable params", count),
    Column("MR-full-R1@0.5", "R1@0.5", fixed(1)),
    Column("MR-full-R1@0.7", "R1@0.7", fixed(1)),
    Column("MR-full-mAP", "mAP", fixed(1)),
    Column("HL-min-VeryGood-mAP", "HL mAP", fixed(1)),
    Column("HL-min-VeryGood-Hit1", "HL Hit1", fixed(1)),
    Column(UMT_KEY, "highlight mAP (UMT)", fixed(1)),
    Column(ORDER_KEY, "order-dependent R1@0.5", fixed(1)),
    Column("best_step", "selected step", fixed(0)),
    Column("seconds_per_step", "s / step", fixed(3)),
)
"""The grounding comparison's table (scores in percent; "selected step": the step chosen on validation)."""
GROUNDING_SERIES: tuple[Series, ...] = (
    Series("MR-full-mAP", 1.0, "moment retrieval mAP"),
    Series("HL-min-VeryGood-mAP", 1.0, "highlight mAP (VeryGood)"),
    Series(UMT_KEY, 1.0, "highlight mAP (UMT)"),
)


@torch.no_grad()
def evaluate_grounding(
    model: torch.nn.Module, dataset: GroundingDataset, *, batch_size: int = 32, scorer: str = "qvhighlights"
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Submission rows for every record of ``dataset`` and their scores (percent, unrounded).

    ``scorer="qvhighlights"``: QVHighlights' official definitions (``qvhighlights_scores``, with its handling of
    saliency lists longer or shorter than the video's clips); moment keys only when the records have windows, and
    :data:`ORDER_KEY` when some records are order-dependent. ``"youtube"`` / ``"tvsum"``: UMT's per-video
    highlight AP over the clip labels (``youtube_highlights_scores`` / ``tvsum_scores``) as :data:`UMT_KEY`, plus
    ``UMT-mAP-<domain>`` per domain; where the features hold fewer clips than the labels (or more), both are cut to
    the shorter. Unlabelled records (a test split without annotations) give rows and no scores.
    """
    if scorer not in SCORERS:
        raise ValueError(f"`scorer` must be one of {SCORERS}, got {scorer!r}")
    rows = predict_dataset(model, dataset, batch_size=batch_size)
    records = dataset.records
    if not any(r.has_labels for r in records):
        return rows, {}
    if not all(r.has_labels for r in records):
        unlabelled = [r.qid for r in records if not r.has_labels]
        raise ValueError(
            f"{dataset.name}: some records have labels and some not (e.g. qid={unlabelled[0]!r})"
        )
    if scorer != "qvhighlights":
        return rows, _umt_scores(rows, records, scorer)
    with_windows = [bool(r.windows) for r in records]
    scored = rows
    if not any(with_windows):
        scored = [{k: v for k, v in row.items() if k != "pred_relevant_windows"} for row in rows]
    elif not all(with_windows):
        missing = records[with_windows.index(False)].qid
        raise ValueError(f"{dataset.name}: record qid={missing!r} has no relevant windows while others have")
    scores = qvhighlights_scores(
        scored,
        [r.as_annotation() for r in records],
        decimals=None,
        clip_length=dataset.clip_length,
        strict_saliency_length=False,
    )
    ordered = [r for r in records if r.extra.get("order_dependent") and r.windows]
    if ordered:
        scores[ORDER_KEY] = 100 * top1_recall(rows, ordered, 0.5)
    return rows, scores


def _umt_scores(
    rows: Sequence[Mapping[str, Any]], records: Sequence[GroundingRecord], scorer: str
) -> dict[str, float]:
    """UMT's YouTube Highlights / TVSum mAP of the rows' saliency against each record's per-clip labels."""
    predictions, references = [], []
    for row, record in zip(rows, records, strict=True):
        labels = [scores for _, scores in sorted(zip(record.clip_ids, record.saliency, strict=True))]
        length = min(len(labels), len(row["pred_saliency_scores"]))
        predictions.append(list(row["pred_saliency_scores"][:length]))
        reference: dict[str, Any] = {"vid": record.vid}
        if record.extra.get("domain") is not None:
            reference["domain"] = str(record.extra["domain"])
        if scorer == "youtube":
            reference["labels"] = [scores[0] for scores in labels[:length]]
        else:
            reference["annotations"] = [list(scores) for scores in labels[:length]]
        references.append(reference)
    compute = youtube_highlights_scores if scorer == "youtube" else tvsum_scores
    return {f"UMT-{key}": value for key, value in compute(predictions, references).items()}


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
