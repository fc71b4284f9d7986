"""What TokenMix wraps in a frame-wise vision encoder: the attention (which mixes) and the fine-tuned parts of the
chosen blocks.

TokenMix works on whole transformer blocks: the user names blocks by index (``-1``: the last) and a part to fine-tune.
Where the blocks live and what they are made of is :mod:`peft_video.architectures`' business; this module turns the
choice into module names. The fine-tuning parts partition a block: ``"attention"`` = the attention and its pre-norm
(and open_clip's layer scale ``ls_1``), ``"ffn"`` = the MLP and its pre-norm (and ``ls_2``); ``"block"`` = both
(7,087,872 parameters for a ViT-B/16 block: 2,363,904 + 4,723,968, Table 4's 2.4M / 4.7M / 7.1M).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ...architectures import VISION, BlockAnatomy, BlockList, resolve_blocks, unwrapped
from ...architectures import block_anatomy as _layout
from ...architectures import find_block_list as _find_block_list
from ...video import validate_num_frames
from .attention import TokenMixingAttention, attention_kind
from .mixing import TokenMixer, validate_strategy

FINETUNE_PARTS = ("block", "attention", "ffn", "none")
_BLOCK_LIST_HINT = "pass `block_list` (the dotted path of the vision blocks' ModuleList)"


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


def find_block_list(model: nn.Module, block_list: str | None = None) -> BlockList:
    """The vision blocks TokenMix works on: at ``block_list`` if given, else where the architecture keeps them."""
    return _find_block_list(model, VISION, block_list, hint=_BLOCK_LIST_HINT)


def block_anatomy(block: nn.Module) -> BlockAnatomy:
    """The layout of ``block``, with a clear error if its attention is not one TokenMix can mix."""
    anatomy = _layout(block)
    attention = unwrapped(getattr(block, anatomy.attention))
    if not isinstance(attention, TokenMixingAttention):
        attention_kind(attention)
    return anatomy


def _has_parameters(module: nn.Module | None) -> bool:
    return module is not None and any(True for _ in module.parameters())


def plan_token_mixing(
    model: nn.Module,
    blocks: str | int | list[int] | tuple[int, ...],
    finetune: str = "block",
    strategy: str = "uniform_cls",
    block_list: str | None = None,
) -> MixPlan:
    """Module names TokenMix wraps for these settings (attention of every mixed block, plus the fine-tuned parts)."""
    if finetune not in FINETUNE_PARTS:
        raise ValueError(f"`finetune` must be one of {FINETUNE_PARTS}, got {finetune!r}")
    validate_strategy(strategy)
    found = find_block_list(model, block_list)
    path, block_modules = found.path, found.blocks
    indices = resolve_blocks(blocks, found.depth, where=f"`{path}`")
    attention, copies = [], []
    for index in indices:
        block = block_modules[index]
        anatomy = block_anatomy(block)
        prefix = f"{path}.{index}."
        tune_attention = finetune in ("block", "attention")
        if isinstance(unwrapped(getattr(block, anatomy.attention)), TokenMixingAttention):
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
    blocks: str | int | list[int] | tuple[int, ...] = (-1,),
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
