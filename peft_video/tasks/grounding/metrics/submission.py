"""QVHighlights' official submission format: write predictions as jsonl, read them back.

One JSON object per line with ``qid``, ``query``, ``vid``, ``pred_relevant_windows`` ([[start, end, score], ...],
seconds) and ``pred_saliency_scores`` (one score per 2-s clip, in order), as the official scorer
(jayleicn/moment_detr ``standalone_eval``) and its former Codalab server read it: every line is parsed with
``json.loads``, so the file has no blank lines, and numbers are plain JSON numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SUBMISSION_FIELDS: tuple[str, ...] = ("qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores")
"""The fields of a submission record, in the order they are written."""

_OPTIONAL = ("pred_relevant_windows", "pred_saliency_scores")


def _number(value: Any, where: str) -> float:
    """``value`` (a Python, numpy or 0-d torch number) as a finite float."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def submission_record(record: Mapping[str, Any], sort_windows: bool = True) -> dict[str, Any]:
    """One prediction as a submission record with plain JSON types; errors name the record's qid.

    ``qid`` is an int or a str, ``query`` and ``vid`` strings; ``pred_relevant_windows`` (windows
    ``[start, end, score]`` with start < end) and ``pred_saliency_scores`` may be numpy / torch arrays; either may
    be left out (the scorer then skips that task), not both. ``sort_windows`` orders the windows by decreasing
    score (stable): the official scorer keeps the first 10 LISTED windows and takes the first listed one as the
    top-1 of R1, so an unsorted list would be scored on the wrong windows.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a submission record must be a dict, got {type(record).__name__}")
    qid = record.get("qid")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise ValueError(f"submission record: `qid` must be an int or a str, got {qid!r}")
    where = f"submission record qid {qid!r}"
    unknown = sorted(set(record) - set(SUBMISSION_FIELDS))
    if unknown:
        raise ValueError(f"{where}: fields {unknown} are not in the submission format {SUBMISSION_FIELDS}")
    out: dict[str, Any] = {"qid": qid}
    for key in ("query", "vid"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{where}: `{key}` must be a str, got {record.get(key)!r}")
        out[key] = record[key]
    if all(record.get(key) is None for key in _OPTIONAL):
        raise ValueError(f"{where}: needs `pred_relevant_windows`, `pred_saliency_scores` or both")
    if record.get("pred_relevant_windows") is not None:
        windows = []
        for i, window in enumerate(_as_list(record["pred_relevant_windows"])):
            window = _as_list(window)
            if len(window) != 3:
                raise ValueError(f"{where}: window {i} must be [start, end, score], got {window!r}")
            start, end, score = (_number(v, f"{where}: window {i}") for v in window)
            if start >= end:
                raise ValueError(f"{where}: window {i} [{start}, {end}] has start >= end")
            windows.append([start, end, score])
        if not windows:
            raise ValueError(f"{where}: `pred_relevant_windows` is empty")
        if sort_windows:
            windows.sort(key=lambda w: -w[2])
        out["pred_relevant_windows"] = windows
    if record.get("pred_saliency_scores") is not None:
        scores = [
            _number(v, f"{where}: `pred_saliency_scores`") for v in _as_list(record["pred_saliency_scores"])
        ]
        if not scores:
            raise ValueError(f"{where}: `pred_saliency_scores` is empty")
        out["pred_saliency_scores"] = scores
    return out


def _as_list(value: Any) -> list:
    """Lists, tuples, numpy arrays and tensors as a Python list."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list, got {value!r}")
    return list(value)


def write_submission(
    records: Iterable[Mapping[str, Any]], path: str | Path, sort_windows: bool = True
) -> Path:
    """Write ``records`` (see :func:`submission_record`) as the official submission jsonl at ``path``.

    Every record is checked before anything is written; a qid may appear once. Returns the path.
    """
    rows = [submission_record(record, sort_windows) for record in records]
    seen: set = set()
    for row in rows:
        if row["qid"] in seen:
            raise ValueError(f"submission: qid {row['qid']!r} appears more than once")
        seen.add(row["qid"])
    if not rows:
        raise ValueError("submission: no records to write")
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, allow_nan=False) + "\n")
    return path


def read_submission(path: str | Path) -> list[dict[str, Any]]:
    """Read a submission jsonl back as a list of records (one per line, as the official scorer reads it)."""
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not a JSON record ({error})") from None
            if not isinstance(record, dict) or "qid" not in record:
                raise ValueError(f"{path}: line {number} is not a submission record with a `qid`")
            records.append(record)
    return records
