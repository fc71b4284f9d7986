"""Grounding records, their validation, feature sources, the dataset and the collator.

A :class:`GroundingRecord` is one query on one video in QVHighlights' fields (``qid``, ``query``, ``vid``,
``duration``, ``relevant_windows`` in seconds, ``relevant_clip_ids``, ``saliency_scores`` one row per relevant clip
with one score per annotator). Highlight-only data (YouTube Highlights, TVSum) becomes records without windows whose
relevant clips are all clips, scored by their per-clip labels. :func:`parse_record` rejects bad annotations with an
error naming the record's ``qid``.

Features come from a feature source: :class:`NpzFeatures` reads Moment-DETR's layout (``{dir}/{vid}.npz`` with
``features`` (L, D) per video-feature directory, each L2-normalised per clip and then concatenated; the query's
``{query_dir}/qid{qid}.npz`` with ``last_hidden_state`` (L_q, D_q), L2-normalised per token); :class:`InMemoryFeatures`
holds arrays (the synthetic world). :class:`GroundingDataset` loads and checks one record's features on access
(a missing file, the wrong width, NaN, no clips, no query tokens: an error naming the ``qid``); a video longer than
``max_clips`` is cut there, as Moment-DETR does, and windows and clips past the cut are clipped or dropped (counted
in one warning per dataset). :class:`GroundingCollator` pads a batch and draws the saliency pairs.

Spans are normalised by the time the features cover (``num_clips * clip_length``), both here and when predictions
are turned back into seconds, so the two agree even where a video's last clip is shorter than ``clip_length``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "FeatureSource",
    "GroundingCollator",
    "GroundingDataset",
    "GroundingRecord",
    "InMemoryFeatures",
    "NpzFeatures",
    "l2_normalize",
    "parse_record",
    "saliency_pairs",
]

logger = logging.getLogger(__name__)

QVHIGHLIGHTS_SCORES = (0.0, 4.0)
"""QVHighlights' saliency scale: 0 (Very Bad) to 4 (Very Good)."""


# ----------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GroundingRecord:
    """One query on one video. ``windows`` in seconds; ``saliency`` has one row per ``clip_ids`` entry and one
    column per annotator; ``has_labels`` is False for unlabelled (test) records. ``extra`` keeps other fields
    (e.g. ``domain``)."""

    qid: Hashable
    query: str
    vid: str
    duration: float
    windows: tuple[tuple[float, float], ...] = ()
    clip_ids: tuple[int, ...] = ()
    saliency: tuple[tuple[float, ...], ...] = ()
    has_labels: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_annotation(self) -> dict[str, Any]:
        """The record as a QVHighlights annotation row (the grounding scorers' ``references``), extra fields kept."""
        row: dict[str, Any] = {
            "qid": self.qid,
            "query": self.query,
            "duration": self.duration,
            "vid": self.vid,
        }
        if self.has_labels:
            row["relevant_windows"] = [list(w) for w in self.windows]
            row["relevant_clip_ids"] = list(self.clip_ids)
            row["saliency_scores"] = [list(s) for s in self.saliency]
        return {**row, **self.extra}


