"""The shipped tiny grounding model (pretrained on the synthetic world's source domain) and backbone loading."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .configuration import GroundingConfig
from .modeling import GroundingModel

__all__ = ["BACKBONES", "load_grounding_backbone", "tiny_grounding_config", "tiny_grounding_path"]

BACKBONES: tuple[str, ...] = ("tiny", "scratch")
"""Named backbones: the shipped tiny model, or an untrained model of Moment-DETR's size; anything else is a path."""


def tiny_grounding_path() -> Path:
    """Directory of the shipped tiny grounding model (``GroundingModel.from_pretrained`` reads it)."""
    path = Path(str(resources.files("peft_video") / "assets" / "tiny_grounding"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the tiny grounding asset is missing at {path}; rebuild it with "
            "`python recipes/pretrain_tiny_grounding.py`"
        )
    return path


def tiny_grounding_config(**overrides: Any) -> GroundingConfig:
    """The tiny model's configuration: Moment-DETR's architecture at hidden size 64 (4 heads, FFN 256), reading the
    shipped tiny CLIP's 64-wide clip and query token features, 2-s clips. Input dropout 0.1 instead of 0.5: on
    features this narrow, 0.5 slowed learning several-fold in a run of minutes."""
    settings: dict[str, Any] = {
        "video_feature_dim": 64,
        "text_feature_dim": 64,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "input_dropout": 0.1,
        "clip_length": 2.0,
    }
    settings.update(overrides)
    return GroundingConfig(**settings)


def load_grounding_backbone(
    backbone: str | Path = "tiny",
    *,
    video_feature_dim: int | None = None,
    text_feature_dim: int | None = None,
    **config_overrides: Any,
) -> GroundingModel:
    """A grounding model to fine-tune: ``"tiny"`` (the shipped model), ``"scratch"`` (untrained, Moment-DETR's
    default size, for the given feature widths) or a ``save_pretrained`` directory.

    For a pretrained backbone, widths that differ from its own rebuild its input projections (one log line; see
    :meth:`GroundingModel.rebuild_input_projections`). ``config_overrides`` apply to ``scratch`` only.
    """
    if backbone == "scratch":
        widths = {
            k: v
            for k, v in (("video_feature_dim", video_feature_dim), ("text_feature_dim", text_feature_dim))
            if v is not None
        }
        return GroundingModel(GroundingConfig(**widths, **config_overrides))
    if config_overrides:
        raise ValueError(
            f"config overrides {sorted(config_overrides)} only apply to backbone='scratch'; a pretrained backbone "
            "keeps its architecture"
        )
    path = tiny_grounding_path() if backbone == "tiny" else Path(backbone)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone {str(backbone)!r} is neither one of {BACKBONES} nor a directory with a saved grounding model"
        )
    return GroundingModel.from_pretrained(
        path, video_feature_dim=video_feature_dim, text_feature_dim=text_feature_dim
    )
