"""Real video-text data: MSR-VTT-style annotations (video, caption) -> a ``datasets.Dataset`` of sampled frames.

Each video is a file (decoded with PyAV) or a folder of frame images; ``num_frames`` frames are sampled uniformly
(the middle of ``num_frames`` equal segments), resized on the shorter side and centre-cropped to ``image_size``.
Rows have the columns of :mod:`peft_video.data.schema`, like the synthetic world, with ``order_pair_id`` -1.

For reading frames by time (the clip-feature extractor): :func:`video_frame_times` lists a file's frame times from
its packets, :func:`decode_frames_at` decodes the frames shown at given times, :func:`frame_files` /
:func:`load_frame_images` do the same for frame folders; unreadable input raises :class:`VideoReadError`.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Value
from PIL import Image

from .collate import check_caption
from .schema import NO_PAIR, video_text_features

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
_VIDEO_KEYS = ("video", "video_path", "path")
_CAPTION_KEYS = ("caption", "sentence", "text")


def uniform_indices(num_available: int, num_frames: int) -> list[int]:
    """Indices of ``num_frames`` frames spread evenly over ``num_available`` (segment midpoints; repeats if short)."""
    if num_available <= 0:
        raise ValueError(f"`num_available` must be positive (a video with no frames?), got {num_available}")
    if num_frames <= 0:
        raise ValueError(f"`num_frames` must be positive, got {num_frames}")
    return [min(num_available - 1, int((i + 0.5) * num_available / num_frames)) for i in range(num_frames)]


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic), centre-crop to ``size`` x ``size``: (size, size, 3) uint8."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


class VideoReadError(ValueError):
    """A video file or frame folder that cannot be read (corrupt, truncated, no video stream, no timestamps).

    The message names the file. Callers that process many videos catch this one type to skip bad videos without
    hiding other errors (a bad argument, a model failure).
    """


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The images of a frame folder in natural order (frame_2 before frame_10): one video, one image per frame."""
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise VideoReadError(f"frame folder {folder} holds no images with extensions {IMAGE_EXTENSIONS}")
    return files


def _frames_from_folder(folder: Path, num_frames: int, image_size: int) -> np.ndarray:
    files = frame_files(folder)
    chosen = [files[i] for i in uniform_indices(len(files), num_frames)]
    frames = []
    for path in chosen:
        with Image.open(path) as image:
            frames.append(resize_center_crop(image, image_size))
    return np.stack(frames)


def _frames_from_file(path: Path, num_frames: int, image_size: int) -> np.ndarray:
    try:
        import av
    except ImportError as error:  # pragma: no cover - av ships with the test environment
        raise ImportError("decoding video files needs PyAV: `pip install av`") from error
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"video file {path} has no video stream")
        stream = container.streams.video[0]
        declared = stream.frames
        if declared > 0:  # decode only up to the last frame needed; keep only the sampled ones
            wanted = uniform_indices(declared, num_frames)
            kept: dict[int, np.ndarray] = {}
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    kept[index] = resize_center_crop(frame.to_image(), image_size)
                if index >= wanted[-1]:
                    break
            if len(kept) == len(set(wanted)):
                return np.stack([kept[i] for i in wanted])
            container.seek(0)  # the header over-counted the frames: fall back to decoding them all
        images = [resize_center_crop(frame.to_image(), image_size) for frame in container.decode(stream)]
    if not images:
        raise ValueError(f"video file {path} decoded to no frames")
    return np.stack([images[i] for i in uniform_indices(len(images), num_frames)])


def _open_video(path: Path) -> Any:
    try:
        import av
    except ImportError as error:  # pragma: no cover - av ships with the test environment
        raise ImportError("decoding video files needs PyAV: `pip install av`") from error
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise VideoReadError(
            f"video file {path} cannot be opened (corrupt or not a video?): {error}"
        ) from error
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"video file {path} has no video stream (truncated or not a video?)")
    return container