def _fail(qid: object, message: str) -> ValueError:
    return ValueError(f"grounding record qid={qid!r}: {message}")


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def parse_record(
    raw: Mapping[str, Any],
    *,
    clip_length: float,
    score_range: tuple[float, float] | None = QVHIGHLIGHTS_SCORES,
    num_annotators: int | None = None,
) -> GroundingRecord:
    """Check one annotation row (QVHighlights fields) and return it as a :class:`GroundingRecord`.

    Raises a ValueError naming the row's ``qid`` for: a missing field; a duration that is not a positive number;
    a window that is not two numbers with ``0 <= start < end <= duration``; relevant clips that are not distinct
    non-negative integers inside the video (``clip_id * clip_length < duration``); ``saliency_scores`` whose rows do
    not match ``relevant_clip_ids`` one to one, differ in their number of annotators (or from ``num_annotators``),
    or hold scores outside ``score_range``; labels given only in part. Rows without any of the three label fields
    (QVHighlights' test split) are unlabelled records.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"a grounding record must be a mapping of fields, got {type(raw).__name__}")
    qid = raw.get("qid")
    missing = [name for name in ("qid", "query", "vid", "duration") if raw.get(name) is None]
    if missing:
        raise _fail(qid, f"missing field(s) {missing}; got fields {sorted(raw)}")
    if not isinstance(qid, Hashable) or isinstance(qid, (bool, float)):
        raise _fail(qid, f"`qid` must be an int or a string, got {type(qid).__name__}")
    if not isinstance(raw["query"], str) or not isinstance(raw["vid"], str) or not raw["vid"]:
        raise _fail(
            qid, f"`query` and `vid` must be strings (vid non-empty), got {raw['query']!r}, {raw['vid']!r}"
        )
    duration = raw["duration"]
    if not _number(duration) or duration <= 0:
        raise _fail(qid, f"`duration` must be a positive number of seconds, got {duration!r}")
    duration = float(duration)

    present = [
        name
        for name in ("relevant_windows", "relevant_clip_ids", "saliency_scores")
        if raw.get(name) is not None
    ]
    if not present:
        return GroundingRecord(qid, raw["query"], raw["vid"], duration, has_labels=False, extra=_extra(raw))

    windows = []
    for i, window in enumerate(raw.get("relevant_windows") or ()):
        if not isinstance(window, Sequence) or len(window) != 2 or not all(_number(v) for v in window):
            raise _fail(qid, f"relevant_windows[{i}] must be [start, end] in seconds, got {window!r}")
        start, end = float(window[0]), float(window[1])
        if not 0 <= start < end <= duration:
            raise _fail(
                qid,
                f"relevant_windows[{i}] = {list(window)} must satisfy 0 <= start < end <= duration ({duration:g} s)",
            )
        windows.append((start, end))

    clip_ids = raw.get("relevant_clip_ids")
    scores = raw.get("saliency_scores")
    if (clip_ids is None) != (scores is None):
        raise _fail(
            qid, "`relevant_clip_ids` and `saliency_scores` must be given together (one score row per clip)"
        )
    clip_ids = list(clip_ids or [])
    scores = list(scores or [])
    num_clips = math.ceil(duration / clip_length - 1e-9)
    for i, clip in enumerate(clip_ids):
        if isinstance(clip, bool) or not isinstance(clip, (int, np.integer)) or not 0 <= clip < num_clips:
            raise _fail(
                qid,
                f"relevant_clip_ids[{i}] = {clip!r} is not a clip of this video (0..{num_clips - 1} for "
                f"{duration:g} s at {clip_length:g} s per clip)",
            )
    if len(set(clip_ids)) != len(clip_ids):
        raise _fail(qid, f"relevant_clip_ids repeat a clip: {clip_ids}")
    if len(scores) != len(clip_ids):
        raise _fail(
            qid,
            f"saliency_scores has {len(scores)} rows but relevant_clip_ids {len(clip_ids)} clips; give one row "
            "(a score per annotator) per relevant clip",
        )
    rows = []
    widths = set()
    for i, row in enumerate(scores):
        row = [row] if _number(row) else row
        if not isinstance(row, Sequence) or not row or not all(_number(v) for v in row):
            raise _fail(qid, f"saliency_scores[{i}] must be a list of annotator scores, got {scores[i]!r}")
        if score_range is not None and not all(score_range[0] <= v <= score_range[1] for v in row):
            raise _fail(qid, f"saliency_scores[{i}] = {list(row)} has scores outside {list(score_range)}")
        widths.add(len(row))
        rows.append(tuple(float(v) for v in row))
    if len(widths) > 1 or (num_annotators is not None and widths and widths != {num_annotators}):
        expected = f"{num_annotators}" if num_annotators is not None else "the same number of"
        raise _fail(
            qid,
            f"saliency_scores rows must each hold {expected} annotator scores, got widths {sorted(widths)}",
        )
    return GroundingRecord(
        qid,
        raw["query"],
        raw["vid"],
        duration,
        windows=tuple(windows),
        clip_ids=tuple(int(c) for c in clip_ids),
        saliency=tuple(rows),
        has_labels=True,
        extra=_extra(raw),
    )


def _extra(raw: Mapping[str, Any]) -> dict[str, Any]:
    known = {"qid", "query", "vid", "duration", "relevant_windows", "relevant_clip_ids", "saliency_scores"}
    return {k: v for k, v in raw.items() if k not in known}


# ---------------------------------------------------------------------------------------------------- features


def l2_normalize(array: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Each row divided by its L2 norm (at least ``eps``, so an all-zero row stays zero)."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / inf rows stay NaN; the dataset rejects them
        norms = np.linalg.norm(array, axis=-1, keepdims=True)
        return (array / np.maximum(norms, eps)).astype(np.float32)


class FeatureSource(Protocol):
    """Where a dataset reads features: ``video(record)`` (L, D) and ``query(record)`` (L_q, D_q) arrays, and
    ``missing(record)``, a description of what is absent (None when everything is there)."""

    def video(self, record: GroundingRecord) -> np.ndarray: ...

    def query(self, record: GroundingRecord) -> np.ndarray: ...

    def missing(self, record: GroundingRecord) -> str | None: ...


class NpzFeatures:
    """Moment-DETR's feature files: ``{dir}/{vid}.npz["features"]`` per video directory and
    ``{query_dir}/qid{qid}.npz[query_key]``.

    Each video directory's features are L2-normalised per clip and the directories concatenated along the feature
    axis (e.g. SlowFast 2304 + CLIP 512); directories whose clip counts differ by at most
    ``max_length_difference`` (extractors disagree on a video's last clip) are cut to the shortest, a larger
    difference is an error. Query token features are L2-normalised per token. ``normalize=False`` keeps both raw.
    """

    def __init__(
        self,
        video_dirs: str | Path | Sequence[str | Path],
        query_dir: str | Path,
        *,
        query_key: str = "last_hidden_state",
        normalize: bool = True,
        max_length_difference: int = 2,
    ) -> None:
        dirs = [video_dirs] if isinstance(video_dirs, (str, Path)) else list(video_dirs)
        if not dirs:
            raise ValueError("`video_dirs` must name at least one directory of {vid}.npz video features")
        self.video_dirs = [Path(d) for d in dirs]
        self.query_dir = Path(query_dir)
        for directory in (*self.video_dirs, self.query_dir):
            if not directory.is_dir():
                raise FileNotFoundError(f"feature directory {directory} does not exist")
        self.query_key = query_key
        self.normalize = normalize
        self.max_length_difference = max_length_difference

    def video_paths(self, record: GroundingRecord) -> list[Path]:
        return [d / f"{record.vid}.npz" for d in self.video_dirs]

    def query_path(self, record: GroundingRecord) -> Path:
        return self.query_dir / f"qid{record.qid}.npz"

    def missing(self, record: GroundingRecord) -> str | None:
        absent = [str(p) for p in self.video_paths(record) if not p.is_file()]
        if absent:
            return f"video feature file(s) {absent} of vid={record.vid!r} do not exist"
        if not self.query_path(record).is_file():
            return f"query feature file {self.query_path(record)} does not exist"
        return None

    def _read(self, path: Path, key: str, record: GroundingRecord) -> np.ndarray:
        if not path.is_file():
            raise FileNotFoundError(
                f"grounding record qid={record.qid!r} (vid={record.vid!r}): {path} does not exist"
            )
        with np.load(path) as archive:
            if key not in archive:
                raise _fail(record.qid, f"{path} has no array {key!r} (it holds {sorted(archive.files)})")
            return np.asarray(archive[key], dtype=np.float32)

    def video(self, record: GroundingRecord) -> np.ndarray:
        parts = [self._read(p, "features", record) for p in self.video_paths(record)]
        for path, part in zip(self.video_paths(record), parts, strict=True):
            if part.ndim != 2:
                raise _fail(
                    record.qid, f"{path} holds features of shape {part.shape}, expected (num_clips, dim)"
                )
        lengths = [len(p) for p in parts]
        if max(lengths) - min(lengths) > self.max_length_difference:
            raise _fail(
                record.qid,
                f"the video feature directories disagree on the clip count of vid={record.vid!r}: {lengths} "
                f"(at most {self.max_length_difference} apart is tolerated)",
            )
        shortest = min(lengths)
        parts = [(l2_normalize(p) if self.normalize else p)[:shortest] for p in parts]
        return np.concatenate(parts, axis=1)

    def query(self, record: GroundingRecord) -> np.ndarray:
        tokens = self._read(self.query_path(record), self.query_key, record)
        if tokens.ndim != 2:
            raise _fail(
                record.qid,
                f"{self.query_path(record)}[{self.query_key!r}] has shape {tokens.shape}, expected (L_q, D)",
            )
        return l2_normalize(tokens) if self.normalize else tokens


class InMemoryFeatures:
    """Features held in memory: ``videos[vid]`` (L, D) and ``queries[qid]`` (L_q, D_q) arrays, L2-normalised per
    row on read unless ``normalize=False`` (the same treatment :class:`NpzFeatures` gives files)."""

    def __init__(
        self,
        videos: Mapping[str, np.ndarray],
        queries: Mapping[Hashable, np.ndarray],
        *,
        normalize: bool = True,
    ) -> None:
        self.videos, self.queries, self.normalize = videos, queries, normalize

    def missing(self, record: GroundingRecord) -> str | None:
        if record.vid not in self.videos:
            return f"no video features for vid={record.vid!r}"
        if record.qid not in self.queries:
            return "no query features for this qid"
        return None

    def _get(self, table: Mapping, key: Hashable, record: GroundingRecord, what: str) -> np.ndarray:
        if key not in table:
            raise FileNotFoundError(
                f"grounding record qid={record.qid!r} (vid={record.vid!r}): no {what} features"
            )
        array = np.asarray(table[key], dtype=np.float32)
        if array.ndim != 2:
            raise _fail(record.qid, f"{what} features have shape {array.shape}, expected 2-D")
        return l2_normalize(array) if self.normalize else array

    def video(self, record: GroundingRecord) -> np.ndarray:
        return self._get(self.videos, record.vid, record, "video")

    def query(self, record: GroundingRecord) -> np.ndarray:
        return self._get(self.queries, record.qid, record, "query")


# ----------------------------------------------------------------------------------------------------- dataset


class GroundingDataset(Dataset):
    """Records plus a feature source, read and checked item by item (``validate()`` checks every item now).

    Items are dicts: ``record``, ``video_features`` (L, D) float32 (at most ``max_clips`` clips), ``query_features``
    (L_q, D_q) (at most ``max_query_tokens`` tokens), ``span_labels`` (W, 2) normalised (centre, width),
    ``clip_ids`` and ``clip_scores`` (the relevant clips inside the kept clips and their annotator scores).
    Construction already fails on a record whose feature files are missing. ``video_feature_dim`` /
    ``text_feature_dim`` (default: the first item's) are the widths every item must have.
    """

    def __init__(
        self,
        records: Iterable[GroundingRecord],
        features: FeatureSource,
        *,
        clip_length: float,
        max_clips: int = 75,
        max_query_tokens: int = 32,
        video_feature_dim: int | None = None,
        text_feature_dim: int | None = None,
        name: str = "grounding",
    ) -> None:
        self.records = list(records)
        if not self.records:
            raise ValueError(f"dataset {name!r} has no records")
        if not _number(clip_length) or clip_length <= 0:
            raise ValueError(f"`clip_length` must be a positive number of seconds, got {clip_length!r}")
        self.features = features
        self.clip_length = float(clip_length)
        self.max_clips, self.max_query_tokens = max_clips, max_query_tokens
        self.video_feature_dim, self.text_feature_dim = video_feature_dim, text_feature_dim
        self.name = name
        seen: set = set()
        for record in self.records:
            if record.qid in seen:
                raise _fail(record.qid, f"the qid appears twice in dataset {name!r}")
            seen.add(record.qid)
            problem = features.missing(record)
            if problem:
                raise FileNotFoundError(
                    f"grounding record qid={record.qid!r} (vid={record.vid!r}): {problem}"
                )
        self._cut: set = set()
        self._warned = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_labels(self) -> bool:
        return all(r.has_labels for r in self.records)

    def validate(self) -> GroundingDataset:
        """Read and check every item now (first error raised); returns the dataset."""
        for index in range(len(self)):
            self[index]
        return self

    def _check_width(self, record: GroundingRecord, array: np.ndarray, attribute: str, what: str) -> None:
        expected = getattr(self, attribute)
        if expected is None:
            setattr(self, attribute, array.shape[1])
        elif array.shape[1] != expected:
            raise _fail(
                record.qid,
                f"{what} features are {array.shape[1]} wide, but this dataset's are {expected} wide "
                f"(vid={record.vid!r})",
            )

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        video = self.features.video(record)
        query = self.features.query(record)
        if video.shape[0] == 0:
            raise _fail(record.qid, f"video vid={record.vid!r} has zero clips of features")
        if query.shape[0] == 0:
            raise _fail(record.qid, f"the query {record.query!r} has no tokens of features")
        for array, what in ((video, "video"), (query, "query")):
            if not np.isfinite(array).all():
                raise _fail(record.qid, f"{what} features of vid={record.vid!r} hold NaN or infinite values")
        self._check_width(record, video, "video_feature_dim", "video")
        self._check_width(record, query, "text_feature_dim", "query")
        video, query = video[: self.max_clips], query[: self.max_query_tokens]
        num_clips = len(video)
        span = num_clips * self.clip_length

        windows, cut = [], False
        for start, end in record.windows:
            if start >= span:
                cut = True
                continue
            cut |= end > span + 1e-6
            windows.append((start / span, min(end, span) / span))
        kept = [(c, s) for c, s in zip(record.clip_ids, record.saliency, strict=True) if c < num_clips]
        cut |= len(kept) < len(record.clip_ids)
        if cut:
            self._note_cut(record)
        se = np.asarray(windows, dtype=np.float32).reshape(-1, 2)
        annotators = len(record.saliency[0]) if record.saliency else 1
        span_labels = np.stack([(se[:, 0] + se[:, 1]) / 2, se[:, 1] - se[:, 0]], axis=1)
        return {
            "record": record,
            "video_features": video,
            "query_features": query,
            "span_labels": span_labels.astype(np.float32),
            "clip_ids": np.asarray([c for c, _ in kept], dtype=np.int64),
            "clip_scores": np.asarray([s for _, s in kept], dtype=np.float32).reshape(len(kept), annotators),
        }

    def _note_cut(self, record: GroundingRecord) -> None:
        self._cut.add(record.qid)
        if not self._warned:
            self._warned = True
            logger.warning(
                "dataset %r: annotations of qid=%r (and possibly others; see `cut_records`) reach past the last "
                "kept clip (at most %d clips of %g s); windows are clipped there and clips past it dropped",
                self.name,
                record.qid,
                self.max_clips,
                self.clip_length,
            )

    @property
    def cut_records(self) -> set:
        """qids whose windows or relevant clips were clipped at the kept clips so far."""
        return set(self._cut)


# ---------------------------------------------------------------------------------------------------- collator


def saliency_pairs(
    clip_ids: np.ndarray, clip_scores: np.ndarray, num_clips: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Moment-DETR's two saliency pairs of one record: ([hard_pos, easy_pos], [hard_neg, easy_neg]).

    Hard: the relevant clip with the highest summed annotator score against the one with the lowest (ties broken
    at random rather than by position). Easy: a random relevant clip against a random clip outside the relevant
    ones; when every clip is relevant, the easy pair repeats the hard one. No relevant clip: ``([-1, -1], [-1, -1])``.
    """
    if len(clip_ids) == 0:
        return [-1, -1], [-1, -1]
    totals = clip_scores.sum(axis=1)
    order = rng.permutation(len(clip_ids))
    ranked = order[np.argsort(totals[order], kind="stable")]
    hard_pos, hard_neg = int(clip_ids[ranked[-1]]), int(clip_ids[ranked[0]])
    outside = np.setdiff1d(np.arange(num_clips), clip_ids)
    if len(outside) == 0:
        return [hard_pos, hard_pos], [hard_neg, hard_neg]
    easy_pos = int(clip_ids[rng.integers(len(clip_ids))])
    easy_neg = int(outside[rng.integers(len(outside))])
    return [hard_pos, easy_pos], [hard_neg, easy_neg]


def _pad(arrays: Sequence[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(a) for a in arrays)
    out = torch.zeros(len(arrays), length, width, dtype=torch.float32)
    mask = torch.zeros(len(arrays), length, dtype=torch.bool)
    for i, array in enumerate(arrays):
        out[i, : len(array)] = torch.from_numpy(np.ascontiguousarray(array))
        mask[i, : len(array)] = True
    return out, mask


class GroundingCollator:
    """Pad :class:`GroundingDataset` items into the model's inputs (and, with ``labels``, its labels).

    Output keys: ``video_features`` / ``video_mask`` (B, L_v, ·), ``text_features`` / ``text_mask`` (B, L_q, ·),
    and with labels ``span_labels`` / ``span_mask`` (B, W, 2) / (B, W) with at most ``max_windows`` windows per
    record (a random subset when there are more, as Moment-DETR), ``saliency_pos_labels`` /
    ``saliency_neg_labels`` (B, 2) from :func:`saliency_pairs`. Random choices come from one generator seeded by
    ``seed`` and advanced by every batch, so a run is reproducible and epochs differ.
    """

    def __init__(self, *, labels: bool = True, max_windows: int = 5, seed: int = 0) -> None:
        if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows <= 0:
            raise ValueError(f"`max_windows` must be a positive integer, got {max_windows!r}")
        self.labels, self.max_windows = labels, max_windows
        self.rng = np.random.default_rng(seed)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        for key in ("video_features", "query_features"):
            widths = {item[key].shape[1] for item in items}
            if len(widths) > 1:
                qids = [item["record"].qid for item in items]
                raise ValueError(f"{key} of one batch differ in width {sorted(widths)} (qids {qids})")
        video, video_mask = _pad([i["video_features"] for i in items], items[0]["video_features"].shape[1])
        text, text_mask = _pad([i["query_features"] for i in items], items[0]["query_features"].shape[1])
        batch = {
            "video_features": video,
            "video_mask": video_mask,
            "text_features": text,
            "text_mask": text_mask,
        }
        if not self.labels:
            return batch
        unlabelled = [item["record"].qid for item in items if not item["record"].has_labels]
        if unlabelled:
            raise ValueError(f"records without labels cannot be collated for training: qids {unlabelled}")
        spans = []
        for item in items:
            labels = item["span_labels"]
            if len(labels) > self.max_windows:
                labels = labels[np.sort(self.rng.permutation(len(labels))[: self.max_windows])]
            spans.append(labels)
        width = max(max(len(s) for s in spans), 1)
        span_labels = torch.zeros(len(items), width, 2)
        span_mask = torch.zeros(len(items), width, dtype=torch.bool)
        for i, labels in enumerate(spans):
            span_labels[i, : len(labels)] = torch.from_numpy(labels)
            span_mask[i, : len(labels)] = True
        pairs = [
            saliency_pairs(item["clip_ids"], item["clip_scores"], len(item["video_features"]), self.rng)
            for item in items
        ]
        batch.update(
            span_labels=span_labels,
            span_mask=span_mask,
            saliency_pos_labels=torch.tensor([p for p, _ in pairs], dtype=torch.long),
            saliency_neg_labels=torch.tensor([n for _, n in pairs], dtype=torch.long),
        )
        return batch
