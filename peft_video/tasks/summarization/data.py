"""Summarization data: How2's layout, a jsonl form, video features from ``.npy`` files, and the batch collator.

Formats:

- **How2** (:func:`read_how2`): a directory with ``tran.tok.txt`` (transcripts) and ``desc.tok.txt`` (summaries), one
  example per line, the first whitespace token of each line the video id; the two files pair line by line and must
  name the same ids in the same order. Without ``desc.tok.txt`` the records have no summary (a test set to predict).
- **jsonl** (:func:`read_jsonl`): one object per line with ``id``, ``transcript``, ``summary`` (optional for
  prediction) and optionally ``features`` (a ``.npy`` path, relative to the jsonl's directory); features written by
  :mod:`peft_video.tasks.features` fit.

Video features: ``{feature_dir}/{id}.npy`` of shape (T, D) (How2: (T, 2048)), or the record's ``features`` path;
:class:`NpyFeatures` checks them (present, 2-D, the width the model reads, finite) and keeps the first
``max_frames``. Every bad input is an error naming the record (id, file and line) and what was expected; inputs over
the length limits are truncated, with one warning that says how many (:func:`encode_records`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NpyFeatures",
    "SummarizationCollator",
    "SummarizationRecord",
    "encode_records",
    "read_how2",
    "read_jsonl",
]

logger = logging.getLogger(__name__)

TRANSCRIPTS, SUMMARIES = "tran.tok.txt", "desc.tok.txt"


@dataclass(frozen=True)
class SummarizationRecord:
    """One example: the video id, its transcript, its reference summary (None to predict) and, optionally, the path
    of its feature file (else ``{feature_dir}/{id}.npy``)."""

    id: str
    transcript: str
    summary: str | None = None
    features: str | None = None


def _id_and_text(line: str, path: Path, number: int) -> tuple[str, str]:
    parts = line.strip().split(maxsplit=1)
    if not parts:
        raise ValueError(f"{path}:{number}: empty line; every line is '<video id> <text>'")
    if len(parts) == 1:
        raise ValueError(f"{path}:{number}: video id {parts[0]!r} has no text after it")
    return parts[0], parts[1]


def _read_lines(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not an example
    return [(number, line) for number, line in enumerate(lines, 1)]


def read_how2(directory: str | Path, with_summaries: bool | None = None) -> list[SummarizationRecord]:
    """Records of a How2-layout directory (see the module docstring). ``with_summaries``: require ``desc.tok.txt``
    (True), ignore it (False), or use it when present (None)."""
    root = Path(directory)
    transcripts = root / TRANSCRIPTS
    if not transcripts.is_file():
        raise FileNotFoundError(
            f"How2 directory {str(root)!r} has no {TRANSCRIPTS} (one '<id> <transcript>' a line)"
        )
    summaries = root / SUMMARIES
    if with_summaries and not summaries.is_file():
        raise FileNotFoundError(
            f"How2 directory {str(root)!r} has no {SUMMARIES} (one '<id> <summary>' a line)"
        )
    source = [(n, *_id_and_text(line, transcripts, n)) for n, line in _read_lines(transcripts)]
    if not source:
        raise ValueError(f"{transcripts} holds no examples")
    _no_duplicates([(n, vid) for n, vid, _ in source], transcripts)
    if with_summaries is False or not summaries.is_file():
        return [SummarizationRecord(vid, text) for _, vid, text in source]
    target = [(n, *_id_and_text(line, summaries, n)) for n, line in _read_lines(summaries)]
    if len(target) != len(source):
        more = "more" if len(target) > len(source) else "fewer"
        raise ValueError(
            f"{summaries} has {len(target)} summaries, {more} than the {len(source)} transcripts of {transcripts}; "
            "the two files pair line by line, so every transcript needs exactly one summary"
        )
    records = []
    for (n, vid, text), (_, summary_id, summary) in zip(source, target, strict=True):
        if summary_id != vid:
            raise ValueError(
                f"line {n}: {transcripts.name} names video {vid!r} but {summaries.name} names {summary_id!r}; the "
                "files must list the same ids in the same order"
            )
        records.append(SummarizationRecord(vid, text, summary))
    return records


def _no_duplicates(ids: Iterable[tuple[int, str]], path: Path) -> None:
    seen: dict[str, int] = {}
    for number, vid in ids:
        if vid in seen:
            raise ValueError(f"{path}:{number}: video id {vid!r} already appears on line {seen[vid]}")
        seen[vid] = number


def read_jsonl(path: str | Path, require_summary: bool = True) -> list[SummarizationRecord]:
    """Records of a jsonl file (``id``, ``transcript``, ``summary``, optional ``features``; see the module
    docstring). A relative ``features`` path is taken from the file's directory."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"jsonl file {str(file)!r} does not exist")
    records, seen = [], {}
    for number, line in _read_lines(file):
        if not line.strip():
            raise ValueError(f"{file}:{number}: empty line; every line is one JSON object")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{file}:{number}: expected a JSON object, got {type(row).__name__}")
        vid = row.get("id")
        if not isinstance(vid, (str, int)) or isinstance(vid, bool) or str(vid).strip() == "":
            raise ValueError(f"{file}:{number}: `id` must be a non-empty string, got {vid!r}")
        vid = str(vid)
        if vid in seen:
            raise ValueError(f"{file}:{number}: id {vid!r} already appears on line {seen[vid]}")
        seen[vid] = number
        transcript = row.get("transcript")
        if not isinstance(transcript, str) or not transcript.strip():
            raise ValueError(f"{file}:{number}: id {vid!r} has no `transcript` text (got {transcript!r})")
        summary = row.get("summary")
        if summary is None and require_summary:
            raise ValueError(f"{file}:{number}: id {vid!r} has no `summary` (needed to train and to score)")
        if summary is not None and (not isinstance(summary, str) or not summary.strip()):
            raise ValueError(
                f"{file}:{number}: id {vid!r}: `summary` must be non-empty text, got {summary!r}"
            )
        features = row.get("features")
        if features is not None:
            if not isinstance(features, str) or not features:
                raise ValueError(f"{file}:{number}: id {vid!r}: `features` must be a path, got {features!r}")
            feature_path = Path(features)
            features = str(feature_path if feature_path.is_absolute() else file.parent / feature_path)
        records.append(SummarizationRecord(vid, transcript.strip(), summary and summary.strip(), features))
    if not records:
        raise ValueError(f"{file} holds no examples")
    return records


