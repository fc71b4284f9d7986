"""Readers for the grounding datasets' files: QVHighlights, YouTube Highlights and TVSum.

QVHighlights (Moment-DETR's release): a jsonl file per split, one query per line with ``qid``, ``query``,
``duration``, ``vid``, ``relevant_windows``, ``relevant_clip_ids`` and ``saliency_scores`` (3 annotators, 0..4); the
test split has only the first four. Features: ``{dir}/{vid}.npz["features"]`` in every video-feature directory
(e.g. SlowFast and CLIP), ``{query_dir}/qid{qid}.npz["last_hidden_state"]``. Clips of 2 s.

YouTube Highlights and TVSum (highlight detection by domain): a jsonl file per split that the user provides (the
official splits are lists of video ids per domain), one video per line with ``vid``, ``query`` (the domain name or
the video title), ``duration``, ``domain``, an optional ``qid`` (default: the vid) and ``label``, one entry per
clip: YouTube Highlights a 0 / 1 highlight label (clips of 1 s), TVSum the 20 annotators' importance scores 1..5
(clips of 2 s). This is the layout of the lighthouse library's unified files (which name it ``label``, a list of
one-element lists for YouTube). Features in the same npz layout. Every clip becomes a relevant clip scored by its
label, and there are no moment windows: these records train and score saliency only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from .data import QVHIGHLIGHTS_SCORES, GroundingDataset, GroundingRecord, NpzFeatures, parse_record

__all__ = ["HIGHLIGHT_DATASETS", "load_highlight_dataset", "load_qvhighlights", "read_jsonl"]

HIGHLIGHT_DATASETS: dict[str, dict[str, Any]] = {
    "youtube": {"clip_length": 1.0, "score_range": (0.0, 1.0), "num_annotators": 1},
    "tvsum": {"clip_length": 2.0, "score_range": (1.0, 5.0), "num_annotators": 20},
}
"""Per highlight dataset: clip length in seconds, the label scale and the number of annotators per clip."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a jsonl file (blank lines skipped); a line that is not a JSON object is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise ValueError(f"annotation file {path} holds no records")
    return rows


def load_qvhighlights(
    annotation_file: str | Path,
    video_feature_dirs: str | Path | Sequence[str | Path],
    query_feature_dir: str | Path,
    *,
    clip_length: float = 2.0,
    max_clips: int = 75,
    max_query_tokens: int = 32,
    query_key: str = "last_hidden_state",
) -> GroundingDataset:
    """A QVHighlights split (or any file in its format) with Moment-DETR's features, checked record by record."""
    features = NpzFeatures(video_feature_dirs, query_feature_dir, query_key=query_key)
    records = [
        parse_record(row, clip_length=clip_length, score_range=QVHIGHLIGHTS_SCORES)
        for row in read_jsonl(annotation_file)
    ]
    return GroundingDataset(
        records,
        features,
        clip_length=clip_length,
        max_clips=max_clips,
        max_query_tokens=max_query_tokens,
        name=str(annotation_file),
    )


def highlight_record(
    row: dict[str, Any], kind: Literal["youtube", "tvsum"], clip_length: float | None = None
) -> GroundingRecord:
    """One YouTube Highlights / TVSum video line as a record: every clip relevant, scored by its label."""
    if kind not in HIGHLIGHT_DATASETS:
        raise ValueError(f"`kind` must be one of {sorted(HIGHLIGHT_DATASETS)}, got {kind!r}")
    spec = HIGHLIGHT_DATASETS[kind]
    qid = row.get("qid", row.get("vid"))
    labels = row.get("label")
    if not isinstance(labels, list) or not labels:
        raise ValueError(
            f"grounding record qid={qid!r}: `label` must be a non-empty list, one entry per clip"
        )
    converted = {
        "qid": qid,
        "query": row.get("query"),
        "vid": row.get("vid"),
        "duration": row.get("duration"),
        "relevant_windows": [],
        "relevant_clip_ids": list(range(len(labels))),
        "saliency_scores": labels,
        **{k: v for k, v in row.items() if k not in {"qid", "query", "vid", "duration", "label"}},
    }
    return parse_record(
        converted,
        clip_length=clip_length or spec["clip_length"],
        score_range=spec["score_range"],
        num_annotators=spec["num_annotators"],
    )


def load_highlight_dataset(
    annotation_file: str | Path,
    video_feature_dirs: str | Path | Sequence[str | Path],
    query_feature_dir: str | Path,
    *,
    kind: Literal["youtube", "tvsum"],
    domain: str | None = None,
    clip_length: float | None = None,
    max_clips: int = 75,
    max_query_tokens: int = 32,
    query_key: str = "last_hidden_state",
) -> GroundingDataset:
    """A YouTube Highlights or TVSum split from the user's jsonl file, optionally one ``domain`` of it.

    ``clip_length`` defaults to the dataset's (YouTube 1 s, TVSum 2 s). A ``domain`` that no line has is an error.
    """
    if kind not in HIGHLIGHT_DATASETS:
        raise ValueError(f"`kind` must be one of {sorted(HIGHLIGHT_DATASETS)}, got {kind!r}")
    rows = read_jsonl(annotation_file)
    if domain is not None:
        domains = sorted({str(r.get("domain")) for r in rows})
        rows = [r for r in rows if r.get("domain") == domain]
        if not rows:
            raise ValueError(
                f"{annotation_file} has no videos of domain {domain!r}; its domains are {domains}"
            )
    length = clip_length or HIGHLIGHT_DATASETS[kind]["clip_length"]
    records = [highlight_record(row, kind, length) for row in rows]
    return GroundingDataset(
        records,
        NpzFeatures(video_feature_dirs, query_feature_dir, query_key=query_key),
        clip_length=length,
        max_clips=max_clips,
        max_query_tokens=max_query_tokens,
        name=f"{annotation_file}" + (f" [{domain}]" if domain else ""),
    )
