"""The math of the grounding and highlight-detection scorers, on numpy float64 arrays (no records, no I/O).

Three families, each written from the definitions of the scorer the papers report with:

* moment retrieval as QVHighlights' official scorer (jayleicn/moment_detr ``standalone_eval``) defines it:
  temporal IoU, VOC-interpolated AP of score-ranked windows greedily matched to ground truth per IoU threshold
  (:func:`detection_ap`), and the R1 IoU of the first listed window (:func:`top1_iou`);
* highlight detection as the same scorer defines it: an interpolated ranking AP over the clips
  (:func:`interpolated_ranking_ap`) and Hit@1 over annotators (:func:`hit_at_one`);
* the UMT evaluations (TencentARC/UMT ``datasets/youtube.py`` and ``datasets/tvsum.py``): a trapezoid AP over a
  ranked label list (:func:`trapezoid_ap`), per video for YouTube Highlights (:func:`youtube_video_ap`) and over the
  top 5 clips per annotator for TVSum (:func:`tvsum_video_ap`).

The record-level scorers (validation, subsets, averaging, percent) are in ``records.py``.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""The scorer's IoU thresholds 0.5:0.05:0.95, as it writes them (linspace values rounded to 2 decimals)."""


def _windows(windows, name: str) -> np.ndarray:
    """``windows`` as a float64 (N, 2) array of [start, end] (extra columns, e.g. a score, are dropped)."""
    array = np.asarray(windows, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"`{name}` must be a list of [start, end] windows, got an array of shape {array.shape}"
        )
    return array[:, :2]


def temporal_iou(windows_a, windows_b) -> np.ndarray:
    """IoU of every window in ``windows_a`` (N, 2) with every window in ``windows_b`` (M, 2): an (N, M) array.

    Intersection ``max(0, min(ends) - max(starts))`` over union ``len_a + len_b - intersection`` (windows must have
    positive length; the record-level scorers check that).
    """
    a, b = _windows(windows_a, "windows_a"), _windows(windows_b, "windows_b")
    inter = np.clip(
        np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return inter / union


def hull_iou(window_a, window_b) -> float:
    """IoU of two windows with the union taken as their hull ``max(ends) - min(starts)`` (0 when that is 0).

    The official R1 uses this "union" (its source notes it is not the correct one). For windows of positive
    length it equals :func:`temporal_iou`: overlapping windows' union is their hull, and disjoint windows have no
    intersection, so both give 0.
    """
    (s1, e1), (s2, e2) = np.asarray(window_a, np.float64)[:2], np.asarray(window_b, np.float64)[:2]
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    hull = max(e1, e2) - min(s1, s2)
    return float(inter / hull) if hull != 0 else 0.0


def voc_interpolated_ap(precision, recall) -> float:
    """VOC (2010+) interpolated AP of a precision-recall sequence (recall non-decreasing, one point per prediction).

    ``sum_k (r_k - r_{k-1}) * max_{j >= k} p_j`` with ``r_0 = 0``: every recall step is weighted by the best
    precision reached at that recall or beyond. Recall that never reaches 1 contributes nothing past its last value.
    """
    p, r = np.asarray(precision, np.float64), np.asarray(recall, np.float64)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"`precision` and `recall` must be 1-D of one length, got {p.shape} and {r.shape}")
    if p.size == 0:
        return 0.0
    best_beyond = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.diff(np.concatenate(([0.0], r)))
    return float(np.sum(steps * best_beyond))


