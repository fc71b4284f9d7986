"""A synthetic video-text world in miniature: coloured shapes that move, grow, appear, approach each other.

Every video belongs to an *order-only pair*: its partner is the same frames in reverse order, captioned with the
reverse event ("moves left to right" / "moves right to left", "grows" / "shrinks", ...). A model that pools frames
without temporal modelling gives both videos of a pair identical features and is therefore at chance (50%) on them.
The ``test`` split holds out whole (colour, shape, event family) combinations that ``train`` never shows, while
every pair of those attributes does occur in training. Still frames with frame captions serve image-text
pretraining. Everything is deterministic given ``seed``; item ``i`` does not depend on how many items are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from .render import SHAPES, background, coverage, paint, to_uint8
from .schema import NO_PAIR, video_text_features

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 190, 70),
    "blue": (60, 100, 235),
    "yellow": (235, 215, 50),
    "purple": (165, 70, 210),
    "white": (235, 235, 235),
}
SIZES: dict[str, float] = {"small": 0.11, "large": 0.2}
"""Radius of each size as a fraction of the canvas side."""

FAMILIES: tuple[str, ...] = ("horizontal", "vertical", "size", "visibility", "approach", "sequence")
"""Event families; each has a forward event and its time-reverse, which form the order-only pairs."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""``train`` and ``validation`` draw from the seen combinations, ``test`` from the held-out ones."""

_GRID = (0.22, 0.5, 0.78)
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "center", "right")
_POSITION_PHRASES = {
    ("top", "left"): "at the top left",
    ("top", "center"): "at the top",
    ("top", "right"): "at the top right",
    ("middle", "left"): "on the left",
    ("middle", "center"): "in the center",
    ("middle", "right"): "on the right",
    ("bottom", "left"): "at the bottom left",
    ("bottom", "center"): "at the bottom",
    ("bottom", "right"): "at the bottom right",
}
_HELD_OUT_MODULUS = 5


@dataclass(frozen=True)
class SceneObject:
    """One flat shape: its attributes, which the captions name."""

    shape: str
    colour: str
    size: str

    def phrase(self, with_size: bool = True) -> str:
        """'a small red circle' (or 'a red circle' when the size changes during the event)."""
        words = ["a", self.size, self.colour, self.shape] if with_size else ["a", self.colour, self.shape]
        return " ".join(words)


# A frame's content: (object, centre x, centre y, radius), all as fractions of the canvas side.
_Placed = tuple[SceneObject, float, float, float]


def is_held_out(colour: str, shape: str, family: str) -> bool:
    """Whether the (colour, shape, event family) combination belongs to the ``test`` split only.

    The rule (sum of indices mod 5 == 0) holds out about a fifth of all triples while every (colour, shape),
    (colour, family) and (shape, family) pair still occurs in training: only the triple is new at test time.
    """
    index = list(COLOURS).index(colour) + SHAPES.index(shape) + FAMILIES.index(family)
    return index % _HELD_OUT_MODULUS == 0


def split_combinations(split: str) -> list[tuple[str, str, str]]:
    """The (colour, shape, family) combinations the videos of ``split`` are drawn from."""
    _check_split(split)
    held_out = split == "test"
    return [
        (colour, shape, family)
        for colour in COLOURS
        for shape in SHAPES
        for family in FAMILIES
        if is_held_out(colour, shape, family) == held_out
    ]


def event_captions(family: str, subject: SceneObject, other: SceneObject) -> tuple[str, str]:
    """Captions of the forward event and of its time-reverse; ``other`` is used by two-object families only."""
    a, b = subject.phrase(), other.phrase()
    if family == "horizontal":
        return f"{a} moves left to right", f"{a} moves right to left"
    if family == "vertical":
        return f"{a} moves down", f"{a} moves up"
    if family == "size":
        bare = subject.phrase(with_size=False)
        return f"{bare} grows", f"{bare} shrinks"
    if family == "visibility":
        return f"{a} appears", f"{a} disappears"
    if family == "approach":
        return f"{a} moves towards {b}", f"{a} moves away from {b}"
    if family == "sequence":
        return f"{a} appears and then {b} appears", f"{b} disappears and then {a} disappears"
    raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}")


