"""Captioning data: LAVIS / Token Mixing annotation files, decoded videos, training rows and the caption collator.

Annotation layout (one JSON file per split, as LAVIS and the Token Mixing code read them)::

    [{"video": "vid1.mp4" or "frames/vid1/", "caption": ["a man ...", "someone ..."] or "a man ...",
      "video_id": "vid1"}, ...]

``video`` is resolved against ``video_root``; ``video_id`` defaults to ``video``. Training files usually list one
caption per record and repeat the video: records with the same ``video_id`` are merged (captions kept in order).
Frames are sampled uniformly with the package's loader (:func:`peft_video.data.load_frames`); a video with fewer
frames than T repeats frames (the loader's segment midpoints land on the same frame), as the authors' code pads short
frame folders by duplicating frames, so a 3-frame folder read at T = 8 gives frames 0,0,0,1,1,2,2,2.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.collate import VideoTextCollator
from ...data.real import load_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionRecord:
    """One video of a captioning split: its id, where its video is, its reference captions."""

    video_id: str
    video: str
    captions: tuple[str, ...]


def _captions_of(record: dict[str, Any], where: str) -> list[str]:
    caption = record.get("caption")
    if caption is None:
        raise ValueError(
            f"{where} has no 'caption' (a string or a list of reference strings); got {record!r}"
        )
    captions = [caption] if isinstance(caption, str) else caption
    if not isinstance(captions, list) or not captions:
        raise ValueError(
            f"{where}: 'caption' must be a non-empty string or a non-empty list of strings, got {caption!r}"
        )
    for text in captions:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: every caption must be non-empty text, got {text!r}")
    return [" ".join(text.split()) for text in captions]


def read_caption_annotations(path: str | Path, video_root: str | Path | None = None) -> list[CaptionRecord]:
    """The records of a LAVIS-style caption annotation file (see the module docstring), merged per ``video_id``.

    Errors name the file and the record (index and ``video_id``): a file that is not a JSON list of records, a
    record without ``video``, an empty caption list, a caption that is not text."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"caption annotations {str(path)!r}: no such file")
    try:
        records = json.loads(source.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"caption annotations {source} are not JSON: {error}") from error
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"caption annotations {source} must be a non-empty JSON list of records, got {type(records).__name__}"
        )
    root = Path(video_root) if video_root is not None else None
    merged: dict[str, tuple[str, list[str]]] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(
                f"{source} record {index} must be an object with 'video' and 'caption', got {record!r}"
            )
        video = record.get("video")
        video_id = str(record.get("video_id", video))
        where = f"{source} record {index} (video_id {video_id!r})"
        if not isinstance(video, str) or not video:
            raise ValueError(f"{where} has no 'video' (a file or frame folder path), got {video!r}")
        captions = _captions_of(record, where)
        resolved = str(root / video) if root is not None else video
        if video_id in merged and merged[video_id][0] != resolved:
            raise ValueError(
                f"{where}: video_id {video_id!r} names two videos, {merged[video_id][0]!r} and {resolved!r}"
            )
        merged.setdefault(video_id, (resolved, []))[1].extend(captions)
    return [CaptionRecord(video_id, video, tuple(captions)) for video_id, (video, captions) in merged.items()]


@dataclass
class CaptionVideos:
    """Decoded videos of a split: ``frames[i]`` (T, H, W, 3) uint8 for ``records[i]``; ``skipped`` the video_ids of
    records left out because their video could not be decoded (``skip_bad_videos``)."""

    records: list[CaptionRecord]
    frames: list[np.ndarray]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def references(self) -> list[list[str]]:
        """Each video's reference captions, in order (the ``references`` of ``coco_caption``)."""
        return [list(record.captions) for record in self.records]

    @property
    def video_ids(self) -> list[str]:
        return [record.video_id for record in self.records]


def decode_caption_videos(
    records: Sequence[CaptionRecord], num_frames: int, image_size: int, skip_bad_videos: bool = False
) -> CaptionVideos:
    """Sample ``num_frames`` frames of every record's video. A video that cannot be read raises a ``ValueError``
    naming its ``video_id`` and file; with ``skip_bad_videos`` the record is left out and counted in one warning."""
    kept, frames, skipped = [], [], []
    for record in records:
        try:
            frames.append(load_frames(record.video, num_frames, image_size))
        except (OSError, ValueError) as error:  # missing file, VideoReadError, undecodable stream
            if not skip_bad_videos:
                raise ValueError(
                    f"cannot read the video of video_id {record.video_id!r} ({record.video}): "
                    f"{' '.join(str(error).split())}; pass --skip-bad-videos to leave such records out"
                ) from error
            skipped.append(record.video_id)
            continue
        kept.append(record)
    if skipped:
        logger.warning(
            "skipped %d of %d videos that could not be read (skip_bad_videos): video_ids %s",
            len(skipped),
            len(records),
            skipped[:10],
        )
    if not kept:
        raise ValueError(f"none of the {len(records)} videos could be read")
    return CaptionVideos(kept, frames, skipped)


class CaptionTrainingRows(torch.utils.data.Dataset):
    """One training row per (video, reference caption): ``{"frames", "caption", "video_id"}``."""

    def __init__(self, videos: CaptionVideos) -> None:
        self.videos = videos
        self.index = [(v, c) for v, record in enumerate(videos.records) for c in range(len(record.captions))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Any]:
        v, c = self.index[item]
        record = self.videos.records[v]
        return {"frames": self.videos.frames[v], "caption": record.captions[c], "video_id": record.video_id}


class CaptionCollator(VideoTextCollator):
    """The video-text collator with the decoder's length limit: captions longer than ``max_length`` tokens (start and
    end included) are truncated, with one warning per collator naming the first such record."""

    def __init__(self, *args: Any, max_length: int, **kwargs: Any) -> None:
        super().__init__(*args, max_length=max_length, **kwargs)
        self.warned = False

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not self.warned:
            lengths = self.tokenizer([row["caption"] for row in rows], truncation=False)["input_ids"]
            for row, ids in zip(rows, lengths, strict=True):
                if len(ids) > self.max_length:
                    self.warned = True
                    warnings.warn(
                        f"caption of video_id {row.get('video_id')!r} has {len(ids)} tokens, over the decoder's limit "
                        f"of {self.max_length}: truncated (this and any further long captions; warned once)",
                        stacklevel=2,
                    )
                    break
        return super().__call__(rows)
