"""A synthetic grounding world: long videos in which coloured shapes act one after another, with template queries.

A video is 24-40 clips of 2 s. Three or four *events* happen in sequence with gaps of empty background between
them: a shape moves left to right / right to left / up / down, grows / shrinks, or moves towards / away from
another shape (the events and captions of :mod:`peft_video.data.synthetic`). Each distinct event caption is a
query ("a small red circle moves left to right") whose window(s) in seconds are where it happens; three simulated
annotators score every clip of a window 0..4 (the middle of an event is "very good", its first and last clip
"good", each annotator with a bias and random disagreement), as QVHighlights' annotators do.

About half the videos hold an *order pair*: the same shape does one event and, later, its reverse ("moves left to
right", then "moves right to left"); one clip's feature shows a shape at one place, so only the order of clips
tells these two queries' windows apart (``extra["order_dependent"]``). A query whose event happens twice in one
video gets both windows.

Domains: ``source`` (horizontal and vertical moves of red, green, blue and yellow shapes; 600 training videos) pretrains the shipped
tiny grounding model; the targets, each a low-resource task like a YouTube Highlights domain (40 training videos),
bring new events (``size``: grows / shrinks; ``approach``: moves towards / away from another shape, each video
also holding one source-like move now and then) or new attributes (``colours``: the source's moves by purple and
white shapes, colours the grounding model has never grounded). Every domain has ``train``, ``validation`` and
``test`` splits; everything is a deterministic function of ``seed``, and video ``i`` of a split does not depend
on how many videos are drawn.

Features come from the clip-feature extractor (:class:`peft_video.tasks.features.ClipFeatureExtractor` over the
shipped tiny CLIP), exactly as it computes them for files (one per clip: the projected embedding of the clip's
centre frame; queries: the text tower's per-token states), from frames rendered in memory
(``features_from_frames``); :meth:`SyntheticVideo.frames` renders the same video at any frame rate for writing it
to a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...data.render import SHAPES, background, coverage, paint, to_uint8
from ...data.synthetic import COLOURS, SIZES, SceneObject, event_captions
from .data import GroundingDataset, InMemoryFeatures, parse_record

__all__ = [
    "CLIP_LENGTH",
    "DEFAULT_SIZES",
    "DOMAINS",
    "SPLITS",
    "TARGET_DOMAINS",
    "Event",
    "GroundingDomain",
    "SyntheticVideo",
    "build_split",
    "build_world",
    "make_video",
    "video_records",
]

CLIP_LENGTH = 2.0
"""Seconds per clip, as QVHighlights."""
SPLITS: tuple[str, ...] = ("train", "validation", "test")
_MIN_CLIPS, _MAX_CLIPS = 24, 40
_EVENT_CLIPS = (3, 6)
_IMAGE_SIZE = 32


@dataclass(frozen=True)
class GroundingDomain:
    """Which events (families) and attributes a domain's videos draw from. ``extra_families`` are source-like
    events mixed in now and then (probability ``extra_probability`` per event) so a target video is not one family
    only."""

    name: str
    families: tuple[str, ...]
    colours: tuple[str, ...]
    shapes: tuple[str, ...] = SHAPES
    extra_families: tuple[str, ...] = ()
    extra_probability: float = 0.0


_SOURCE_COLOURS = ("red", "green", "blue", "yellow")
DOMAINS: dict[str, GroundingDomain] = {
    "source": GroundingDomain("source", ("horizontal", "vertical"), _SOURCE_COLOURS),
    "size": GroundingDomain(
        "size", ("size",), _SOURCE_COLOURS, extra_families=("horizontal", "vertical"), extra_probability=0.25
    ),
    "approach": GroundingDomain(
        "approach",
        ("approach",),
        _SOURCE_COLOURS,
        extra_families=("horizontal", "vertical"),
        extra_probability=0.25,
    ),
    "colours": GroundingDomain("colours", ("horizontal", "vertical"), ("purple", "white")),
}
TARGET_DOMAINS: tuple[str, ...] = ("size", "approach", "colours")
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "source": {"train": 600, "validation": 50, "test": 100},
    **{name: {"train": 40, "validation": 20, "test": 60} for name in TARGET_DOMAINS},
}
"""Videos per split: the source pretrains; each target is low-resource (40 training videos, like a YouTube
Highlights domain)."""


# ------------------------------------------------------------------------------------------------------ events

# A placed shape: (object, centre x, centre y, radius), fractions of the canvas side.
_Placed = tuple[SceneObject, float, float, float]


@dataclass(frozen=True)
class Event:
    """One event: ``family`` forwards (``forward``) or reversed, by ``subject`` (and ``other`` for ``approach``),
    over clips ``[start_clip, end_clip)``; ``params`` are its drawn geometry."""

    family: str
    forward: bool
    subject: SceneObject
    other: SceneObject
    start_clip: int
    end_clip: int
    params: tuple[float, ...]

    @property
    def query(self) -> str:
        forward, reverse = event_captions(self.family, self.subject, self.other)
        return forward if self.forward else reverse

    def window(self, clip_length: float = CLIP_LENGTH) -> tuple[float, float]:
        return self.start_clip * clip_length, self.end_clip * clip_length

    def same_act_reversed(self, other: Event) -> bool:
        """Whether ``other`` is this event's reverse by the same shapes (an order pair)."""
        return (
            self.family == other.family
            and self.subject == other.subject
            and (self.family != "approach" or self.other == other.other)
            and self.forward != other.forward
        )

    def placed(self, progress: float) -> list[_Placed]:
        """The shapes on screen at ``progress`` in [0, 1] through the event."""
        p = progress if self.forward else 1.0 - progress
        a, b = self.subject, self.other
        ra, rb = SIZES[a.size], SIZES[b.size]
        if self.family in ("horizontal", "vertical"):
            start, end, across = self.params
            along = start + (end - start) * p
            return [(a, along, across, ra)] if self.family == "horizontal" else [(a, across, along, ra)]
        if self.family == "size":
            x, y = self.params
            return [(a, x, y, 0.07 + (0.22 - 0.07) * p)]
        if self.family == "approach":
            side, xb, yb, ya, xa_far = self.params
            xa_near = xb - side * (ra + rb + 0.04)
            return [(b, xb, yb, rb), (a, xa_far + (xa_near - xa_far) * p, ya, ra)]
        raise ValueError(f"unknown event family {self.family!r}")


