"""The one column layout every video-text dataset in peft-video shares (synthetic world, stills, real videos)."""

from __future__ import annotations

from datasets import Array4D, Features, Value

COLUMNS: tuple[str, ...] = ("video_id", "caption", "frames", "order_pair_id", "split")
"""Column names, in order. ``frames`` is (T, H, W, 3) uint8 RGB; ``order_pair_id`` links the two videos of an
order-only pair (same frames reversed, captions differ only in temporal order), ``-1`` for a video without one."""

NO_PAIR: int = -1


def video_text_features(num_frames: int, height: int, width: int) -> Features:
    """The ``datasets.Features`` of a video-text dataset with ``num_frames`` frames of ``height`` x ``width`` pixels."""
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return Features(
        {
            "video_id": Value("string"),
            "caption": Value("string"),
            "frames": Array4D(shape=(num_frames, height, width, 3), dtype="uint8"),
            "order_pair_id": Value("int64"),
            "split": Value("string"),
        }
    )