def video_frame_times(path: str | Path) -> np.ndarray:
    """Presentation times (seconds, the stream's own clock, ascending) of every frame of a video file's first video
    stream, read from the container's packets without decoding them (fast even for long videos).

    Times are ``pts * time_base`` exactly as :func:`decode_frames_at` computes them, so they can be passed back to
    it. Packets the demuxer marks as discarded (edit lists) are left out. Raises :class:`VideoReadError` naming the
    file when it cannot be demuxed, holds no frames, holds fewer frames than an mp4/mov sample table lists (a
    truncated download), or has frames without timestamps (raw streams: remux them into mp4/mkv first, e.g.
    ``ffmpeg -i in.h264 -c copy out.mkv``).
    """
    import av

    path = Path(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        pts, stored = [], 0
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            stored += 1
            # before an edit list's start (a cut made without re-encoding); older PyAV may lack the flag
            if getattr(packet, "is_discard", False):
                continue
            if packet.pts is None:
                raise VideoReadError(
                    f"video file {path} has frames without timestamps (a raw stream?); remux it into mp4/mkv"
                )
            pts.append(packet.pts)
        time_base = stream.time_base
        # mp4 / mov list every frame in their sample table: fewer packets means the file was cut short
        if "mp4" in container.format.name.split(",") and 0 < stored < stream.frames:
            raise VideoReadError(
                f"video file {path} lists {stream.frames} frames but holds only {stored} (truncated file?)"
            )
    except av.FFmpegError as error:
        raise VideoReadError(f"video file {path} cannot be demuxed (corrupt stream?): {error}") from error
    finally:
        container.close()
    if not pts:
        raise VideoReadError(f"video file {path} holds no video frames (truncated or empty?)")
    return np.array([float(p * time_base) for p in sorted(pts)], dtype=np.float64)


def decode_frames_at(path: str | Path, times: Sequence[float], image_size: int) -> np.ndarray:
    """(len(times), image_size, image_size, 3) uint8: for each time (from :func:`video_frame_times`), the first
    decoded frame shown at or after it, resized and centre-cropped like :func:`load_frames`.

    One pass of the decoder (threaded), stopping after the last time asked for; only the chosen frames are
    converted. Times may repeat and come in any order. A frame the decoder drops is replaced by the next one; a
    stream that ends before the last time asked for, or a packet the decoder rejects, raises
    :class:`VideoReadError` naming the file.
    """
    import av

    path = Path(path)
    if len(times) == 0:
        raise ValueError("`times` must name at least one frame time, got none")
    order = sorted(range(len(times)), key=lambda i: times[i])
    out = np.empty((len(times), image_size, image_size, 3), dtype=np.uint8)
    container = _open_video(path)
    position, shown = 0, -float("inf")
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            shown = float(frame.pts * time_base)
            if shown < times[order[position]]:
                continue
            image = resize_center_crop(frame.to_image(), image_size)
            while position < len(order) and times[order[position]] <= shown:
                out[order[position]] = image
                position += 1
            if position == len(order):
                break
    except av.FFmpegError as error:
        raise VideoReadError(f"video file {path} cannot be decoded (corrupt stream?): {error}") from error
    finally:
        container.close()
    if position < len(order):
        raise VideoReadError(
            f"video file {path}: the decoded stream ends at t={shown:.3f}s, before the frame at "
            f"t={times[order[position]]:.3f}s its container lists (truncated or corrupt stream)"
        )
    return out


def load_frame_images(files: Sequence[str | Path], image_size: int) -> np.ndarray:
    """(len(files), image_size, image_size, 3) uint8 from image files, resized and centre-cropped like
    :func:`load_frames`; an image that cannot be read raises :class:`VideoReadError` naming it."""
    out = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                out[i] = resize_center_crop(image, image_size)
        except OSError as error:  # PIL.UnidentifiedImageError and truncated files are OSErrors
            raise VideoReadError(f"frame image {file} cannot be read (corrupt?): {error}") from error
    return out


@lru_cache(maxsize=8)
def load_frames(video: str, num_frames: int, image_size: int) -> np.ndarray:
    """(num_frames, image_size, image_size, 3) uint8 frames sampled uniformly from a video file or frame folder.

    Cached for the last few videos, since captioned datasets list each video several times in a row.
    """
    path = Path(video)
    if path.is_dir():
        return _frames_from_folder(path, num_frames, image_size)
    if path.is_file():
        return _frames_from_file(path, num_frames, image_size)
    raise FileNotFoundError(f"video {video!r} is neither a video file nor a folder of frames")


def read_annotations(
    annotations: str | Path | Iterable[dict[str, Any]], video_root: str | Path | None = None
) -> list[dict[str, str]]:
    """Annotation records -> [{"video_id", "video" (path), "caption"}].

    Accepts a list of dicts, a ``.json`` list (or MSR-VTT's ``{"sentences": [...]}`` file), ``.jsonl`` or ``.csv``.
    Each record names its video by ``video``/``video_path``/``path`` or by ``video_id`` (looked up under
    ``video_root`` as a folder or a file with a video extension) and its text by ``caption``/``sentence``/``text``.
    """
    records = _load_records(annotations)
    root = Path(video_root) if video_root is not None else None
    if root is None and isinstance(annotations, (str, Path)):
        root = Path(annotations).parent
    rows = []
    for number, record in enumerate(records):
        video_id = record.get("video_id")
        name = f"annotation {number}" + (f" (video_id {video_id!r})" if video_id is not None else "")
        caption = next((record[k] for k in _CAPTION_KEYS if k in record), None)
        if caption is None and not any(k in record for k in _CAPTION_KEYS):
            raise ValueError(f"{name} needs a text field ({'/'.join(_CAPTION_KEYS)}); got {record!r}")
        check_caption(caption, name)
        video = next((record[k] for k in _VIDEO_KEYS if record.get(k) is not None), None)
        if video is None and video_id is None:
            raise ValueError(
                f"annotation {number} needs a video field ({'/'.join(_VIDEO_KEYS)}) or `video_id`; got {record!r}"
            )
        path = _resolve_video(
            str(video) if video is not None else None, str(video_id) if video_id else None, root
        )
        rows.append(
            {
                "video_id": str(video_id) if video_id is not None else path.stem,
                "video": str(path),
                "caption": caption,
            }
        )
    if not rows:
        source = f"file {str(annotations)!r}" if isinstance(annotations, (str, Path)) else "iterable"
        raise ValueError(f"`annotations` {source} holds no records")
    return rows


def load_video_text_dataset(
    annotations: str | Path | Iterable[dict[str, Any]],
    video_root: str | Path | None = None,
    num_frames: int = 8,
    image_size: int = 224,
    split: str = "train",
    lazy: bool = False,
    cache_file_name: str | None = None,
    skip_bad_videos: bool = False,
) -> Dataset:
    """A Dataset with the synthetic world's columns from MSR-VTT-style annotations (see ``read_annotations``).

    ``lazy=False`` decodes every video once now (``cache_file_name`` puts the frames on disk, memory-mapped).
    ``lazy=True`` stores the video path and decodes on access (rows read out have the same keys), for corpora
    whose frames would not fit in memory or on disk, such as MSR-VTT's 20 captions per video.

    A video that cannot be decoded raises a ``ValueError`` naming its file and ``video_id``; with
    ``skip_bad_videos=True`` (not with ``lazy``, which decodes only on access) its records are left out instead and
    one warning gives their number and ids.
    """
    for name, value in (("num_frames", num_frames), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    if skip_bad_videos and lazy:
        raise ValueError("`skip_bad_videos=True` needs `lazy=False`: a lazy dataset decodes only on access")
    rows = read_annotations(annotations, video_root)
    table = {
        "video_id": [r["video_id"] for r in rows],
        "caption": [r["caption"] for r in rows],
        "video": [r["video"] for r in rows],
        "order_pair_id": [NO_PAIR] * len(rows),
        "split": [split] * len(rows),
    }
    features = video_text_features(num_frames, image_size, image_size)
    dataset = Dataset.from_dict(table)
    if lazy:
        dataset.set_transform(_Decoder(num_frames, image_size))
        return dataset
    features[_DECODED] = Value("bool")
    dataset = dataset.map(
        _Decoder(num_frames, image_size, skip_bad=skip_bad_videos),
        batched=True,
        batch_size=16,
        features=features,
        remove_columns=["video"],
        cache_file_name=cache_file_name,
        desc="decoding videos",
    )
    bad = [video_id for video_id, ok in zip(dataset["video_id"], dataset[_DECODED], strict=True) if not ok]
    if bad:
        dataset = dataset.filter(lambda ok: ok, input_columns=_DECODED)
        logger.warning(
            "skipped %d of %d records whose videos could not be decoded (skip_bad_videos=True): video_ids %s",
            len(bad),
            len(rows),
            sorted(set(bad)),
        )
        if len(dataset) == 0:
            raise ValueError(f"no video of the {len(rows)} records could be decoded")
    dataset = dataset.remove_columns(_DECODED)
    dataset.set_format("numpy", columns=["frames"], output_all_columns=True, dtype=np.uint8)
    return dataset


_DECODED = "_decoded"


class _Decoder:
    """Batch transform: the ``video`` column -> ``frames`` (picklable, so ``map`` can fingerprint it). With
    ``skip_bad`` an undecodable video gives black frames and ``_decoded`` False, for the caller to filter out."""

    def __init__(self, num_frames: int, image_size: int, skip_bad: bool | None = None) -> None:
        self.num_frames, self.image_size, self.skip_bad = num_frames, image_size, skip_bad

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {k: v for k, v in batch.items() if k != "video"}
        out["frames"], decoded = [], []
        for video, video_id in zip(batch["video"], batch["video_id"], strict=True):
            try:
                out["frames"].append(load_frames(video, self.num_frames, self.image_size).copy())
                decoded.append(True)
            except (OSError, ValueError) as error:
                if not self.skip_bad:
                    kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
                    raise kind(
                        f"cannot decode video {video!r} (video_id {video_id!r}): {error}; pass skip_bad_videos=True "
                        "to leave such records out"
                    ) from error
                out["frames"].append(
                    np.zeros((self.num_frames, self.image_size, self.image_size, 3), np.uint8)
                )
                decoded.append(False)
        if self.skip_bad is not None:  # the eager path keeps the flag as a column
            out[_DECODED] = decoded
        return out


def _load_records(annotations: str | Path | Iterable[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    if not isinstance(annotations, (str, Path)):
        records = list(annotations)
        if not all(isinstance(r, dict) for r in records):
            raise ValueError("`annotations` given as an iterable must yield dicts")
        return records
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(f"`annotations` file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [_parse_json(line, path, number) for number, line in enumerate(handle, 1) if line.strip()]
    if suffix == ".json":
        data = _parse_json(path.read_text(encoding="utf-8"), path)
        if isinstance(data, dict) and isinstance(data.get("sentences"), list):
            return data["sentences"]
        if isinstance(data, list):
            return data
        raise ValueError(f"`annotations` JSON {path} must be a list of records or have a 'sentences' list")
    raise ValueError(f"`annotations` must be a .json, .jsonl or .csv file, got {str(path)!r}")


def _parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """``json.loads`` with an error that names the file (and line of a JSONL file) and what was wrong."""
    where = f"{path}" + (f", line {line}" if line is not None else "")
    if not text.strip():
        raise ValueError(f"`annotations` file {where} is empty: expected JSON records")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`annotations` file {where} is not valid JSON: {error}") from error


def _resolve_video(video: str | None, video_id: str | None, root: Path | None) -> Path:
    if video is not None:
        path = Path(video)
        return path if path.is_absolute() or root is None else root / path
    base = root if root is not None else Path(".")
    candidates = [base / video_id, *(base / f"{video_id}{ext}" for ext in VIDEO_EXTENSIONS)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no video or frame folder for video_id {video_id!r} under {str(base)!r}")