def _geometry(family: str, rng: np.random.Generator) -> tuple[float, ...]:
    if family in ("horizontal", "vertical"):
        return (float(rng.uniform(0.15, 0.3)), float(rng.uniform(0.7, 0.85)), float(rng.uniform(0.3, 0.7)))
    if family == "size":
        return tuple(float(v) for v in rng.uniform(0.35, 0.65, size=2))
    if family == "approach":
        side = 1.0 if rng.random() < 0.5 else -1.0  # the resting shape sits right (+1) or left (-1)
        yb = float(rng.uniform(0.35, 0.65))
        return (
            side,
            0.5 + side * 0.3,
            yb,
            float(np.clip(yb + rng.uniform(-0.1, 0.1), 0.2, 0.8)),
            0.5 - side * float(rng.uniform(0.35, 0.42)),
        )
    raise ValueError(f"unknown event family {family!r}")


def _shape(rng: np.random.Generator, domain: GroundingDomain, avoid: str | None = None) -> SceneObject:
    colours = [c for c in domain.colours if c != avoid] or list(COLOURS)
    return SceneObject(
        shape=domain.shapes[int(rng.integers(len(domain.shapes)))],
        colour=colours[int(rng.integers(len(colours)))],
        size=tuple(SIZES)[int(rng.integers(len(SIZES)))],
    )


# ------------------------------------------------------------------------------------------------------ videos


