"""Where the blocks of a frame-wise vision encoder live and what they are made of, per architecture.

TokenMix works on whole transformer blocks: the user names blocks by index (``-1``: the last) and a part to fine-tune.
This module turns that into module names: the block's attention (which mixes) and the modules copied for training.
The fine-tuning parts partition a block: ``"attention"`` = the attention and its pre-norm (and open_clip's layer
scale ``ls_1``), ``"ffn"`` = the MLP and its pre-norm (and ``ls_2``); ``"block"`` = both (7,087,872 parameters for a
ViT-B/16 block: 2,363,904 + 4,723,968, Table 4's 2.4M / 4.7M / 7.1M).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ...architectures import OPEN_CLIP, architecture_of
from ...video import validate_num_frames
from .attention import TokenMixingAttention, attention_kind
from .mixing import TokenMixer, validate_strategy

FINETUNE_PARTS = ("block", "attention", "ffn", "none")

# Dotted paths of the vision tower's ModuleList of blocks, per architecture; the first one present wins.
TOKEN_MIX_BLOCK_LISTS: dict[str, tuple[str, ...]] = {
    "clip": ("vision_model.encoder.layers",),
    "clip_vision_model": ("encoder.layers", "vision_model.encoder.layers"),
    "blip": ("vision_model.encoder.layers",),
    "blip_vision_model": ("encoder.layers", "vision_model.encoder.layers"),
    "vit": ("layers", "vit.layers"),
    OPEN_CLIP: ("visual.transformer.resblocks", "transformer.resblocks"),
}


@dataclass(frozen=True)
class BlockAnatomy:
    """Attribute names inside one block: the attention, and the other members of each fine-tuning part."""

    attention: str
    attention_parts: tuple[str, ...]
    ffn_parts: tuple[str, ...]


BLOCK_ANATOMIES: tuple[BlockAnatomy, ...] = (
    BlockAnatomy("self_attn", ("layer_norm1",), ("layer_norm2", "mlp")),  # HF CLIP, BLIP
    BlockAnatomy("attention", ("layernorm_before",), ("layernorm_after", "mlp")),  # HF ViT (transformers 5)
    BlockAnatomy("attn", ("ln_1", "ls_1"), ("ln_2", "mlp", "ls_2")),  # open_clip ResidualAttentionBlock
)


@dataclass(frozen=True)
class MixPlan:
    """Full module names to wrap: ``attention`` modules mix (and may get a copy); ``copies`` only get a copy."""

    block_list: str
    blocks: tuple[int, ...]
    attention: tuple[str, ...]
    copies: tuple[str, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return self.attention + self.copies


def find_block_list(model: nn.Module, block_list: str | None = None) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ModuleList of the vision blocks (``block_list`` if given, else by architecture).

    A path also matches as a suffix (``backbone.encoder.layers`` for ``encoder.layers``), so task wrappers work;
    a path that matches several ModuleLists is an error asking for ``block_list``.
    """
    architecture = architecture_of(model)
    candidates = (block_list,) if block_list else TOKEN_MIX_BLOCK_LISTS.get(architecture or "", ())
    if not candidates:
        raise ValueError(
            f"TokenMix does not know where the vision blocks of architecture {architecture!r} are; pass "
            f"`block_list` (the dotted path of their ModuleList). Known architectures: {sorted(TOKEN_MIX_BLOCK_LISTS)}"
        )
    lists = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    }
    for path in candidates:
        found = [name for name in lists if name == path or name.endswith("." + path)]
        if len(found) == 1:
            return found[0], lists[found[0]]
        if len(found) > 1:
            raise ValueError(
                f"`block_list`: {path!r} matches several ModuleLists {found}; pass the full dotted path of the vision "
                "blocks"
            )
    raise ValueError(
        f"`block_list`: no non-empty ModuleList of vision blocks at {list(candidates)} in {type(model).__name__} "
        f"(architecture {architecture!r}); pass `block_list` with the dotted path of the blocks"
    )


def _unwrapped(module: nn.Module) -> nn.Module:
    """The original module under peft tuner layers (ours included)."""
    while isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    return module


