"""The shipped tiny BART and T5 (denoising-pretrained on the synthetic world's text) and loading any backbone.

The tiny models are plain ``BartForConditionalGeneration`` / ``T5ForConditionalGeneration`` checkpoints with their
word-level tokenizers, built by ``recipes/pretrain_tiny_summarizers.py``; like a Hub checkpoint they load with
``from_pretrained`` / ``AutoTokenizer``, and :func:`load_summarizer` turns any of them into the vision-guided model.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from .configuration import VisionGuidedBartConfig, VisionGuidedT5Config
from .modeling import VisionGuidedBart, VisionGuidedT5

__all__ = ["BACKBONES", "PROJECTION", "load_summarizer", "tiny_summarizer_path"]

logger = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = ("bart", "t5")
"""Names of the shipped tiny backbones; anything else is a path or Hub id of a BART / T5 (vision-guided or not)."""
PROJECTION = "fusion.video_encoder.projection"
_CLASSES = {
    "bart": VisionGuidedBart,
    "t5": VisionGuidedT5,
    VisionGuidedBartConfig.model_type: VisionGuidedBart,
    VisionGuidedT5Config.model_type: VisionGuidedT5,
}


def tiny_summarizer_path(kind: str) -> Path:
    """Directory of the shipped tiny ``"bart"`` or ``"t5"`` (model, tokenizer, pretraining record)."""
    if kind not in BACKBONES:
        raise ValueError(f"`kind` must be one of {BACKBONES}, got {kind!r}")
    path = Path(str(resources.files("peft_video") / "assets" / f"tiny_{kind}_summarizer"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the tiny {kind} asset is missing at {path}; rebuild it with `python recipes/pretrain_tiny_summarizers.py`"
        )
    return path


def load_summarizer(
    backbone: str | Path,
    *,
    video_feature_dim: int,
    text_only: bool = False,
    max_video_frames: int | None = None,
    **video_kwargs: Any,
) -> tuple[VisionGuidedBart | VisionGuidedT5, PreTrainedTokenizerBase]:
    """A vision-guided model and its tokenizer from ``backbone``: ``"bart"`` / ``"t5"`` (shipped tiny), or a path /
    Hub id of a BART or T5 (the fusion is new) or of a saved vision-guided model (a video projection of another
    width is rebuilt for ``video_feature_dim``, with one log line; every method then trains it).
    ``max_video_frames``: the most video features one input may have (a config field, no weights)."""
    source = str(tiny_summarizer_path(str(backbone)) if str(backbone) in BACKBONES else backbone)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"backbone {str(backbone)!r} is neither one of {BACKBONES} nor a loadable BART / T5 checkpoint ({error})"
        ) from None
    cls = _CLASSES.get(config.model_type)
    if cls is None:
        raise ValueError(
            f"backbone {str(backbone)!r} is a {config.model_type!r} model; the vision-guided summarizer is built on "
            "BART or T5 (model_type 'bart' / 't5')"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    if max_video_frames is not None:
        video_kwargs["max_video_frames"] = max_video_frames
    if config.model_type in ("bart", "t5"):
        model = cls.from_text_model(
            source, video_feature_dim=video_feature_dim, text_only=text_only, **video_kwargs
        )
        return model, tokenizer
    unknown = sorted(set(video_kwargs) - {"max_video_frames"})
    if unknown:
        raise ValueError(f"a saved vision-guided model keeps its video architecture; got overrides {unknown}")
    overrides: dict[str, Any] = {"text_only": text_only, **video_kwargs}
    if not text_only and config.video_feature_dim != video_feature_dim:
        logger.warning(
            "the video features are %d wide, %s reads %d: its video projection (%s) is built anew and trained by "
            "every method",
            video_feature_dim,
            source,
            config.video_feature_dim,
            PROJECTION,
        )
        overrides.update(
            video_feature_dim=video_feature_dim,
            reinitialized_modules=[PROJECTION],
            ignore_mismatched_sizes=True,
        )
    return cls.from_pretrained(source, **overrides), tokenizer
