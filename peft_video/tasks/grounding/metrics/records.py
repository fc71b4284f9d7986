"""Record-level grounding and highlight-detection scorers: validation, subsets, averaging, percent.

``qvhighlights_scores`` reproduces the brief metrics of QVHighlights' official scorer (jayleicn/moment_detr
``standalone_eval/eval.py``), ``youtube_highlights_scores`` and ``tvsum_scores`` UMT's evaluations
(TencentARC/UMT ``datasets/youtube.py``, ``datasets/tvsum.py``); the math is in ``scoring.py``. The ``evaluate``
modules of this folder call these functions; they also work on their own (no ``evaluate`` needed).

Means are taken with ``math.fsum`` (exactly rounded), so a result does not depend on the order of the records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .scoring import (
    IOU_THRESHOLDS,
    detection_ap,
    hit_at_one,
    interpolated_ranking_ap,
    top1_iou,
    tvsum_video_ap,
    youtube_video_ap,
)

MAX_PRED_WINDOWS = 10
"""The official scorer scores the first 10 listed windows of each query (in listed order, before any sort)."""

LENGTH_RANGES: dict[str, tuple[float, float]] = {
    "short": (0.0, 10.0),
    "middle": (10.0, 30.0),
    "long": (30.0, 150.0),
}
"""Ground-truth window length ranges (seconds), each ``(low, high]``; "full" keeps every window, whatever its length."""

SALIENCY_LEVELS: dict[str, int] = {"Fair": 2, "Good": 3, "VeryGood": 4}
"""HL-min-<name>: a clip is positive for an annotator whose score (0..4) is at least this minimum."""

CLIP_LENGTH = 2.0
"""QVHighlights' clip length in seconds; a video has ``int(duration / CLIP_LENGTH)`` clips."""

R1_THRESHOLDS = (0.5, 0.7)
MAP_THRESHOLDS = (0.5, 0.75)


def percent(value: float, decimals: int | None) -> float:
    """``100 * value``, rounded to ``decimals`` the way the official scorer does (``float(f"{v:.2f}")``) or not
    at all (None)."""
    scaled = 100 * float(value)
    return scaled if decimals is None else float(f"{scaled:.{decimals}f}")


def mean(values: Iterable[float]) -> float:
    """Exactly rounded mean (``math.fsum``): independent of the order of ``values``."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


# -- evaluate glue ---------------------------------------------------------------------------------------------------


def _to_builtin(obj: Any) -> Any:
    """JSON fallback for numpy / torch numbers and arrays (anything with ``tolist``)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(
        f"records must be JSON-serialisable (numbers, strings, lists, dicts), got {type(obj).__name__}"
    )


def encode_records(records: Iterable[Any] | None) -> list[str] | None:
    """Each record as JSON text: how the ``evaluate`` modules store records whose fields vary (see their docs)."""
    if records is None:
        return None
    if isinstance(records, (str, bytes, Mapping)):
        raise ValueError(f"expected a list of records, got a single {type(records).__name__}")
    return [json.dumps(record, default=_to_builtin) for record in records]


def decode_records(texts: Iterable[str]) -> list[Any]:
    """Inverse of :func:`encode_records`."""
    return [json.loads(text) for text in texts]


class JsonRecordInputs:
    """``evaluate.Metric`` mixin: the inputs named in ``json_inputs`` are records stored as JSON text (their fields
    vary, qids may be int or str, values may be numpy), encoded in ``add`` / ``add_batch``, which ``compute`` calls."""

    json_inputs: tuple[str, ...] = ("references",)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Store a batch, the ``json_inputs`` as JSON text."""
        batch = {"predictions": predictions, "references": references}
        batch = {k: encode_records(v) if k in self.json_inputs else v for k, v in batch.items()}
        return super().add_batch(**batch, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Store one example, the ``json_inputs`` as JSON text."""
        one = {"predictions": prediction, "references": reference}
        one = {
            k: encode_records([v])[0] if k in self.json_inputs and v is not None else v
            for k, v in one.items()
        }
        return super().add(prediction=one["predictions"], reference=one["references"], **kwargs)


# -- validation ------------------------------------------------------------------------------------------------------


def _field(record: Mapping, key: str, where: str) -> Any:
    if key not in record or record[key] is None:
        raise ValueError(f"{where} has no `{key}`")
    return record[key]


def _check_qid(qid: Any, where: str) -> Any:
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise ValueError(f"{where}: `qid` must be an int or a str, got {qid!r}")
    return qid


