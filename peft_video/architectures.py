"""Name the architecture family of a base model, for per-method default ``target_modules``."""

from __future__ import annotations

from torch import nn

OPEN_CLIP = "open_clip"


def architecture_of(model: nn.Module) -> str | None:
    """HF ``config.model_type`` for transformers models, ``"open_clip"`` for open_clip models, else ``None``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None and isinstance(config, dict):
        model_type = config.get("model_type")
    if model_type and model_type != "custom":
        return model_type
    if is_open_clip_model(model):
        return OPEN_CLIP
    return None


def is_open_clip_model(model: nn.Module) -> bool:
    """True for open_clip ``CLIP`` / ``CustomTextCLIP`` and their ``VisionTransformer`` tower."""
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip is a dependency, but stay importable without it
        return False
    from open_clip.transformer import VisionTransformer

    return isinstance(model, (open_clip.CLIP, open_clip.CustomTextCLIP, VisionTransformer))