def detection_ap(pred_windows, pred_scores, gt_windows, thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """AP of one query's predicted windows against its ground-truth windows, at each IoU threshold: shape (T,).

    As the official scorer (MMAction2's ActivityNet detection AP): predictions are taken in decreasing score
    (a stable sort: equal scores keep their listed order); each, in turn, is a true positive when some not yet
    matched ground-truth window has IoU >= the threshold with it, and then takes the first such window in
    decreasing-IoU order; otherwise it is a false positive. Precision and recall (over all ground-truth windows)
    after each prediction give :func:`voc_interpolated_ap`.

    Ground-truth windows tied in IoU with a prediction are tried from the last listed to the first: the official
    code walks ``argsort(iou)[::-1]``, whose order among ties is that of numpy's default (unstable) sort; on the
    few windows a query has it keeps ties in index order, so the reversed walk takes the later window first. On
    longer arrays numpy's SIMD sorts (AVX-512) can order ties differently, so there the official result itself
    depends on the machine; only exact IoU ties with a choice between unmatched windows are affected.
    """
    pred = _windows(pred_windows, "pred_windows")
    gt = _windows(gt_windows, "gt_windows")
    scores = np.asarray(pred_scores, np.float64)
    if scores.shape != (len(pred),):
        raise ValueError(
            f"`pred_scores` must hold one score per window ({len(pred)}), got shape {scores.shape}"
        )
    thresholds = np.asarray(thresholds, np.float64)
    ap = np.zeros(len(thresholds))
    if len(pred) == 0:
        return ap
    if len(gt) == 0:
        raise ValueError("`gt_windows` is empty: AP needs at least one ground-truth window")
    order = np.argsort(-scores, kind="stable")
    iou = temporal_iou(pred[order], gt)  # (K, G), rows in decreasing score
    candidates = np.argsort(iou, axis=1, kind="stable")[:, ::-1]  # ties: the later window first
    rank = np.arange(1, len(pred) + 1, dtype=np.float64)
    for t, threshold in enumerate(thresholds):
        matched = np.zeros(len(gt), dtype=bool)
        hits = np.zeros(len(pred))
        for k in range(len(pred)):
            for g in candidates[k]:
                if iou[k, g] < threshold:
                    break
                if not matched[g]:
                    matched[g] = True
                    hits[k] = 1.0
                    break
        true_positives = np.cumsum(hits)
        ap[t] = voc_interpolated_ap(true_positives / rank, true_positives / len(gt))
    return ap


def top1_iou(first_window, gt_windows) -> float:
    """R1's IoU for one query: the first listed predicted window against the ground-truth window it overlaps most.

    The official R1 takes ``pred_relevant_windows[0]`` (the first listed window, whatever its score), picks the
    ground-truth window of highest :func:`temporal_iou` with it (the first such on ties; not simply the first
    ground-truth window, although the scorer's docstring says so), and scores the pair with :func:`hull_iou`.
    """
    first = _windows([np.asarray(first_window, np.float64)[:2]], "first_window")
    gt = _windows(gt_windows, "gt_windows")
    if len(gt) == 0:
        raise ValueError("`gt_windows` is empty: R1 needs at least one ground-truth window")
    best = int(np.argmax(temporal_iou(first, gt)[0]))
    return hull_iou(first[0], gt[best])


def interpolated_ranking_ap(labels, scores) -> float:
    """The official highlight AP of one (query, annotator): clips ranked by ``scores`` against binary ``labels``.

    Precision and recall are taken at every distinct score used as a threshold (clips scoring >= it are
    retrieved; tied clips enter together), precision is made monotone (the best precision at that recall or
    beyond), and AP is the plain mean of that precision over the distinct positive recall levels reached. That
    is the usual AP when no positive ties another clip; a tied group that adds several positives at once counts
    once, not in proportion to its recall step (a quirk of the scorer's ``get_ap``, which averages the
    interpolated precision at the points where recall changes).

    Quirks kept: labels all 0 give AP 0 (the clip set has no positive; the query still counts in the mean) and
    labels all 1 give AP 1, whatever the scores. The scorer casts recall to float32 before finding where it
    changes, which changes nothing below 2**24 clips.
    """
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"`labels` and `scores` must be 1-D of one length, got {y.shape} and {s.shape}")
    if y.size == 0:
        raise ValueError("`labels` is empty: AP needs at least one clip")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"`labels` must be 0 or 1, got values {sorted(set(y.tolist()) - {0.0, 1.0})}")
    if (y == y[0]).all():
        return float(y[0])
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.flatnonzero(np.diff(s) != 0)  # last index of each group of equal scores
    ends = np.append(ends, len(s) - 1)
    true_positives = np.cumsum(y)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / y.sum()
    best_beyond = np.maximum.accumulate(precision[::-1])[::-1]
    first_at_level = np.flatnonzero(np.diff(np.concatenate(([0.0], recall))) > 0)  # each new recall level
    return float(np.mean(best_beyond[first_at_level]))