def _by_qid(records: Sequence[Any], name: str) -> dict[Any, Mapping]:
    """``records`` keyed by qid, in order; errors for a non-record, a missing / bad qid, or a repeated qid."""
    table: dict[Any, Mapping] = {}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"`{name}`[{i}] must be a record (dict), got {type(record).__name__}")
        qid = _check_qid(_field(record, "qid", f"`{name}`[{i}]"), f"`{name}`[{i}]")
        if qid in table:
            raise ValueError(f"`{name}` has qid {qid!r} more than once")
        table[qid] = record
    return table


def _number_array(value: Any, where: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be numbers, got {value!r:.200}") from None
    if array.ndim != ndim and not (array.size == 0 and ndim > 1):
        raise ValueError(f"{where} must be a {ndim}-level list of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where} must be finite, got {value!r:.200}")
    return array


def _window_array(value: Any, width: int, where: str) -> np.ndarray:
    """``value`` as an (N, width) array of windows with start < end (N >= 1)."""
    array = _number_array(value, where, ndim=2)
    if array.size == 0:
        raise ValueError(f"{where} is empty: at least one window is needed")
    if array.shape[1] != width:
        shape = "[start, end, score]" if width == 3 else "[start, end]"
        raise ValueError(f"{where} must hold windows {shape}, got rows of {array.shape[1]} numbers")
    bad = np.flatnonzero(array[:, 0] >= array[:, 1])
    if bad.size:
        raise ValueError(f"{where}: window {bad[0]} {array[bad[0]].tolist()} has start >= end")
    return array


def _present(records: Mapping[Any, Mapping], key: str, name: str) -> bool:
    """Whether every record has ``key`` (True) or none does (False); an error when only some do."""
    has = {qid: record.get(key) is not None for qid, record in records.items()}
    if all(has.values()):
        return True
    if any(has.values()):
        lacking = [qid for qid, flag in has.items() if not flag]
        raise ValueError(f"`{name}` records must all have `{key}` or none; qid {lacking[0]!r} has none")
    return False


# -- QVHighlights ----------------------------------------------------------------------------------------------------


def qvhighlights_scores(
    predictions: Sequence[Mapping],
    references: Sequence[Mapping],
    decimals: int | None = 2,
    clip_length: float = CLIP_LENGTH,
    strict_saliency_length: bool = True,
) -> dict[str, float]:
    """The brief metrics of QVHighlights' official scorer, in percent, with its definitions and quirks.

    ``predictions`` are submission records (``qid``, ``pred_relevant_windows`` [[start, end, score], ...],
    ``pred_saliency_scores`` one per clip; ``query``/``vid`` are not read); ``references`` are annotation records
    (``qid``, ``relevant_windows`` [[start, end], ...], and for highlights ``duration``, ``relevant_clip_ids``,
    ``saliency_scores`` [[a1, a2, a3], ...] per relevant clip). Every reference qid needs exactly one prediction
    and the reverse. The MR keys are computed when the predictions have ``pred_relevant_windows``, the HL keys
    when they have ``pred_saliency_scores`` (all records or none).

    Moment retrieval (keys ``MR-*``):

    * ``MR-full-mAP@t``: mean over queries of :func:`~.scoring.detection_ap` at IoU t; ``MR-full-mAP`` the mean of
      that over t = 0.5:0.05:0.95 (from the unrounded per-threshold values).
    * Only the FIRST 10 LISTED windows are scored (the cut happens before sorting by score: a high-scoring 11th
      window is ignored).
    * ``MR-full-R1@t``: share of queries whose FIRST LISTED window (not the highest-scoring one) has IoU >= t with
      the ground-truth window that overlaps it most (:func:`~.scoring.top1_iou`; the scorer's docstring speaks of
      the first ground-truth window, its code picks the best-overlapping one). The IoU there is the scorer's
      "hull" IoU, equal to the true IoU for windows of positive length.
    * ``MR-{short,middle,long}-mAP``: the same mAP over the queries that have a ground-truth window with length in
      (0, 10], (10, 30], (30, 150] seconds, each such query scored against ITS IN-RANGE WINDOWS ONLY (a prediction
      matching one of its other windows counts as a false positive). "full" keeps every query and window. A range
      no query falls in makes the official scorer fail; here its key is ABSENT from the result.

    Highlight detection (keys ``HL-min-{Fair,Good,VeryGood}-{mAP,Hit1}``):

    * A video has ``int(duration / clip_length)`` clips; clips not in ``relevant_clip_ids`` score 0 for all
      annotators. For each annotator, a clip is positive when its score >= 2 (Fair), 3 (Good) or 4 (VeryGood)
      ("min" is that minimum score).
    * ``HL-mAP``: :func:`~.scoring.interpolated_ranking_ap` of ALL clips' predicted scores (not only the relevant
      clips) against each annotator's labels, averaged over (query, annotator) pairs. An annotator without a
      positive clip gives AP 0, one with only positives AP 1.
    * ``HL-Hit1``: share of queries whose highest-scored clip is positive for ANY of the annotators (the max over
      annotators, not "min" or a majority).
    * The official scorer zero-pads or cuts ``pred_saliency_scores`` to the clip count for the AP (Hit@1 uses the
      uncut list, a top clip past the end being a miss). Here a length other than the clip count is an error
      unless ``strict_saliency_length=False``, which applies the official handling.

    Values are in percent, rounded like the scorer (2 decimals) unless ``decimals`` says otherwise (None: no
    rounding). Means here are exactly rounded (``math.fsum``); the scorer sums in numpy's order (for mAP, in the
    order its worker pool returns queries), so for a value that lies exactly half-way between two hundredths the
    two can round 0.01 apart (about one value in 2,000 in random cases compared with the scorer itself; no other
    difference). The scorer's ``match_number=False`` (scoring the shared qids only) has no counterpart here.

    Errors (``ValueError``, naming the qid): a reference qid without prediction, a prediction for an unknown qid,
    a repeated qid, an empty or malformed window list (the scorer would silently drop a query without windows
    from the mAP and then fail in R1), a window with start >= end (predicted or true), saliency scores of the
    wrong length, a relevant clip id outside the video, a field present in only some prediction records.
    """
    if not predictions or not references:
        raise ValueError("`predictions` and `references` must both hold at least one record")
    preds = _by_qid(predictions, "predictions")
    refs = _by_qid(references, "references")
    missing = [qid for qid in refs if qid not in preds]
    if missing:
        raise ValueError(
            f"no prediction for reference qid {missing[0]!r} ({len(missing)} reference qids lack one)"
        )
    unknown = [qid for qid in preds if qid not in refs]
    if unknown:
        raise ValueError(
            f"prediction for qid {unknown[0]!r}, which no reference has ({len(unknown)} such qids)"
        )
    results: dict[str, float] = {}
    if _present(preds, "pred_relevant_windows", "predictions"):
        results.update(_moment_retrieval(preds, refs, decimals))
    if _present(preds, "pred_saliency_scores", "predictions"):
        results.update(_highlights(preds, refs, decimals, clip_length, strict_saliency_length))
    if not results:
        raise ValueError("`predictions` have neither `pred_relevant_windows` nor `pred_saliency_scores`")
    return results


def _moment_retrieval(
    preds: Mapping[Any, Mapping], refs: Mapping[Any, Mapping], decimals: int | None
) -> dict[str, float]:
    """MR keys: mAP over IoU thresholds for full / short / middle / long, R1@0.5 / 0.7 for full (sorted keys)."""
    windows = {}
    for qid in refs:
        where = f"prediction qid {qid!r}: `pred_relevant_windows`"
        windows[qid] = _window_array(preds[qid]["pred_relevant_windows"], 3, where)[:MAX_PRED_WINDOWS]
    truth = {}
    for qid, record in refs.items():
        where = f"reference qid {qid!r}: `relevant_windows`"
        truth[qid] = _window_array(_field(record, "relevant_windows", f"reference qid {qid!r}"), 2, where)
    thresholds = list(IOU_THRESHOLDS)
    results: dict[str, float] = {}
    ranges: dict[str, tuple[float, float] | None] = {"full": None, **LENGTH_RANGES}
    for name, bounds in ranges.items():
        subset = {}
        for qid, gt in truth.items():
            if bounds is not None:
                lengths = gt[:, 1] - gt[:, 0]
                gt = gt[(lengths > bounds[0]) & (lengths <= bounds[1])]
            if len(gt):
                subset[qid] = gt
        if not subset:
            continue  # the official scorer fails on an empty range; the key is left out
        ap = [
            detection_ap(windows[qid][:, :2], windows[qid][:, 2], gt, thresholds)
            for qid, gt in subset.items()
        ]
        per_threshold = [mean(column) for column in np.asarray(ap).T]
        results[f"MR-{name}-mAP"] = percent(mean(per_threshold), decimals)
        if name == "full":
            for t in MAP_THRESHOLDS:
                results[f"MR-full-mAP@{t}"] = percent(per_threshold[thresholds.index(t)], decimals)
            ious = [top1_iou(windows[qid][0], gt) for qid, gt in subset.items()]
            for t in R1_THRESHOLDS:
                results[f"MR-full-R1@{t}"] = percent(mean(iou >= t for iou in ious), decimals)
    return dict(sorted(results.items()))


def _saliency_table(record: Mapping, qid: Any, clip_length: float) -> np.ndarray:
    """A reference's per-clip annotator scores for the whole video: (int(duration / clip_length), annotators)."""
    where = f"reference qid {qid!r}"
    duration = float(_number_array(_field(record, "duration", where), f"{where}: `duration`", ndim=0))
    clips = int(duration / clip_length)
    if clips < 1:
        raise ValueError(f"{where}: `duration` {duration} is shorter than one {clip_length}-s clip")
    ids = _number_array(_field(record, "relevant_clip_ids", where), f"{where}: `relevant_clip_ids`", ndim=1)
    scores = _number_array(_field(record, "saliency_scores", where), f"{where}: `saliency_scores`", ndim=2)
    if len(scores) != len(ids):
        raise ValueError(
            f"{where}: `saliency_scores` must hold one row per relevant clip ({len(ids)}), got {len(scores)}"
        )
    if ids.size and (ids != np.round(ids)).any():
        raise ValueError(f"{where}: `relevant_clip_ids` must be integers, got {ids.tolist()}")
    ids = ids.astype(np.int64)
    outside = [int(i) for i in ids if not 0 <= i < clips]
    if outside:
        raise ValueError(
            f"{where}: `relevant_clip_ids` {outside} lie outside the video's {clips} clips "
            f"(duration {duration} s / {clip_length} s)"
        )
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"{where}: `relevant_clip_ids` repeats a clip: {ids.tolist()}")
    table = np.zeros((clips, scores.shape[1] if scores.size else 0))
    table[ids] = scores
    return table


