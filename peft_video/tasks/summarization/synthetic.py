"""The synthetic summarization world: videos of two events, transcripts that talk around them, summaries that name them.

A video shows two events one after the other; in each, one flat shape of one colour crosses the canvas in one
direction (left, right, up or down) over :data:`EVENT_CLIPS` clips, drawn by the shared renderer
(:mod:`peft_video.data.render`). Its transcript is what a presenter says over it: the topic of the channel and
filler ("watch this one ... it goes over there ... and then the next one"), never the colour, the shape, the
direction or which came first. The reference summary names them::

    cooking clip : first the red circle moves left then the blue square moves up

So a text-only model can get the topic and the frame of the sentence right, but not the six words only the video
supplies (:data:`VIDEO_ONLY_WORDS`), and a model that cannot tell the order of the clips cannot tell "first" from
"then" (:func:`order_correct`). Colours, shapes, directions and topics are drawn independently and uniformly, so
neither the transcript nor the prior predicts them. Clip features come from the shipped tiny CLIP through the
feature extractor (one 64-wide feature per clip, the clip's centre frame). Everything is deterministic given the
seed; example ``i`` of a split does not depend on how many are drawn.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...data.render import background, coverage, paint, to_uint8
from ...data.synthetic import COLOURS as PALETTE
from ...data.synthetic import SIZES
from .data import SummarizationRecord

__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "EVENT_CLIPS",
    "SHAPES",
    "SPLITS",
    "TOPICS",
    "VIDEO_ONLY_CHANCE",
    "VIDEO_ONLY_WORDS",
    "InMemoryFeatures",
    "SyntheticExample",
    "build_split",
    "clauses",
    "make_example",
    "mentioned_objects",
    "names_both",
    "order_correct",
    "pretraining_texts",
    "video_only_share",
    "vocabulary",
]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
TOPICS: tuple[str, ...] = ("cooking", "painting", "music", "garden", "science", "sports")
VIDEO_ONLY_WORDS: frozenset[str] = frozenset((*COLOURS, *SHAPES, *DIRECTIONS))
"""Words of a reference summary that only the video can supply."""
VIDEO_ONLY_CHANCE = 100 * (1 / len(COLOURS) + 1 / len(SHAPES) + 1 / len(DIRECTIONS)) / 3
"""Expected :func:`video_only_share` (percent) of a summary that cannot see the video."""
EVENT_CLIPS = 3
"""Clips per event (one frame each): the shape's start, middle and end of its crossing."""
SPLITS: tuple[str, ...] = ("train", "validation", "test", "pretrain")
"""``pretrain`` is text only (the tiny backbones' denoising pretraining)."""
IMAGE_SIZE = 32

_OPENINGS = (
    "hi and welcome back to my {topic} channel",
    "hello everyone this is another {topic} clip",
    "okay so today on the {topic} show",
    "welcome to a short {topic} lesson",
)
_MIDDLES = (
    "first watch this one closely it goes that way",
    "look at this one here see where it goes",
    "so i take this one and it moves over there",
    "keep your eyes on this one as it slides along",
)
_LINKS = (
    "and then the next one does its thing",
    "after that the other one comes along",
    "then we have one more that goes over there",
    "and finally the second one moves too",
)
_CLOSINGS = (
    "thanks for watching",
    "see you next time",
    "that is all for now",
    "please like and subscribe",
)
_TOPIC_WORDS = {
    "cooking": "kitchen recipe",
    "painting": "brush canvas",
    "music": "guitar song",
    "garden": "plants soil",
    "science": "lab experiment",
    "sports": "ball team",
}


@dataclass(frozen=True)
class Event:
    """One shape of one colour crossing the canvas in one direction."""

    colour: str
    shape: str
    direction: str

    @property
    def phrase(self) -> str:
        return f"the {self.colour} {self.shape} moves {self.direction}"


@dataclass(frozen=True)
class SyntheticExample:
    """A video's id, its events in order, its topic, the presenter's transcript and the reference summary."""

    id: str
    events: tuple[Event, Event]
    topic: str
    transcript: str
    summary: str

    def record(self) -> SummarizationRecord:
        return SummarizationRecord(self.id, self.transcript, self.summary)

    def clip_frames(self, seed: int = 0) -> np.ndarray:
        """(2 * EVENT_CLIPS, 1, 32, 32, 3) uint8: one frame per clip, as the feature extractor reads them."""
        rng = _rng(seed, "frames", self.id)
        frames = []
        for event in self.events:
            radius = SIZES["large"] * IMAGE_SIZE
            across = rng.uniform(0.3, 0.7) * IMAGE_SIZE
            start, end = 0.2 * IMAGE_SIZE, 0.8 * IMAGE_SIZE
            for k in range(EVENT_CLIPS):
                along = start + (end - start) * (k + 0.5) / EVENT_CLIPS
                if event.direction in ("left", "up"):
                    along = IMAGE_SIZE - along
                cx, cy = (along, across) if event.direction in ("left", "right") else (across, along)
                canvas = background(rng, IMAGE_SIZE, level=40.0)
                paint(canvas, coverage(event.shape, IMAGE_SIZE, cx, cy, radius), PALETTE[event.colour])
                frames.append(to_uint8(canvas))
        return np.stack(frames)[:, None]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")