def hit_at_one(binary_labels, scores) -> float:
    """Hit@1 of one query: 1 if the clip with the highest score is positive for ANY annotator, else 0.

    ``binary_labels`` is (clips, annotators). The top clip is ``argmax(scores)`` (the first on ties) over all the
    given scores; a top clip beyond the labelled clips (possible only when ``scores`` is longer) is a miss, as in
    the official scorer.
    """
    labels = np.asarray(binary_labels, np.float64)
    s = np.asarray(scores, np.float64)
    if labels.ndim != 2 or s.ndim != 1 or s.size == 0:
        raise ValueError(
            f"`binary_labels` must be (clips, annotators) and `scores` a non-empty 1-D array, got {labels.shape} "
            f"and {s.shape}"
        )
    top = int(np.argmax(s))
    return float(labels[top].max()) if top < len(labels) else 0.0


def trapezoid_ap(ranked_labels) -> float:
    """UMT's AP of a ranked 0/1 label list: trapezoids between consecutive (recall, precision) points.

    Starting from (recall 0, precision 1), each rank i (1-based) moves to (hits_i / P, hits_i / i); the area
    ``(r_i - r_{i-1}) * (p_{i-1} + p_i) / 2`` is added, so only positives (recall steps of 1/P) contribute, each
    with the mean of the precision before it and at it. P is the number of positives in the list; AP 0 when
    there are none.
    """
    y = np.asarray(ranked_labels, np.float64)
    if y.ndim != 1:
        raise ValueError(f"`ranked_labels` must be 1-D, got shape {y.shape}")
    positives = y.sum()
    if positives == 0:
        return 0.0
    hits = np.cumsum(y)
    precision = hits / np.arange(1, len(y) + 1)
    before = np.concatenate(([1.0], precision[:-1]))
    return float(np.sum(y / positives * (before + precision) / 2))


def descending_order(scores) -> np.ndarray:
    """Clip indices by decreasing score, equal scores in clip order (UMT's ``torch.argsort(descending=True)``
    leaves the order of ties unspecified; this fixes it)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def youtube_video_ap(scores, labels) -> float:
    """UMT's YouTube Highlights AP of one video: clips ranked by ``scores``, positive when ``labels`` > 0 (the
    ``match`` counts or 0/1), :func:`trapezoid_ap` over all clips."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"`scores` and `labels` must be 1-D of one length, got {s.shape} and {y.shape}")
    return trapezoid_ap((y > 0)[descending_order(s)])


def lower_median(values) -> float:
    """The median as ``torch.median`` defines it: for an even count, the lower of the two middle values."""
    v = np.sort(np.asarray(values, np.float64))
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D array, got shape {v.shape}")
    return float(v[(len(v) - 1) // 2])


def tvsum_video_ap(scores, annotations, top_k: int = 5) -> np.ndarray:
    """UMT's TVSum top-k AP of one video for every annotator: shape (annotators,).

    ``annotations`` is (clips, annotators). Per annotator, a clip is positive when its score is strictly above
    that annotator's :func:`lower_median` over the video's clips; the ``top_k`` clips by predicted score are
    taken, and :func:`trapezoid_ap` runs over their labels, recall counted against the positives among those
    ``top_k`` only (so AP 1 when every positive in the top k comes first, AP 0 when none is positive).
    "Strictly above" matters (clips at the median are negatives); which median does not: every value above the
    lower median is at least the upper one, so numpy's averaged median would give the same labels.
    """
    s = np.asarray(scores, np.float64)
    a = np.asarray(annotations, np.float64)
    if a.ndim != 2 or s.ndim != 1 or len(s) != len(a):
        raise ValueError(
            f"`annotations` must be (clips, annotators) and `scores` hold one score per clip, got {a.shape} and "
            f"{s.shape}"
        )
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1, got {top_k}")
    top = descending_order(s)[:top_k]
    aps = np.zeros(a.shape[1])
    for j in range(a.shape[1]):
        labels = a[:, j] > lower_median(a[:, j])
        aps[j] = trapezoid_ap(labels[top])
    return aps
