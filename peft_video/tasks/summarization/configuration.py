"""Configurations of the vision-guided BART and T5 (Yu et al., EMNLP 2021): the text model's config plus the video side.

:class:`VisionGuidedBartConfig` is a ``BartConfig`` and :class:`VisionGuidedT5Config` a ``T5Config`` (so every text
field, tokenizer id and generation default stays where transformers expects it), with the fields of the video
fusion added by :func:`video_fields`:

- ``video_feature_dim``: width D_v of the video features (How2's ResNeXt features: 2048).
- ``video_layers``: transformer layers over time on the projected video (0: none; Yu et al.'s optional "image
  transformer"); ``video_heads`` their heads, and the fusion's cross-attention heads.
- ``max_video_frames``: features kept per video (VG-GPLMs: 256); longer inputs are truncated by the data side.
- ``fusion_dropout``: dropout on the gate and the attended video, as in Yu et al.'s forget gate.
- ``text_only``: no fusion at all (the "does the video help" row): the model is the plain text model.
- ``reinitialized_modules``: modules the checkpoint did not provide (the video projection, rebuilt for a new
  feature width); every fine-tuning method trains them, like the fusion itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BartConfig, T5Config

__all__ = ["VIDEO_FIELDS", "VisionGuidedBartConfig", "VisionGuidedT5Config", "video_fields"]

VIDEO_FIELDS: tuple[str, ...] = (
    "video_feature_dim",
    "video_layers",
    "video_heads",
    "max_video_frames",
    "fusion_dropout",
    "text_only",
    "reinitialized_modules",
)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def video_fields(
    video_feature_dim: int = 2048,
    video_layers: int = 1,
    video_heads: int = 4,
    max_video_frames: int = 256,
    fusion_dropout: float = 0.1,
    text_only: bool = False,
    reinitialized_modules: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The video side's fields, checked (a ``ValueError`` naming the field otherwise)."""
    _positive_int("video_feature_dim", video_feature_dim)
    _positive_int("video_heads", video_heads)
    _positive_int("max_video_frames", max_video_frames)
    if isinstance(video_layers, bool) or not isinstance(video_layers, int) or video_layers < 0:
        raise ValueError(f"`video_layers` must be an integer >= 0, got {video_layers!r}")
    if (
        isinstance(fusion_dropout, bool)
        or not isinstance(fusion_dropout, (int, float))
        or not 0 <= fusion_dropout < 1
    ):
        raise ValueError(f"`fusion_dropout` must be a probability in [0, 1), got {fusion_dropout!r}")
    reinitialized = list(reinitialized_modules or [])
    if any(name != "fusion.video_encoder.projection" for name in reinitialized):
        raise ValueError(
            f"`reinitialized_modules` may only name 'fusion.video_encoder.projection', got {reinitialized}"
        )
    return {
        "video_feature_dim": video_feature_dim,
        "video_layers": video_layers,
        "video_heads": video_heads,
        "max_video_frames": max_video_frames,
        "fusion_dropout": float(fusion_dropout),
        "text_only": bool(text_only),
        "reinitialized_modules": reinitialized,
    }


class VisionGuidedBartConfig(BartConfig):
    """``BartConfig`` plus the video fusion's fields (see the module docstring)."""

    model_type = "peft_video_vg_bart"

    def __init__(self, **kwargs: Any) -> None:
        video = video_fields(**{name: kwargs.pop(name) for name in VIDEO_FIELDS if name in kwargs})
        super().__init__(**kwargs)
        for name, value in video.items():
            setattr(self, name, value)
        if not self.text_only and self.d_model % self.video_heads:
            raise ValueError(
                f"`d_model` ({self.d_model}) must be a multiple of `video_heads` ({self.video_heads})"
            )


class VisionGuidedT5Config(T5Config):
    """``T5Config`` plus the video fusion's fields (see the module docstring)."""

    model_type = "peft_video_vg_t5"

    def __init__(self, **kwargs: Any) -> None:
        video = video_fields(**{name: kwargs.pop(name) for name in VIDEO_FIELDS if name in kwargs})
        super().__init__(**kwargs)
        for name, value in video.items():
            setattr(self, name, value)
        if not self.text_only and self.d_model % self.video_heads:
            raise ValueError(
                f"`d_model` ({self.d_model}) must be a multiple of `video_heads` ({self.video_heads})"
            )
