"""Turn the grounding model's outputs into predictions in seconds: QVHighlights' submission rows.

A prediction row is ``{"qid", "query", "vid", "pred_relevant_windows": [[start, end, score], ...],
"pred_saliency_scores": [one per clip]}``, windows sorted by score (the foreground probability), as the official
scorer reads them. Decoding follows Moment-DETR's evaluation: a normalised (centre, width) span times the time the
clips cover gives seconds, clamped to ``[0, duration]`` and, with ``round_to_clips`` (default, Moment-DETR's
``round_multiple`` post-processing), rounded to clip boundaries; a window that rounding empties keeps one clip.

Videos longer than the model's ``max_clips`` (:func:`predict_features`) are read in sliding windows of
``max_clips`` clips, each starting ``stride`` clips (default half a window) after the previous one and the last
one ending at the video's end. Every window's moments, shifted to the video's time, are pooled and ranked by score;
temporal non-maximum suppression drops a moment that overlaps a better one with IoU >= ``nms_threshold`` (the
duplicates that overlapping windows produce); the best ``max_moments`` are kept. A clip's saliency is the mean of
the saliency the windows covering it give it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import GroundingCollator, GroundingDataset, l2_normalize
from .metrics.scoring import temporal_iou
from .spans import cxw_to_se

__all__ = ["decode_moments", "predict_dataset", "predict_features", "sliding_windows", "temporal_nms"]


def decode_moments(
    spans: torch.Tensor,
    scores: torch.Tensor,
    *,
    num_clips: int,
    clip_length: float,
    duration: float | None = None,
    offset: float = 0.0,
    round_to_clips: bool = True,
) -> list[list[float]]:
    """(Q, 2) normalised (centre, width) spans and (Q,) scores -> ``[[start, end, score], ...]`` in seconds, best
    first. ``offset`` (seconds) shifts the spans (a sliding window's start); ``duration`` (default: the clips' time)
    bounds them."""
    span_seconds = num_clips * clip_length
    limit = offset + span_seconds if duration is None else float(duration)
    se = cxw_to_se(spans.detach().float().cpu()) * span_seconds + offset
    se = se.clamp(0.0, limit)
    if round_to_clips:
        se = torch.round(se / clip_length) * clip_length
        se = se.clamp(0.0, limit)
        empty = se[:, 1] <= se[:, 0]
        se[empty, 1] = torch.minimum(se[empty, 0] + clip_length, torch.tensor(limit))
        still = se[:, 1] <= se[:, 0]
        se[still, 0] = (se[still, 1] - clip_length).clamp(min=0.0)
    rows = [
        [float(s), float(e), float(p)]
        for (s, e), p in zip(se.tolist(), scores.detach().float().cpu().tolist(), strict=True)
    ]
    rows.sort(key=lambda row: row[2], reverse=True)
    return [[round(v, 4) for v in row] for row in rows]


def temporal_nms(moments: Sequence[Sequence[float]], threshold: float) -> list[list[float]]:
    """Greedy non-maximum suppression of ``[start, end, score]`` rows (positive lengths): best first, a row
    overlapping a kept one with IoU >= ``threshold`` is dropped."""
    kept: list[list[float]] = []
    for start, end, score in sorted(moments, key=lambda row: row[2], reverse=True):
        if not kept or temporal_iou([[start, end]], kept).max() < threshold:
            kept.append([start, end, score])
    return kept


def sliding_windows(num_clips: int, max_clips: int, stride: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` clip ranges of windows of ``max_clips`` clips covering ``num_clips`` clips, ``stride`` apart
    (default ``max_clips // 2``), the last one ending at ``num_clips``; one window when the video fits."""
    if num_clips <= max_clips:
        return [(0, num_clips)]
    stride = stride or max(1, max_clips // 2)
    if not 0 < stride <= max_clips:
        raise ValueError(f"`stride` must be in 1..max_clips ({max_clips}), got {stride}")
    starts = list(range(0, num_clips - max_clips, stride)) + [num_clips - max_clips]
    return [(s, s + max_clips) for s in dict.fromkeys(starts)]


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_features(
    model: torch.nn.Module,
    video_features: np.ndarray | torch.Tensor,
    query_features: np.ndarray | torch.Tensor,
    *,
    clip_length: float,
    duration: float | None = None,
    max_clips: int | None = None,
    stride: int | None = None,
    normalize: bool = True,
    max_moments: int = 10,
    nms_threshold: float = 0.7,
    round_to_clips: bool = True,
) -> dict[str, Any]:
    """Moments and per-clip saliency of one video (L, D) for one query (L_q, D_q), any length (see module docs).

    ``normalize`` L2-normalises the rows first, as the dataset loaders do (raw extractor output needs it).
    ``max_clips`` defaults to the model config's. Returns ``{"pred_relevant_windows", "pred_saliency_scores"}``.
    """
    video = np.asarray(video_features, dtype=np.float32)
    query = np.asarray(query_features, dtype=np.float32)
    if video.ndim != 2 or video.shape[0] == 0:
        raise ValueError(f"`video_features` must be (num_clips >= 1, D), got shape {video.shape}")
    if query.ndim != 2 or query.shape[0] == 0:
        raise ValueError(f"`query_features` must be (num_tokens >= 1, D), got shape {query.shape}")
    if not (np.isfinite(video).all() and np.isfinite(query).all()):
        raise ValueError("`video_features` / `query_features` hold NaN or infinite values")
    if normalize:
        video, query = l2_normalize(video), l2_normalize(query)
    config = getattr(model, "config", None)
    max_clips = max_clips or getattr(config, "max_clips", 75)
    query = query[: getattr(config, "max_query_tokens", len(query))]
    num_clips = len(video)
    windows = sliding_windows(num_clips, max_clips, stride)
    device = _model_device(model)
    length = windows[0][1] - windows[0][0]
    video_batch = torch.from_numpy(np.stack([video[s:e] for s, e in windows])).to(device)
    query_batch = torch.from_numpy(np.repeat(query[None], len(windows), axis=0)).to(device)
    was_training = model.training
    model.eval()
    try:
        out = model(video_features=video_batch, text_features=query_batch)
    finally:
        model.train(was_training)
    scores = out.pred_logits.float().softmax(-1)[..., 0]
    total = num_clips * clip_length if duration is None else float(duration)
    moments: list[list[float]] = []
    saliency = np.zeros(num_clips)
    counts = np.zeros(num_clips)
    for i, (start, end) in enumerate(windows):
        moments += decode_moments(
            out.pred_spans[i],
            scores[i],
            num_clips=length,
            clip_length=clip_length,
            duration=min(total, end * clip_length),
            offset=start * clip_length,
            round_to_clips=round_to_clips,
        )
        saliency[start:end] += out.saliency_scores[i].float().cpu().numpy()
        counts[start:end] += 1
    if len(windows) > 1:
        moments = temporal_nms(moments, nms_threshold)
    else:
        moments.sort(key=lambda row: row[2], reverse=True)
    return {
        "pred_relevant_windows": moments[:max_moments],
        "pred_saliency_scores": [round(float(v), 4) for v in saliency / counts],
    }


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: GroundingDataset,
    *,
    batch_size: int = 32,
    round_to_clips: bool = True,
) -> list[dict[str, Any]]:
    """Submission rows for every record of ``dataset`` in order (features as the dataset gives them: at most
    ``max_clips`` clips per video)."""
    collator = GroundingCollator(labels=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=lambda items: items)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for items in loader:
            batch = {k: v.to(device) for k, v in collator(items).items()}
            out = model(**batch)
            scores = out.pred_logits.float().softmax(-1)[..., 0]
            for i, item in enumerate(items):
                record = item["record"]
                num_clips = len(item["video_features"])
                rows.append(
                    {
                        "qid": record.qid,
                        "query": record.query,
                        "vid": record.vid,
                        "pred_relevant_windows": decode_moments(
                            out.pred_spans[i],
                            scores[i],
                            num_clips=num_clips,
                            clip_length=dataset.clip_length,
                            duration=min(record.duration, num_clips * dataset.clip_length),
                            round_to_clips=round_to_clips,
                        ),
                        "pred_saliency_scores": [
                            round(float(v), 4) for v in out.saliency_scores[i, :num_clips].float().cpu()
                        ],
                    }
                )
    finally:
        model.train(was_training)
    return rows