def _forward_scenes(
    family: str, a: SceneObject, b: SceneObject, rng: np.random.Generator, t: int
) -> list[list[_Placed]]:
    """Per-frame contents of the forward event of ``family`` over ``t`` frames."""
    steps = np.linspace(0.0, 1.0, t)
    ra, rb = SIZES[a.size], SIZES[b.size]
    if family in ("horizontal", "vertical"):
        start, end, other = rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.85), rng.uniform(0.3, 0.7)
        path = start + (end - start) * steps
        if family == "horizontal":
            return [[(a, float(x), other, ra)] for x in path]
        return [[(a, other, float(y), ra)] for y in path]
    if family == "size":
        x, y = rng.uniform(0.35, 0.65, size=2)
        radii = 0.07 + (0.22 - 0.07) * steps
        return [[(a, x, y, float(r))] for r in radii]
    if family == "visibility":
        x, y = rng.uniform(0.3, 0.7, size=2)
        margin = max(1, t // 4)
        first = int(rng.integers(margin, t - margin + 1))
        return [[(a, x, y, ra)] if k >= first else [] for k in range(t)]
    if family == "approach":
        side = 1.0 if rng.random() < 0.5 else -1.0  # where the resting object sits: right (+1) or left (-1)
        xb, yb = 0.5 + side * 0.3, rng.uniform(0.35, 0.65)
        ya = float(np.clip(yb + rng.uniform(-0.1, 0.1), 0.2, 0.8))
        xa_start = 0.5 - side * rng.uniform(0.35, 0.42)
        xa_end = xb - side * (ra + rb + 0.04)
        path = xa_start + (xa_end - xa_start) * steps
        return [[(b, xb, yb, rb), (a, float(x), ya, ra)] for x in path]
    if family == "sequence":
        xa, xb = (rng.uniform(0.2, 0.35), rng.uniform(0.65, 0.8))
        if rng.random() < 0.5:
            xa, xb = 1.0 - xa, 1.0 - xb
        ya, yb = rng.uniform(0.3, 0.7, size=2)
        first = int(rng.integers(1, t - 2))
        second = int(rng.integers(first + 2, t))
        return [
            [p for p, k0 in (((a, xa, ya, ra), first), ((b, xb, yb, rb), second)) if k >= k0]
            for k in range(t)
        ]
    raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}")