@dataclass(frozen=True)
class SyntheticVideo:
    """One video: its id, length in clips, events, and the seed of its background."""

    vid: str
    domain: str
    num_clips: int
    events: tuple[Event, ...]
    level: float
    noise_seed: tuple[int, ...] = field(default=())
    clip_length: float = CLIP_LENGTH
    image_size: int = _IMAGE_SIZE

    @property
    def duration(self) -> float:
        return self.num_clips * self.clip_length

    def frame(self, time: float) -> np.ndarray:
        """(S, S, 3) uint8 frame shown at ``time`` seconds: the active event's shapes on a noisy background."""
        rng = np.random.default_rng([*self.noise_seed, int(round(time * 1000))])
        canvas = background(rng, self.image_size, self.level)
        for event in self.events:
            start, end = event.window(self.clip_length)
            if start <= time < end:
                for obj, x, y, r in event.placed((time - start) / (end - start)):
                    size = self.image_size
                    paint(
                        canvas, coverage(obj.shape, size, x * size, y * size, r * size), COLOURS[obj.colour]
                    )
        return to_uint8(canvas)

    def clip_frames(self, frames_per_clip: int = 1) -> np.ndarray:
        """(num_clips, frames_per_clip, S, S, 3): each clip's frames at the midpoints of equal segments of the clip
        (one frame: its centre), the frames the feature extractor picks from a file of this video."""
        offsets = (np.arange(frames_per_clip) + 0.5) / frames_per_clip * self.clip_length
        return np.stack(
            [np.stack([self.frame(j * self.clip_length + o) for o in offsets]) for j in range(self.num_clips)]
        )

    def frames(self, fps: float) -> np.ndarray:
        """(N, S, S, 3): the whole video at ``fps`` frames per second (frame k shown at k / fps)."""
        count = int(round(self.duration * fps))
        return np.stack([self.frame(k / fps) for k in range(count)])


def _layout(rng: np.random.Generator, num_events: int) -> tuple[int, list[tuple[int, int]]]:
    """A video length in clips and the clip ranges of ``num_events`` events in order, at least one empty clip
    between two events."""
    lengths = rng.integers(_EVENT_CLIPS[0], _EVENT_CLIPS[1] + 1, size=num_events)
    needed = int(lengths.sum()) + num_events - 1
    num_clips = int(rng.integers(max(_MIN_CLIPS, needed), max(_MAX_CLIPS, needed) + 1))
    spare = num_clips - needed
    cuts = np.sort(rng.integers(0, spare + 1, size=num_events))
    gaps = np.diff(np.concatenate([[0], cuts]))  # extra empty clips before each event
    ranges, cursor = [], 0
    for i in range(num_events):
        start = cursor + int(gaps[i]) + (1 if i else 0)
        ranges.append((start, start + int(lengths[i])))
        cursor = start + int(lengths[i])
    return num_clips, ranges


