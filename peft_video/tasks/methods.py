"""The fine-tuning methods a video-text task model can be prepared with, by name (for recipes and comparisons).

``frozen`` (zero-shot, nothing trained), ``full`` (every weight), peft ``lora`` (vision tower), and peft-video's
``read``, ``rap`` and ``token_mix``. The peft methods are applied to the *task model* (the wrapper), so
``Trainer``/``save_pretrained`` keep only the adapter; the first three see frames independently and mean-pool them.
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, PeftConfig, get_peft_model
from torch import nn

from ..architectures import is_open_clip_model

METHODS: tuple[str, ...] = ("frozen", "full", "lora", "read", "rap", "token_mix")
FRAME_WISE: tuple[str, ...] = ("frozen", "full", "lora")
"""Methods that encode each frame on its own: with mean pooling they cannot tell a video from its reversal."""

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "full": 1e-4,
    "lora": 1e-3,
    "read": 1e-2,
    "rap": 1e-2,
    "token_mix": 1e-3,
}
"""Peak learning rates used when none is given: full fine-tuning moves every pretrained weight and needs a small
one; adapters that start at the identity with few weights need larger ones (see the README's demo section)."""

_HF_LORA_TARGETS = (
    r"(.*\.)?vision_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
)
_OPEN_CLIP_LORA_TARGETS = r"(.*\.)?visual\.transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"


TEXT_EMBEDDINGS = "token_embedding"
"""Name (suffix) of the text tower's word-embedding table in HF CLIP and open_clip."""


def peft_config_for(
    method: str, model: nn.Module, num_frames: int, text_embeddings: bool = False, **options: Any
) -> PeftConfig | None:
    """The peft config of ``method`` for a task model over ``num_frames``-frame clips (None for frozen / full).

    ``options`` override the config's fields (e.g. ``r=16``). LoRA: rank 8, alpha 16, on the vision tower's
    attention projections and MLP (the text tower stays frozen, as in the other methods). ``text_embeddings``
    also trains (and saves) the text tower's word embeddings, for words the backbone never learned.
    """
    check_method(method)
    import peft_video

    if method in ("frozen", "full"):
        if options:
            raise ValueError(f"method {method!r} takes no options, got {sorted(options)}")
        return None
    if text_embeddings:
        options["modules_to_save"] = [*(options.get("modules_to_save") or []), TEXT_EMBEDDINGS]
    if method == "lora":
        targets = _OPEN_CLIP_LORA_TARGETS if is_open_clip_model(model) else _HF_LORA_TARGETS
        return LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": targets, **options})
    if method == "read":
        return peft_video.ReadConfig(
            **{"recurrence_axis": "frames", "num_frames": num_frames, "r": 8, **options}
        )
    if method == "rap":
        return peft_video.RapConfig(**{"num_frames": num_frames, **options})
    return peft_video.TokenMixConfig(**{"num_frames": num_frames, **options})


def prepare_model(
    model: nn.Module, method: str, num_frames: int, text_embeddings: bool = False, **options: Any
) -> nn.Module:
    """``model`` ready for training with ``method``: a PeftModel for peft methods, else ``model`` itself with every
    weight trainable (``full``) or none (``frozen``, which ignores ``text_embeddings``: it is never trained)."""
    config = peft_config_for(method, model, num_frames, text_embeddings, **options)
    if config is not None:
        return get_peft_model(model, config)
    model.requires_grad_(method == "full")
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def check_method(method: object) -> str:
    """``method`` if it names one of :data:`METHODS`, else a ``ValueError``."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    return method