class NpyFeatures:
    """Video features of records: the record's ``features`` path, else ``{directory}/{id}.npy``; (T, width),
    finite, the first ``max_frames`` kept (:attr:`truncated` counts the videos that were longer)."""

    def __init__(self, directory: str | Path | None, width: int, max_frames: int) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None and not self.directory.is_dir():
            raise FileNotFoundError(f"feature directory {str(self.directory)!r} does not exist")
        self.width, self.max_frames = width, max_frames
        self.truncated = 0

    def path_of(self, record: SummarizationRecord) -> Path:
        if record.features is not None:
            return Path(record.features)
        if self.directory is None:
            raise ValueError(
                f"record {record.id!r} names no `features` file and no feature directory was given "
                "(--feature-dir: a directory of {id}.npy files)"
            )
        return self.directory / f"{record.id}.npy"

    def __call__(self, record: SummarizationRecord) -> Tensor:
        path = self.path_of(record)
        if not path.is_file():
            raise FileNotFoundError(f"video {record.id!r} has no feature file: {str(path)!r} does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"video {record.id!r}: {str(path)!r} is not a readable .npy array ({error})"
            ) from None
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(
                f"video {record.id!r}: {str(path)!r} holds shape {array.shape}, expected (T, {self.width})"
            )
        if array.shape[1] != self.width:
            raise ValueError(
                f"video {record.id!r}: {str(path)!r} features are {array.shape[1]} wide, the model reads "
                f"{self.width} (load the model with video_feature_dim={array.shape[1]} to rebuild its projection)"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"video {record.id!r}: {str(path)!r} holds NaN or infinite values")
        if array.shape[0] > self.max_frames:
            self.truncated += 1
            array = array[: self.max_frames]
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def encode_records(
    records: Sequence[SummarizationRecord],
    tokenizer: Any,
    features: NpyFeatures | Any | None,
    max_source_tokens: int,
    max_target_tokens: int,
    *,
    source_prefix: str = "",
) -> list[dict[str, Any]]:
    """Tokenised examples (``input_ids``, ``labels`` where there is a summary, ``video_features``, ``id``).

    ``features``: an :class:`NpyFeatures` or any callable record -> (T, D) tensor; None for text only. Transcripts,
    summaries and videos over their limits are cut; one warning says how many of each.
    """
    examples, long_source, long_target = [], 0, 0
    before = getattr(features, "truncated", 0)
    for record in records:
        source = tokenizer(source_prefix + record.transcript, truncation=False)["input_ids"]
        if len(source) > max_source_tokens:
            long_source += 1
            source = source[: max_source_tokens - 1] + source[-1:]  # keep the end-of-sequence token
        example: dict[str, Any] = {"id": record.id, "input_ids": source}
        if record.summary is not None:
            target = tokenizer(text_target=record.summary, truncation=False)["input_ids"]
            if len(target) > max_target_tokens:
                long_target += 1
                target = target[: max_target_tokens - 1] + target[-1:]
            example["labels"] = target
        if features is not None:
            example["video_features"] = features(record)
        examples.append(example)
    long_video = getattr(features, "truncated", 0) - before
    cut = [
        f"{count} of {len(records)} {what}"
        for count, what in (
            (long_source, f"transcripts longer than {max_source_tokens} tokens"),
            (long_target, f"summaries longer than {max_target_tokens} tokens"),
            (long_video, f"videos longer than {getattr(features, 'max_frames', '?')} frames"),
        )
        if count
    ]
    if cut:
        logger.warning("truncated %s", "; ".join(cut))
    return examples


class SummarizationCollator:
    """Pads a list of :func:`encode_records` examples into a batch: ``input_ids`` / ``attention_mask``, ``labels``
    (padding -100), ``video_features`` (B, T_max, D) / ``video_mask`` (B, T_max) where the examples have video."""

    def __init__(self, pad_token_id: int, label_pad_id: int = -100) -> None:
        self.pad_token_id, self.label_pad_id = pad_token_id, label_pad_id

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(examples), length, dtype=torch.long)
        for i, example in enumerate(examples):
            ids[i, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
            mask[i, : len(example["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if all("labels" in e for e in examples):
            target = max(len(e["labels"]) for e in examples)
            labels = torch.full((len(examples), target), self.label_pad_id, dtype=torch.long)
            for i, example in enumerate(examples):
                labels[i, : len(example["labels"])] = torch.tensor(example["labels"])
            batch["labels"] = labels
        if all("video_features" in e for e in examples):
            frames = max(e["video_features"].shape[0] for e in examples)
            width = examples[0]["video_features"].shape[1]
            video = torch.zeros(len(examples), frames, width)
            video_mask = torch.zeros(len(examples), frames, dtype=torch.bool)
            for i, example in enumerate(examples):
                count = example["video_features"].shape[0]
                video[i, :count] = example["video_features"]
                video_mask[i, :count] = True
            batch["video_features"], batch["video_mask"] = video, video_mask
        return batch
