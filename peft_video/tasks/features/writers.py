"""Write clip and query features in the layouts public grounding and summarization code reads, resumably.

* ``layout="moment_detr"`` (Moment-DETR, QVHighlights and their descendants): ``{vid}.npz`` holding ``features``
  (num_clips, D) float32.
* ``layout="how2"`` (VG-GPLMs' VG-BART / VG-T5 on How2): ``{id}.npy``, a (num_clips, D) float32 array. (VG-GPLMs'
  own loader pads into a fixed width of 2048, its ResNeXt features; our summarization task reads D from the file.)
* Queries: ``qid{qid}.npz`` holding ``last_hidden_state`` (L, W) and ``pooler_output`` (D,), both float32.

The video id is the file name without its last extension (``RoripwjYFp8_60.0_210.0.mp4`` ->
``RoripwjYFp8_60.0_210.0``) or the frame folder's name, unless a mapping ``{id: path}`` names it.
Every file is written to a hidden temporary name beside it and renamed into place, so an interrupted run leaves
no partial file under the real name; a later run skips the files that exist (unless ``overwrite``). Each run
returns an :class:`ExtractionReport` with the ids written, skipped (already there) and failed (unreadable videos,
with ``skip_bad=True``; without it the first one raises a :class:`~peft_video.data.real.VideoReadError` naming
the video id and file).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ...data.real import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReadError
from .extractor import ClipFeatureExtractor, load_clip_frames

logger = logging.getLogger(__name__)

LAYOUTS = ("moment_detr", "how2")


@dataclass
class ExtractionReport:
    """What one run did: ids written, skipped (output already there) and failed (id -> the reason)."""

    output_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the counts, and the failed ids if any."""
        line = (
            f"{self.output_dir}: written {len(self.written)}, skipped {len(self.skipped)} (already there), "
        )
        line += f"failed {len(self.failed)}"
        return line + (f": {', '.join(self.failed)}" if self.failed else "")


def output_name(item_id: str, layout: str) -> str:
    """The file name a video (``moment_detr`` / ``how2``) or a query (``layout="query"``) is written to."""
    if layout == "moment_detr":
        return f"{item_id}.npz"
    if layout == "how2":
        return f"{item_id}.npy"
    if layout == "query":
        return f"qid{item_id}.npz"
    raise ValueError(f"`layout` must be one of {list(LAYOUTS)}, got {layout!r}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a hidden temporary file beside ``path``, then rename it to ``path`` (atomic on one file
    system); if ``write`` fails, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_id(item_id: str, what: str) -> str:
    if not item_id or item_id in (".", "..") or "/" in item_id or "\\" in item_id or "\0" in item_id:
        raise ValueError(f"{what} id {item_id!r} cannot be a file name (empty, a path, or '.'/'..')")
    return item_id


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file())


def collect_videos(videos: str | Path | Sequence[str | Path] | Mapping[str, str | Path]) -> dict[str, Path]:
    """``{video id: path}`` from a mapping, or from paths: a video file, a frame folder (a folder holding images),
    or a directory of them (its video files, by extension, and its sub-folders holding images, sorted by name).

    Missing paths, directories with no videos and two videos with one id raise errors naming them.
    """
    if isinstance(videos, Mapping):
        found: dict[str, Path] = {}
        for item_id, path in videos.items():
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"video {item_id!r}: {str(path)!r} does not exist")
            found[_check_id(str(item_id), "video")] = path
        return found
    paths = [videos] if isinstance(videos, (str, Path)) else list(videos)
    found = {}
    for path in map(Path, paths):
        if path.is_file():
            entries = [path]
        elif path.is_dir() and _has_images(path):
            entries = [path]
        elif path.is_dir():
            entries = sorted(
                p
                for p in path.iterdir()
                if (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or (p.is_dir() and _has_images(p))
            )
            if not entries:
                raise ValueError(
                    f"`videos` directory {str(path)!r} holds no video files ({', '.join(VIDEO_EXTENSIONS)}) and "
                    "no frame folders (sub-folders of images)"
                )
        else:
            raise FileNotFoundError(f"`videos` path {str(path)!r} does not exist")
        for entry in entries:
            item_id = _check_id(entry.stem if entry.is_file() else entry.name, "video")
            if item_id in found and found[item_id] != entry:
                raise ValueError(
                    f"two videos have the id {item_id!r}: {str(found[item_id])!r} and {str(entry)!r}"
                )
            found[item_id] = entry
    if not found:
        raise ValueError("`videos` names no videos")
    return found


class _ClipFrameSource(Dataset):
    """Decoding as a Dataset, so a DataLoader's workers can decode the next videos while the model runs; a video
    that cannot be read comes back as its error instead of its frames."""

    def __init__(
        self, items: list[tuple[str, Path]], extractor: ClipFeatureExtractor, fps: float | None
    ) -> None:
        self.items = items
        self.clip_length, self.frames_per_clip = extractor.clip_length, extractor.frames_per_clip
        self.image_size, self.fps = extractor.image_size, fps

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray | VideoReadError]:
        item_id, path = self.items[index]
        try:
            _, frames = load_clip_frames(
                path, self.clip_length, self.frames_per_clip, self.image_size, self.fps
            )
        except VideoReadError as error:
            return item_id, error
        return item_id, frames


def _as_is(item: Any) -> Any:
    return item