def _highlights(
    preds: Mapping[Any, Mapping],
    refs: Mapping[Any, Mapping],
    decimals: int | None,
    clip_length: float,
    strict_saliency_length: bool,
) -> dict[str, float]:
    """HL keys: mAP over (query, annotator) and Hit@1 (any annotator) at each saliency level."""
    tables, scores = {}, {}
    for qid, record in refs.items():
        tables[qid] = _saliency_table(record, qid, clip_length)
        where = f"prediction qid {qid!r}: `pred_saliency_scores`"
        scores[qid] = _number_array(preds[qid]["pred_saliency_scores"], where, ndim=1)
        if scores[qid].size == 0:
            raise ValueError(f"{where} is empty")
        if strict_saliency_length and len(scores[qid]) != len(tables[qid]):
            raise ValueError(
                f"{where} has {len(scores[qid])} scores, the video has {len(tables[qid])} clips "
                f"(int(duration / {clip_length})); pass strict_saliency_length=False for the official scorer's "
                "zero-padding / cutting"
            )
    annotators = {table.shape[1] for table in tables.values()}
    if len(annotators) != 1 or 0 in annotators:
        raise ValueError(
            f"every reference's `saliency_scores` rows must hold the same number (>= 1) of annotator scores, got "
            f"{sorted(annotators)}"
        )
    results: dict[str, float] = {}
    for name, minimum in SALIENCY_LEVELS.items():
        aps, hits = [], []
        for qid, table in tables.items():
            labels = (table >= minimum).astype(np.float64)
            fitted = np.zeros(len(table))  # the official zero-pad / cut (a no-op when the lengths match)
            kept = min(len(table), len(scores[qid]))
            fitted[:kept] = scores[qid][:kept]
            aps.extend(interpolated_ranking_ap(labels[:, a], fitted) for a in range(labels.shape[1]))
            hits.append(hit_at_one(labels, scores[qid]))
        results[f"HL-min-{name}-mAP"] = percent(mean(aps), decimals)
        results[f"HL-min-{name}-Hit1"] = percent(mean(hits), decimals)
    return results