def make_example(split: str, index: int, seed: int = 0) -> SyntheticExample:
    """Example ``index`` of ``split`` (deterministic in ``seed``, ``split`` and ``index``)."""
    _check_split(split)
    rng = _rng(seed, split, str(index))
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    first = Event(pick(COLOURS), pick(SHAPES), pick(DIRECTIONS))
    while True:
        second = Event(pick(COLOURS), pick(SHAPES), pick(DIRECTIONS))
        if (second.colour, second.shape) != (first.colour, first.shape):
            break
    topic = pick(TOPICS)
    transcript = " ".join(
        [
            pick(_OPENINGS).format(topic=topic),
            _TOPIC_WORDS[topic],
            pick(_MIDDLES),
            pick(_LINKS),
            pick(_CLOSINGS),
        ]
    )
    summary = f"{topic} clip : first {first.phrase} then {second.phrase}"
    return SyntheticExample(f"{split}{index:05d}", (first, second), topic, transcript, summary)


def vocabulary() -> list[str]:
    """Every word of the world's transcripts and summaries (the tiny tokenizers' vocabulary)."""
    words: list[str] = []
    texts = [*_OPENINGS, *_MIDDLES, *_LINKS, *_CLOSINGS, *_TOPIC_WORDS.values(), "clip first then the moves"]
    for text in texts:
        words.extend(re.findall(r"[a-z0-9]+", text.replace("{topic}", "")))
    words.extend([*COLOURS, *SHAPES, *DIRECTIONS, *TOPICS])
    return list(dict.fromkeys(words))


def pretraining_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` transcripts and summaries of the text-only ``pretrain`` split, interleaved (denoising data)."""
    texts = []
    for index in range((count + 1) // 2):
        example = make_example("pretrain", index, seed)
        texts.extend([example.transcript, example.summary])
    return texts[:count]


class InMemoryFeatures:
    """Features by record id (a callable record -> (T, D) tensor, like :class:`~.data.NpyFeatures`)."""

    def __init__(self, features: dict[str, np.ndarray], max_frames: int = 256) -> None:
        self.features, self.max_frames, self.truncated = features, max_frames, 0

    def __call__(self, record: SummarizationRecord) -> torch.Tensor:
        if record.id not in self.features:
            raise KeyError(f"no features for video {record.id!r}")
        array = self.features[record.id]
        if array.shape[0] > self.max_frames:
            self.truncated += 1
            array = array[: self.max_frames]
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def build_split(
    split: str, count: int, *, seed: int = 0, extractor: Any = None
) -> tuple[list[SyntheticExample], InMemoryFeatures]:
    """``count`` examples of ``split`` and their clip features from ``extractor`` (anything with
    ``features_from_frames``; default: the feature extractor on the shipped tiny CLIP, on the CPU)."""
    if split == "pretrain":
        raise ValueError("the `pretrain` split is text only; use pretraining_texts()")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"`count` must be a positive integer, got {count!r}")
    if extractor is None:
        from ..features import ClipFeatureExtractor

        extractor = ClipFeatureExtractor(None, device="cpu")
    examples = [make_example(split, index, seed) for index in range(count)]
    frames = np.concatenate([example.clip_frames(seed) for example in examples])
    features = extractor.features_from_frames(frames)
    clips = 2 * EVENT_CLIPS
    by_id = {example.id: features[i * clips : (i + 1) * clips] for i, example in enumerate(examples)}
    return examples, InMemoryFeatures(by_id)


# ------------------------------------------------------------------------------------------------------ scoring


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def clauses(text: str) -> list[tuple[str, str, str]]:
    """The "<colour> <shape> moves <direction>" clauses of a summary, in order (other words in a slot are kept, so
    a wrong word counts as wrong)."""
    words = _words(text)
    return [
        (words[i - 2], words[i - 1], words[i + 1])
        for i, word in enumerate(words)
        if word == "moves" and 2 <= i < len(words) - 1
    ]


def video_only_share(prediction: str, example: SyntheticExample) -> float:
    """Share of the six video-only slots (colour, shape, direction of the first and of the second event) that the
    prediction fills with the right word: its i-th "<colour> <shape> moves <direction>" clause against event i.
    A constant or text-only guess gets (1/4 + 1/3 + 1/4) / 3 = 27.8% in expectation (:data:`VIDEO_ONLY_CHANCE`)."""
    said = clauses(prediction)
    hits = 0
    for index, event in enumerate(example.events):
        if index < len(said):
            hits += sum(
                a == b for a, b in zip(said[index], (event.colour, event.shape, event.direction), strict=True)
            )
    return hits / (3 * len(example.events))


def mentioned_objects(text: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a summary names, in order ("the red circle ..." -> ("red", "circle"))."""
    words = _words(text)
    return [(a, b) for a, b in zip(words, words[1:], strict=False) if a in COLOURS and b in SHAPES]


def names_both(prediction: str, example: SyntheticExample) -> bool:
    """Whether the prediction names both of the video's objects (colour and shape)."""
    named = set(mentioned_objects(prediction))
    return all((event.colour, event.shape) in named for event in example.events)


def order_correct(prediction: str, example: SyntheticExample) -> bool | None:
    """Whether the prediction puts the video's two objects in the right order: of its mentions of them, the first
    is the first event's; None when it does not name both (order cannot be judged; chance is 50% otherwise)."""
    if not names_both(prediction, example):
        return None
    wanted = [(event.colour, event.shape) for event in example.events]
    named = [pair for pair in mentioned_objects(prediction) if pair in wanted]
    return named[0] == wanted[0]


def examples_by_id(examples: Sequence[SyntheticExample]) -> dict[str, SyntheticExample]:
    return {example.id: example for example in examples}