def extract_video_features(
    videos: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
    output_dir: str | Path,
    layout: str = "moment_detr",
    *,
    extractor: ClipFeatureExtractor | None = None,
    fps: float | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    **extractor_kwargs: Any,
) -> ExtractionReport:
    """Write one (num_clips, D) feature file per video into ``output_dir`` in ``layout`` (see the module docstring).

    ``videos`` is anything :func:`collect_videos` takes; ``fps`` is the frame rate of frame folders. Pass a ready
    ``extractor`` or its arguments (``backbone``, ``clip_length``, ``frames_per_clip``, ``batch_size``, ``device``,
    ``normalize``, ...). ``num_workers`` > 0 decodes videos in that many worker processes. An unreadable video
    raises :class:`~peft_video.data.real.VideoReadError` naming its id and file, or with ``skip_bad=True`` is
    logged, counted and listed in the report's ``failed``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {list(LAYOUTS)}, got {layout!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"`num_workers` must be a non-negative integer, got {num_workers!r}")
    found = collect_videos(videos)
    folders = [str(path) for path in found.values() if path.is_dir()]
    if folders and fps is None:
        raise ValueError(
            f"frame folders need `fps` (how many of their images make one second): {', '.join(folders)}"
        )
    extractor = _extractor(extractor, extractor_kwargs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport(output_dir)
    todo = []
    for item_id, path in found.items():
        if not overwrite and (output_dir / output_name(item_id, layout)).exists():
            report.skipped.append(item_id)
        else:
            todo.append((item_id, path))
    loader = DataLoader(
        _ClipFrameSource(todo, extractor, fps), batch_size=None, num_workers=num_workers, collate_fn=_as_is
    )
    with tqdm(loader, total=len(todo), desc="clip features", unit="video", disable=not progress) as bar:
        for item_id, frames in bar:
            if isinstance(frames, VideoReadError):
                message = f"video {item_id!r}: {frames}"  # the error itself names the file
                if not skip_bad:
                    raise VideoReadError(message) from frames
                logger.warning("skipping unreadable %s", message)
                report.failed[item_id] = message
            else:
                features = extractor.features_from_frames(frames)
                target = output_dir / output_name(item_id, layout)
                if layout == "moment_detr":
                    atomic_write(target, lambda handle, f=features: np.savez(handle, features=f))
                else:
                    atomic_write(target, lambda handle, f=features: np.save(handle, f))
                report.written.append(item_id)
            bar.set_postfix(
                written=len(report.written), skipped=len(report.skipped), failed=len(report.failed)
            )
    logger.info("clip features: %s", report.summary())
    return report


def read_queries(queries: str | Path | Mapping[Any, str] | Iterable[dict[str, Any]]) -> dict[str, str]:
    """``{qid: query}`` from a mapping, records with ``qid`` and ``query``, or a ``.jsonl`` file of such records
    (QVHighlights' annotation files). A qid listed twice with different texts raises an error naming it."""
    if isinstance(queries, Mapping):
        records: list[dict[str, Any]] = [{"qid": k, "query": v} for k, v in queries.items()]
        where = "`queries`"
    elif isinstance(queries, (str, Path)):
        path = Path(queries)
        if not path.is_file():
            raise FileNotFoundError(f"`queries` file {str(path)!r} does not exist")
        records, where = [], str(path)
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"`queries` file {path} line {number} is not JSON: {error}") from error
    else:
        records, where = list(queries), "`queries`"
    found: dict[str, str] = {}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or "qid" not in record or not isinstance(record.get("query"), str):
            raise ValueError(f"{where} record {number} needs `qid` and a string `query`, got {record!r}")
        qid = _check_id(str(record["qid"]), "query")
        if qid in found and found[qid] != record["query"]:
            raise ValueError(
                f"{where} lists qid {qid!r} twice with different queries: {found[qid]!r} and {record['query']!r}"
            )
        found[qid] = record["query"]
    if not found:
        raise ValueError(f"{where} holds no queries")
    return found


def extract_text_features(
    queries: str | Path | Mapping[Any, str] | Iterable[dict[str, Any]],
    output_dir: str | Path,
    *,
    extractor: ClipFeatureExtractor | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **extractor_kwargs: Any,
) -> ExtractionReport:
    """Write ``qid{qid}.npz`` (``last_hidden_state`` (L, W), ``pooler_output`` (D,)) per query into ``output_dir``.

    ``queries`` is anything :func:`read_queries` takes; pass a ready ``extractor`` or its arguments. Texts are
    encoded ``batch_size`` at a time; existing files are skipped unless ``overwrite``.
    """
    found = read_queries(queries)
    extractor = _extractor(extractor, extractor_kwargs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport(output_dir)
    todo = []
    for qid in found:
        if not overwrite and (output_dir / output_name(qid, "query")).exists():
            report.skipped.append(qid)
        else:
            todo.append(qid)
    step = extractor.batch_size
    with tqdm(total=len(todo), desc="text features", unit="query", disable=not progress) as bar:
        for start in range(0, len(todo), step):
            qids = todo[start : start + step]
            for qid, text in zip(qids, extractor.encode_text([found[q] for q in qids]), strict=True):
                atomic_write(
                    output_dir / output_name(qid, "query"),
                    lambda handle, t=text: np.savez(
                        handle, last_hidden_state=t.last_hidden_state, pooler_output=t.pooler_output
                    ),
                )
                report.written.append(qid)
            bar.update(len(qids))
            bar.set_postfix(written=len(report.written), skipped=len(report.skipped))
    logger.info("text features: %s", report.summary())
    return report


def _extractor(extractor: ClipFeatureExtractor | None, kwargs: dict[str, Any]) -> ClipFeatureExtractor:
    if extractor is None:
        return ClipFeatureExtractor(**kwargs)
    if kwargs:
        raise ValueError(
            f"pass either a ready `extractor` or its arguments, not both (got extractor and {sorted(kwargs)})"
        )
    if not isinstance(extractor, ClipFeatureExtractor):
        raise ValueError(f"`extractor` must be a ClipFeatureExtractor, got {type(extractor).__name__}")
    return extractor
