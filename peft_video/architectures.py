"""Name the architecture family of a base model, for per-method default ``target_modules``."""

from __future__ import annotations

from torch import nn

OPEN_CLIP = "open_clip"


def architecture_of(model: nn.Module) -> str | None:
    """HF ``config.model_type`` of ``model`` or of the outermost HF model inside it (e.g. in a task wrapper);
    ``"open_clip"`` for open_clip models; else ``None``."""
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(model_type, str) and model_type != "custom":
            return model_type
    if is_open_clip_model(model):
        return OPEN_CLIP
    return None


def is_open_clip_model(model: nn.Module) -> bool:
    """True if ``model`` is or contains (e.g. inside a task wrapper) an open_clip ``VisionTransformer`` tower."""
    try:
        from open_clip.transformer import VisionTransformer
    except ImportError:  # pragma: no cover - open_clip is a dependency, but stay importable without it
        return False
    return any(isinstance(module, VisionTransformer) for module in model.modules())


def contains_open_clip_text_tower(model: nn.Module) -> bool:
    """True if an open_clip model holds a text transformer too (a full CLIP, not just its visual tower)."""
    from open_clip.transformer import Transformer, VisionTransformer

    visual = {id(m.transformer) for m in model.modules() if isinstance(m, VisionTransformer)}
    return any(isinstance(m, Transformer) and id(m) not in visual for m in model.modules())