# -- UMT: YouTube Highlights and TVSum -------------------------------------------------------------------------------


def _per_domain(
    predictions: Sequence[Any], references: Sequence[Any], name: str, score_video
) -> tuple[dict[str | None, list], list]:
    """Group per-video results by ``domain``: ``score_video(scores, reference, where)`` per (prediction,
    reference) pair; errors for mismatched counts, non-records and partly missing domains."""
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must pair up one per video, got {len(predictions)} and "
            f"{len(references)}"
        )
    if not references:
        raise ValueError(f"{name} needs at least one video")
    groups: dict[str | None, list] = {}
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(ref, Mapping):
            raise ValueError(f"`references`[{i}] must be a record (dict), got {type(ref).__name__}")
        where = f"`references`[{i}]" + (f" (vid {ref['vid']!r})" if ref.get("vid") is not None else "")
        domain = ref.get("domain")
        if domain is not None and not isinstance(domain, str):
            raise ValueError(f"{where}: `domain` must be a str, got {domain!r}")
        scores = _number_array(pred, f"`predictions`[{i}]", ndim=1)
        groups.setdefault(domain, []).append(score_video(scores, ref, where))
    if None in groups and len(groups) > 1:
        raise ValueError("`references` must all have a `domain` or none")
    return groups, sorted(g for g in groups if g is not None)


