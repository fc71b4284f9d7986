"""Hand the conditioning sentence embedding to RAP's asynchronous self-attention during a vision forward pass.

ASA selects, per frame, the patches most similar to a sentence (eq. 6). That sentence is an input of the vision
forward pass that frame-wise encoders have no argument for, so it travels in a context variable, the same way
``peft_video.use_num_frames`` does: no global state survives the ``with`` block, and nested contexts restore the
outer one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

_CONDITION: contextvars.ContextVar[RapCondition | None] = contextvars.ContextVar(
    "peft_video_rap_condition", default=None
)


@dataclass(frozen=True)
class RapCondition:
    """Sentence embeddings (S, E) and how videos use them: 'paired' (video i <-> row i) or 'candidates' (eq. 5)."""

    embeds: torch.Tensor
    # also the name of the ``rap_condition`` argument, for error messages
    mode: Literal["paired", "candidates"]


def make_condition(paired: torch.Tensor | None, candidates: torch.Tensor | None) -> RapCondition:
    """Validate ``rap_condition``'s arguments: exactly one of them, a 2-D floating tensor with at least one row."""
    if (paired is None) == (candidates is None):
        raise ValueError(
            "pass exactly one of `paired` (B, E): one sentence per video, for training, or `candidates` (M, E): "
            "every video picks its best-matching sentence (eq. 5), for retrieval; got "
            f"paired={_describe(paired)}, candidates={_describe(candidates)}"
        )
    mode: Literal["paired", "candidates"] = "paired" if paired is not None else "candidates"
    embeds = paired if paired is not None else candidates
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[0] == 0:
        raise ValueError(f"`{mode}` must be a tensor of shape (S, E) with S >= 1, got {_describe(embeds)}")
    if not embeds.is_floating_point():
        raise ValueError(f"`{mode}` must be a floating-point tensor, got dtype {embeds.dtype}")
    return RapCondition(embeds=embeds, mode=mode)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value)


@contextlib.contextmanager
def rap_condition(
    paired: torch.Tensor | None = None, *, candidates: torch.Tensor | None = None
) -> Iterator[RapCondition]:
    """Condition RAP's ASA on sentence embeddings for every vision forward pass inside the block.

    ``paired`` (B, E): video i is conditioned on row i, its own caption (training). ``candidates`` (M, E): each video
    is conditioned on the candidate that best matches its mean frame feature (eq. 5), so a retrieval gallery is
    encoded once for all queries. E is the joint text-embedding width (``RapConfig.condition_dim``). With gradient
    checkpointing, run ``backward()`` inside the block too, since the recomputed forward needs the condition.
    """
    condition = make_condition(paired, candidates)
    token = _CONDITION.set(condition)
    try:
        yield condition
    finally:
        _CONDITION.reset(token)


def current_condition() -> RapCondition:
    """The condition in force, or a ``RuntimeError`` saying how to provide one (ASA never runs unconditioned)."""
    condition = _CONDITION.get()
    if condition is None:
        raise RuntimeError(
            "RAP's asynchronous self-attention (use_asa=True) needs the conditioning sentence embeddings, but this "
            "vision forward ran outside `peft_video.rap_condition(...)`. Wrap it in "
            "`with peft_video.rap_condition(paired=caption_embeds):` for training (one caption per video) or "
            "`with peft_video.rap_condition(candidates=all_text_embeds):` for retrieval; or use_asa=False."
        )
    return condition