def make_video(domain: str, split: str, index: int, seed: int = 0) -> SyntheticVideo:
    """Video ``index`` of ``split`` in ``domain`` (deterministic)."""
    if domain not in DOMAINS:
        raise ValueError(f"`domain` must be one of {sorted(DOMAINS)}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    spec = DOMAINS[domain]
    key = [seed, list(DOMAINS).index(domain), SPLITS.index(split), index]
    rng = np.random.default_rng(key)
    num_clips, ranges = _layout(rng, int(rng.integers(3, 5)))
    num_events = len(ranges)
    events: list[Event] = []
    for start, end in ranges:
        pool = (
            spec.extra_families
            if spec.extra_families and rng.random() < spec.extra_probability
            else spec.families
        )
        family = pool[int(rng.integers(len(pool)))]
        subject = _shape(rng, spec)
        other = _shape(rng, spec, avoid=subject.colour)
        events.append(
            Event(family, bool(rng.random() < 0.5), subject, other, start, end, _geometry(family, rng))
        )
    if rng.random() < 0.5:  # an order pair: a later event is an earlier one reversed, by the same shapes
        first, later = sorted(rng.choice(num_events, size=2, replace=False).tolist())
        base = events[first]
        start, end = ranges[later]
        events[later] = Event(
            base.family, not base.forward, base.subject, base.other, start, end, _geometry(base.family, rng)
        )
    vid = f"{domain}-{split}-{seed}-{index:05d}"
    return SyntheticVideo(vid, domain, num_clips, tuple(events), float(rng.uniform(0.0, 40.0)), tuple(key))


def _annotator_scores(
    rng: np.random.Generator, position: int, length: int, biases: Sequence[int]
) -> list[int]:
    """Three annotators' 0..4 scores of clip ``position`` of an event of ``length`` clips."""
    base = 3 if position in (0, length - 1) else 4
    scores = []
    for bias in biases:
        noise = int(rng.choice([-1, 0, 0, 0, 1]))
        scores.append(int(np.clip(base + bias + noise, 0, 4)))
    return scores


def video_records(video: SyntheticVideo, seed: int = 0) -> list[dict[str, Any]]:
    """QVHighlights-format annotation rows of a video's queries, one per distinct event caption, in event order.

    ``extra`` fields: ``domain``, ``order_dependent`` (another event of the video is this one reversed by the same
    shapes), ``family``.
    """
    rng = np.random.default_rng([*video.noise_seed, seed, 7])
    biases = (0, -1, int(rng.integers(-1, 1)))
    by_query: dict[str, list[Event]] = {}
    for event in video.events:
        by_query.setdefault(event.query, []).append(event)
    rows = []
    for k, (query, events) in enumerate(by_query.items()):
        clip_ids, scores = [], []
        for event in events:
            length = event.end_clip - event.start_clip
            for position, clip in enumerate(range(event.start_clip, event.end_clip)):
                clip_ids.append(clip)
                scores.append(_annotator_scores(rng, position, length, biases))
        rows.append(
            {
                "qid": f"{video.vid}-q{k}",
                "query": query,
                "duration": video.duration,
                "vid": video.vid,
                "relevant_windows": [list(e.window(video.clip_length)) for e in events],
                "relevant_clip_ids": clip_ids,
                "saliency_scores": scores,
                "domain": video.domain,
                "family": events[0].family,
                "order_dependent": any(e.same_act_reversed(o) for e in events for o in video.events),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------------- datasets


def build_split(
    domain: str,
    split: str,
    num_videos: int | None = None,
    *,
    seed: int = 0,
    encoder: Any = None,
    max_clips: int = 75,
) -> GroundingDataset:
    """The ``split`` of ``domain`` as a :class:`GroundingDataset` with features in memory.

    ``num_videos`` defaults to :data:`DEFAULT_SIZES`; ``encoder`` (anything with ``features_from_frames`` and
    ``encode_text``, e.g. :class:`~peft_video.tasks.features.ClipFeatureExtractor`) defaults to the extractor over the
    shipped tiny CLIP.
    """
    if num_videos is None:
        num_videos = DEFAULT_SIZES[domain][split]
    if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos <= 0:
        raise ValueError(f"`num_videos` must be a positive integer, got {num_videos!r}")
    if encoder is None:
        from ..features import ClipFeatureExtractor

        encoder = ClipFeatureExtractor()
    videos = [make_video(domain, split, i, seed) for i in range(num_videos)]
    rows = [row for video in videos for row in video_records(video, seed)]
    frames = np.concatenate([v.clip_frames() for v in videos])
    features = encoder.features_from_frames(frames)
    video_features, cursor = {}, 0
    for video in videos:
        video_features[video.vid] = features[cursor : cursor + video.num_clips]
        cursor += video.num_clips
    texts = sorted({row["query"] for row in rows})
    encoded = dict(zip(texts, encoder.encode_text(texts), strict=True))
    queries = {row["qid"]: encoded[row["query"]].last_hidden_state for row in rows}
    records = [parse_record(row, clip_length=CLIP_LENGTH) for row in rows]
    return GroundingDataset(
        records,
        InMemoryFeatures(video_features, queries),
        clip_length=CLIP_LENGTH,
        max_clips=max_clips,
        name=f"synthetic {domain}/{split}",
    )


def build_world(
    domains: Sequence[str] = tuple(DOMAINS),
    *,
    seed: int = 0,
    sizes: Mapping[str, Mapping[str, int]] | None = None,
    encoder: Any = None,
) -> dict[str, dict[str, GroundingDataset]]:
    """``{domain: {split: dataset}}`` for the given domains (all by default), sizes from ``sizes`` or
    :data:`DEFAULT_SIZES`."""
    if encoder is None:
        from ..features import ClipFeatureExtractor

        encoder = ClipFeatureExtractor()
    sizes = sizes or DEFAULT_SIZES
    return {
        domain: {
            split: build_split(domain, split, sizes[domain][split], seed=seed, encoder=encoder)
            for split in SPLITS
        }
        for domain in domains
    }
