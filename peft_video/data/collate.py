"""Turn video-text rows into model inputs: normalised ``pixel_values`` (B, T, 3, H, W) and tokenized captions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase


def check_caption(caption: object, record: object) -> str:
    """``caption`` if it is a string with some non-space text, else a ``ValueError`` naming ``record``."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"record {record!r}: the caption must be non-empty text, got {caption!r}")
    return caption


class VideoTextCollator:
    """Collate rows with ``frames`` (T, H, W, 3) uint8 and ``caption`` into a batch for a frame-wise CLIP.

    Frames are resized (shorter side) and centre-cropped to ``image_size`` when they differ from it, scaled to
    [0, 1] and normalised with ``image_mean``/``image_std`` (per channel), exactly as CLIP's image processor does,
    but on whole (B*T) tensors at once. Columns named in ``keep_columns`` pass through (ints become tensors).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        image_size: int,
        max_length: int | None = None,
        keep_columns: Sequence[str] = (),
    ) -> None:
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(
                f"`image_mean` and `image_std` must have 3 values, got {image_mean!r} and {image_std!r}"
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"`image_size` must be a positive integer, got {image_size!r}")
        self.tokenizer = tokenizer
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_size = image_size
        self.max_length = max_length
        self.keep_columns = tuple(keep_columns)

    @classmethod
    def from_processor(cls, processor: Any, **kwargs: Any) -> VideoTextCollator:
        """Build from a ``CLIPProcessor`` (its tokenizer, and its image processor's crop size, mean and std)."""
        image_processor = processor.image_processor
        crop = getattr(image_processor, "crop_size", None) or image_processor.size
        size = crop["height"] if "height" in crop else crop["shortest_edge"]
        return cls(
            processor.tokenizer, image_processor.image_mean, image_processor.image_std, int(size), **kwargs
        )

    def pixel_values(self, frames: Sequence[Any]) -> torch.Tensor:
        """(B, T, 3, S, S) float32 from B arrays of (T, H, W, 3) uint8 frames."""
        videos = [np.asarray(f) for f in frames]
        shapes = {v.shape for v in videos}
        if len(shapes) != 1:
            raise ValueError(
                f"`frames` must share one (T, H, W, 3) shape within a batch, got {sorted(shapes)}"
            )
        shape = shapes.pop()
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"`frames` must be (T, H, W, 3) arrays, got shape {shape}")
        batch, (t, h, w, _) = len(videos), shape
        x = torch.from_numpy(np.stack(videos)).reshape(batch * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
        x = self._resize_center_crop(x)
        x = (x - self.mean) / self.std
        return x.reshape(batch, t, 3, self.image_size, self.image_size).contiguous()

    def _resize_center_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == (self.image_size, self.image_size):
            return x
        scale = self.image_size / min(h, w)
        new_h, new_w = max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True).clamp(
            0, 1
        )
        top, left = (new_h - self.image_size) // 2, (new_w - self.image_size) // 2
        return x[..., top : top + self.image_size, left : left + self.image_size]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("`rows` must hold at least one row, got an empty batch")
        missing = {"frames", "caption", *self.keep_columns} - set(rows[0])
        if missing:
            raise ValueError(f"rows must have columns {sorted(missing)}; got columns {sorted(rows[0])}")
        text = self.tokenizer(
            [check_caption(row["caption"], row.get("video_id", f"row {i}")) for i, row in enumerate(rows)],
            padding=True,
            truncation=True,  # to max_length, else the tokenizer's model_max_length; special tokens are kept
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch: dict[str, Any] = {
            "pixel_values": self.pixel_values([row["frames"] for row in rows]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
        }
        for column in self.keep_columns:
            values = [row[column] for row in rows]
            batch[column] = torch.tensor(values) if all(isinstance(v, int) for v in values) else values
        return batch