def block_anatomy(block: nn.Module) -> BlockAnatomy:
    """The layout of ``block`` among :data:`BLOCK_ANATOMIES`, or a clear error."""
    for anatomy in BLOCK_ANATOMIES:
        required = (anatomy.attention, anatomy.attention_parts[0], *anatomy.ffn_parts[:2])
        if all(isinstance(getattr(block, name, None), nn.Module) for name in required):
            attention = _unwrapped(getattr(block, anatomy.attention))
            if not isinstance(attention, TokenMixingAttention):
                attention_kind(attention)
            return anatomy
    raise ValueError(
        f"TokenMix does not know the layout of block {type(block).__name__}: expected an attention named one of "
        f"{[a.attention for a in BLOCK_ANATOMIES]} beside an `mlp`"
    )


def resolve_block_indices(
    blocks: list[int] | tuple[int, ...], depth: int, block_list: str
) -> tuple[int, ...]:
    """Python-style indices (``-1`` = last) -> sorted non-negative indices, with clear range / duplicate errors."""
    resolved: dict[int, int] = {}
    for index in blocks:
        if not -depth <= index < depth:
            raise ValueError(
                f"`blocks` entry {index} is out of range: `{block_list}` has {depth} blocks "
                f"(valid indices {-depth}..{depth - 1})"
            )
        absolute = index % depth
        if absolute in resolved:
            raise ValueError(
                f"`blocks` entries {resolved[absolute]} and {index} name the same block {absolute}"
            )
        resolved[absolute] = index
    return tuple(sorted(resolved))


def _has_parameters(module: nn.Module | None) -> bool:
    return module is not None and any(True for _ in module.parameters())


def plan_token_mixing(
    model: nn.Module,
    blocks: list[int] | tuple[int, ...],
    finetune: str = "block",
    strategy: str = "uniform_cls",
    block_list: str | None = None,
) -> MixPlan:
    """Module names TokenMix wraps for these settings (attention of every mixed block, plus the fine-tuned parts)."""
    if finetune not in FINETUNE_PARTS:
        raise ValueError(f"`finetune` must be one of {FINETUNE_PARTS}, got {finetune!r}")
    validate_strategy(strategy)
    path, block_modules = find_block_list(model, block_list)
    indices = resolve_block_indices(blocks, len(block_modules), path)
    attention, copies = [], []
    for index in indices:
        block = block_modules[index]
        anatomy = block_anatomy(block)
        prefix = f"{path}.{index}."
        tune_attention = finetune in ("block", "attention")
        if isinstance(_unwrapped(getattr(block, anatomy.attention)), TokenMixingAttention):
            raise ValueError(
                f"`blocks`: block {index} (`{prefix + anatomy.attention}`) already mixes tokens (merged TokenMix or "
                "apply_token_mixing); choose other blocks or start from the plain model"
            )
        if strategy != "none" or tune_attention:
            attention.append(prefix + anatomy.attention)
        parts = (anatomy.attention_parts if tune_attention else ()) + (
            anatomy.ffn_parts if finetune in ("block", "ffn") else ()
        )
        copies.extend(prefix + part for part in parts if _has_parameters(getattr(block, part, None)))
    return MixPlan(block_list=path, blocks=indices, attention=tuple(attention), copies=tuple(copies))


def apply_token_mixing(
    model: nn.Module,
    *,
    num_frames: int | None,
    blocks: list[int] | tuple[int, ...] = (-1,),
    strategy: str = "uniform_cls",
    cross_frame_weight: float = 1.0,
    num_prefix_tokens: int = 1,
    block_list: str | None = None,
) -> nn.Module:
    """Make ``blocks`` of ``model`` mix tokens across frames in place, without peft (no weights added or copied).

    For fully fine-tuning with token mixing (the paper's "FF + TM"), or to restore mixing on a plain model that
    loaded the state dict of a merged TokenMix model. Returns ``model``.
    """
    if strategy == "none":
        raise ValueError(
            "`strategy`='none' does not mix; apply_token_mixing needs 'uniform_cls' or 'uniform'"
        )
    if num_frames is not None:
        validate_num_frames(num_frames)
    plan = plan_token_mixing(model, blocks, finetune="none", strategy=strategy, block_list=block_list)
    for name in plan.attention:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        current = getattr(parent, child)
        if isinstance(current, BaseTunerLayer):
            raise ValueError(
                f"`{name}` is wrapped by a peft adapter; apply_token_mixing works on plain models"
            )
        mixer = TokenMixer(num_frames, strategy, cross_frame_weight, num_prefix_tokens)
        setattr(parent, child, TokenMixingAttention(current, mixer))
    return model
