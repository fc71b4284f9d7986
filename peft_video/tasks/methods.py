"""The fine-tuning methods a video-text task model can be prepared with, by name (for recipes and comparisons).

``frozen`` (zero-shot, nothing trained), ``full`` (every weight), peft ``lora`` (vision tower), and peft-video's
``read``, ``rap`` and ``token_mix``. The peft methods are applied to the *task model* (the wrapper), so
``Trainer``/``save_pretrained`` keep only the adapter; the first three see frames independently and mean-pool them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class MethodTargets:
    """What the method registry needs to know about a task model. Names are dotted module (or parameter) names
    relative to the task model; a `str` target is a regex (full match, as peft), a tuple a list of name suffixes."""

    backbone: tuple[str, ...] = ("",)
    """Modules holding the pretrained weights ("" = the whole model). `bitfit` trains the biases inside them."""
    blocks: tuple[str, ...] = ()
    """Dotted paths of the nn.ModuleLists of transformer blocks; `partial` trains the last N blocks of each
    (`--partial-blocks N`, default 1)."""
    projections: tuple[str, ...] = ()
    """Module or parameter names that `proj` trains (the final projection(s) / prediction heads)."""
    new_modules: tuple[str, ...] = ()
    """Modules the pretrained checkpoint does not have (a fusion layer, input projections re-built for new feature
    widths): every method trains them, peft methods through `modules_to_save`; `frozen` trains them too (so
    `frozen` = "the pretrained part frozen"); with none, `frozen` trains nothing (zero-shot)."""
    lora: str | tuple[str, ...] | None = None
    """peft LoRA `target_modules` (attention and FFN Linear layers); None: LoRA does not apply."""
    ia3: str | tuple[str, ...] | None = None
    ia3_feedforward: str | tuple[str, ...] | None = None
    """peft IA3 `target_modules` / `feedforward_modules` (the FFN's input-side Linear layers among them)."""
    read: str | tuple[str, ...] | None = None
    """READ and `adapter` (ReadConfig(rnn_type="none")) target_modules: the FFN modules whose output O is adapted."""
    read_axis: str = "tokens"
    """READ's recurrence axis: "tokens" (over a (B, L, D) sequence) or "frames" (frame-wise vision towers)."""
    num_frames: int | None = None
    """Frames per video for frame-wise towers (READ frames axis, RAP, TokenMix)."""
    prompt_task_type: str | None = None
    """peft TaskType for `prompt` (peft prompt tuning), e.g. "SEQ_2_SEQ_LM"; None: prompt tuning does not apply."""
    token_mix: dict | None = None
    """TokenMixConfig keyword arguments when TokenMix applies (a frame-wise vision tower), e.g. {"block_list": ...,
    "modules_to_save": [...]}; None: it does not apply."""
    rap: bool = False
    """RAP applies (two-tower CLIP retrieval only)."""
    notes: dict[str, str] = field(default_factory=dict)
    """Why a method does not apply (method -> reason), for the error message."""
