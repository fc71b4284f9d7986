"""A sentence condition for a vision forward pass: sentence embeddings that vision-side adapters can read.

Some adapters condition the video encoder on text: RAP's asynchronous self-attention picks, per frame, the patches
most similar to a sentence (eq. 6). That sentence is an input of the vision forward pass that frame-wise encoders
have no argument for, so it travels in a context variable, the same way :func:`peft_video.use_num_frames` does:

- code that runs a vision forward sets it: ``with sentence_condition(paired=caption_embeds): model(frames)``;
- a layer that needs it reads it: :func:`current_sentence_condition` (None outside any block).

No global state survives the ``with`` block, and nested blocks restore the outer one. Setting a condition is harmless
for models without such an adapter, so task code can always set it. ``rap_condition`` is the same function under
the name RAP's documentation uses (``peft_video.rap_condition``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "SentenceCondition",
    "current_sentence_condition",
    "make_condition",
    "rap_condition",
    "sentence_condition",
]

_CONDITION: contextvars.ContextVar[SentenceCondition | None] = contextvars.ContextVar(
    "peft_video_sentence_condition", default=None
)


@dataclass(frozen=True)
class SentenceCondition:
    """Sentence embeddings (S, E) and how videos use them: 'paired' (video i <-> row i) or 'candidates' (each video
    picks its best-matching sentence)."""

    embeds: torch.Tensor
    # also the name of the ``sentence_condition`` argument, for error messages
    mode: Literal["paired", "candidates"]


def make_condition(paired: torch.Tensor | None, candidates: torch.Tensor | None) -> SentenceCondition:
    """Validate :func:`sentence_condition`'s arguments: exactly one of them, a 2-D floating tensor with >= 1 row."""
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
    return SentenceCondition(embeds=embeds, mode=mode)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value)


@contextlib.contextmanager
def sentence_condition(
    paired: torch.Tensor | None = None, *, candidates: torch.Tensor | None = None
) -> Iterator[SentenceCondition]:
    """Condition every vision forward pass inside the block on sentence embeddings.

    ``paired`` (B, E): video i is conditioned on row i, its own caption (training). ``candidates`` (M, E): each video
    is conditioned on the candidate that best matches it (RAP: its mean frame feature, eq. 5), so a retrieval gallery
    is encoded once for all queries. E is the joint text-embedding width (``RapConfig.condition_dim``). With gradient
    checkpointing, run ``backward()`` inside the block too, since the recomputed forward needs the condition.
    """
    condition = make_condition(paired, candidates)
    token = _CONDITION.set(condition)
    try:
        yield condition
    finally:
        _CONDITION.reset(token)


rap_condition = sentence_condition
"""RAP's name for :func:`sentence_condition` (``peft_video.rap_condition``), the one its documentation uses."""


def current_sentence_condition() -> SentenceCondition | None:
    """The condition in force (the innermost :func:`sentence_condition` block), or None outside any."""
    return _CONDITION.get()