def _render(scenes: list[list[_Placed]], rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Draw per-frame contents onto noisy dark backgrounds: (T, H, W, 3) uint8."""
    level = rng.uniform(0.0, 40.0)
    frames = []
    for placed in scenes:
        canvas = background(rng, image_size, level)
        for obj, x, y, r in placed:
            alpha = coverage(obj.shape, image_size, x * image_size, y * image_size, r * image_size)
            paint(canvas, alpha, COLOURS[obj.colour])
        frames.append(to_uint8(canvas))
    return np.stack(frames)


def _random_object(
    rng: np.random.Generator,
    colour: str | None = None,
    shape: str | None = None,
    avoid_colour: str | None = None,
) -> SceneObject:
    colours = [c for c in COLOURS if c != avoid_colour]
    return SceneObject(
        shape=shape if shape is not None else SHAPES[int(rng.integers(len(SHAPES)))],
        colour=colour if colour is not None else colours[int(rng.integers(len(colours)))],
        size=tuple(SIZES)[int(rng.integers(len(SIZES)))],
    )


def order_pair(
    split: str, index: int, seed: int = 0, num_frames: int = 8, image_size: int = 32
) -> tuple[tuple[np.ndarray, str], tuple[np.ndarray, str]]:
    """The ``index``-th order-only pair of ``split``: ((frames, caption), (frames[::-1], reverse caption)).

    Which of the two comes first is drawn at random, so row order never reveals the direction.
    """
    combos = split_combinations(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    colour, shape, family = combos[int(rng.integers(len(combos)))]
    subject = _random_object(rng, colour=colour, shape=shape)
    other = _random_object(rng, avoid_colour=colour)
    frames = _render(_forward_scenes(family, subject, other, rng, num_frames), rng, image_size)
    forward, backward = event_captions(family, subject, other)
    pair = ((frames, forward), (frames[::-1].copy(), backward))
    return pair if rng.random() < 0.5 else (pair[1], pair[0])


def make_video_dataset(
    split: str = "train", num_videos: int = 1024, seed: int = 0, num_frames: int = 8, image_size: int = 32
) -> Dataset:
    """``num_videos`` synthetic videos (``num_videos // 2`` order-only pairs, partners adjacent) as a Dataset.

    Columns follow :mod:`peft_video.data.schema`; ``frames`` is returned as numpy (T, H, W, 3) uint8.
    """
    _check_split(split)
    _check_int("num_videos", num_videos, minimum=2)
    if num_videos % 2:
        raise ValueError(f"`num_videos` must be even (videos come in order-only pairs), got {num_videos}")
    _check_int("seed", seed, minimum=0)
    _check_int("num_frames", num_frames, minimum=4)
    _check_int("image_size", image_size, minimum=16)
    rows: dict[str, list] = {"video_id": [], "caption": [], "frames": [], "order_pair_id": [], "split": []}
    for pair_id in range(num_videos // 2):
        for member, (frames, caption) in enumerate(order_pair(split, pair_id, seed, num_frames, image_size)):
            rows["video_id"].append(f"synthetic-{split}-{seed}-{2 * pair_id + member:06d}")
            rows["caption"].append(caption)
            rows["frames"].append(frames)
            rows["order_pair_id"].append(pair_id)
            rows["split"].append(split)
    return _as_dataset(rows, num_frames, image_size)


def still_frame(split: str, index: int, seed: int = 0, image_size: int = 32) -> tuple[np.ndarray, str]:
    """The ``index``-th still frame of ``split``: ((H, W, 3) uint8, caption naming attributes and positions).

    One object (60%) or two objects in grid cells two apart (never in the centre); a two-object caption lists them in reading order.
    """
    _check_split(split)
    rng = np.random.default_rng([seed, len(SPLITS) + SPLITS.index(split), index])
    cells = [(r, c) for r in range(3) for c in range(3)]
    first = cells[int(rng.integers(9))]
    placed: list[tuple[SceneObject, tuple[int, int]]] = [(_random_object(rng), first)]
    far = [cell for cell in cells if max(abs(cell[0] - first[0]), abs(cell[1] - first[1])) == 2]
    if rng.random() >= 0.6 and far:  # the centre cell has no far cell: it always holds a single object
        second = far[int(rng.integers(len(far)))]
        placed.append((_random_object(rng, avoid_colour=placed[0][0].colour), second))
        placed.sort(key=lambda item: item[1])
    jitter = rng.uniform(-0.03, 0.03, size=(len(placed), 2))
    scene = [
        (obj, _GRID[col] + jitter[i, 0], _GRID[row] + jitter[i, 1], SIZES[obj.size])
        for i, (obj, (row, col)) in enumerate(placed)
    ]
    frame = _render([scene], rng, image_size)[0]
    caption = " and ".join(
        f"{obj.phrase()} {_POSITION_PHRASES[(_ROWS[r], _COLS[c])]}" for obj, (r, c) in placed
    )
    return frame, caption


def make_frame_dataset(
    split: str = "train", num_images: int = 4096, seed: int = 0, image_size: int = 32
) -> Dataset:
    """``num_images`` still frames with frame captions, as one-frame videos (same columns, ``order_pair_id`` -1)."""
    _check_int("num_images", num_images, minimum=1)
    _check_int("seed", seed, minimum=0)
    _check_int("image_size", image_size, minimum=16)
    rows: dict[str, list] = {"video_id": [], "caption": [], "frames": [], "order_pair_id": [], "split": []}
    for index in range(num_images):
        frame, caption = still_frame(split, index, seed, image_size)
        rows["video_id"].append(f"still-{split}-{seed}-{index:06d}")
        rows["caption"].append(caption)
        rows["frames"].append(frame[None])
        rows["order_pair_id"].append(NO_PAIR)
        rows["split"].append(split)
    return _as_dataset(rows, 1, image_size)


def vocabulary() -> list[str]:
    """Every word any caption of this world can use, sorted (the tiny CLIP tokenizer's vocabulary)."""
    obj_a, obj_b = SceneObject("circle", "red", "small"), SceneObject("square", "blue", "large")
    texts = [" ".join(COLOURS), " ".join(SHAPES), " ".join(SIZES), *_POSITION_PHRASES.values(), "and"]
    for family in FAMILIES:
        texts.extend(event_captions(family, obj_a, obj_b))
    return sorted({word for text in texts for word in text.split()})


def _as_dataset(rows: dict[str, list], num_frames: int, image_size: int) -> Dataset:
    dataset = Dataset.from_dict(rows, features=video_text_features(num_frames, image_size, image_size))
    dataset.set_format("numpy", columns=["frames"], output_all_columns=True, dtype=np.uint8)
    return dataset


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