def _domain_results(
    domain_means: dict[str | None, float], domains: list, decimals: int | None
) -> dict[str, float]:
    """``mAP`` (mean over domains) first, then ``mAP-<domain>`` in sorted order."""
    results = {"mAP": percent(mean(domain_means.values()), decimals)}
    for domain in domains:
        results[f"mAP-{domain}"] = percent(domain_means[domain], decimals)
    return results


def youtube_highlights_scores(
    predictions: Sequence[Sequence[float]], references: Sequence[Mapping], decimals: int | None = None
) -> dict[str, float]:
    """YouTube Highlights mAP as UMT computes it, per domain and averaged over domains, in percent.

    ``predictions[i]`` is one score per clip of video i; ``references[i]`` is ``{"labels": [...], "domain": ...,
    "vid": ...}`` with one label per clip (0/1 or the dataset's ``match`` counts; a clip is a highlight when its
    label > 0), ``domain`` (e.g. "dog") and ``vid`` (used in error messages) optional. Per video,
    :func:`~.scoring.youtube_video_ap` (trapezoid AP over all clips ranked by score, AP 0 for a video without a
    highlight, which still counts); the domain's mAP is the mean over its videos, ``mAP`` the mean over domains
    (the papers' "Avg."; one group when no domain is given). UMT prints ``round(mAP, 5)`` as a fraction; here
    percent, rounded to ``decimals`` if given. Ties in the scores are ranked in clip order (UMT leaves them to
    ``torch.argsort``).
    """

    def score_video(scores: np.ndarray, ref: Mapping, where: str) -> float:
        labels = _number_array(_field(ref, "labels", where), f"{where}: `labels`", ndim=1)
        if len(labels) != len(scores):
            raise ValueError(f"{where}: {len(labels)} clip labels but {len(scores)} predicted scores")
        if labels.size == 0:
            raise ValueError(f"{where}: the video has no clips")
        if (labels < 0).any():
            raise ValueError(f"{where}: `labels` must be >= 0 (0/1 or match counts), got {labels.tolist()}")
        return youtube_video_ap(scores, labels)

    groups, domains = _per_domain(predictions, references, "youtube_highlights", score_video)
    return _domain_results({d: mean(aps) for d, aps in groups.items()}, domains, decimals)


def tvsum_scores(
    predictions: Sequence[Sequence[float]],
    references: Sequence[Mapping],
    top_k: int = 5,
    decimals: int | None = None,
) -> dict[str, float]:
    """TVSum top-5 mAP as UMT computes it, per domain (category) and averaged over domains, in percent.

    ``predictions[i]`` is one score per clip of video i; ``references[i]`` is ``{"annotations": [[s_1, ..., s_20],
    ...], "domain": ..., "vid": ...}`` with one row per clip holding every annotator's score (UMT's ``anno``
    layout; TVSum has 20 annotators, every video must have the same number), ``domain`` (e.g. "BK") and ``vid``
    optional. Per video and annotator, :func:`~.scoring.tvsum_video_ap` (labels: score above that annotator's
    lower median; trapezoid AP over the ``top_k`` best-scored clips, recall within those). A domain's mAP is the
    mean over its videos for each annotator, then over annotators; ``mAP`` is the mean over domains.
    UMT prints ``round(mAP, 5)`` as a fraction; here percent, rounded to ``decimals`` if given. Ties in the scores
    are ranked in clip order.
    """
    counts: set[int] = set()

    def score_video(scores: np.ndarray, ref: Mapping, where: str) -> np.ndarray:
        annotations = _number_array(_field(ref, "annotations", where), f"{where}: `annotations`", ndim=2)
        if len(annotations) != len(scores) or annotations.size == 0:
            raise ValueError(
                f"{where}: {len(annotations)} annotated clips but {len(scores)} predicted scores"
            )
        counts.add(annotations.shape[1])
        if len(counts) > 1:
            raise ValueError(
                f"{where}: every video needs the same number of annotators, got {sorted(counts)}"
            )
        return tvsum_video_ap(scores, annotations, top_k)

    groups, domains = _per_domain(predictions, references, "tvsum", score_video)
    domain_means = {d: mean(mean(column) for column in np.asarray(aps).T) for d, aps in groups.items()}
    return _domain_results(domain_means, domains, decimals)
