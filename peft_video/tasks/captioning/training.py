"""Prepare a captioner for one method as Token Mixing compares them (Tables 1, 3 and 4, Figure 4)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..methods import prepare_model
from .modeling import PAPER_ALSO_TRAINED, VideoBlipForCaptioning

CAPTION_METHODS: tuple[str, ...] = (
    "frozen",
    "full",
    "bitfit",
    "partial",
    "proj",
    "lora",
    "adapter",
    "read",
    "token_mix",
)
"""The methods the captioning recipe compares (the registry's names)."""
MIXING_METHODS: tuple[str, ...] = ("token_mix", "partial")
"""Methods that tune chosen vision blocks (``blocks``): with mixing, and the paper's ablation without it."""


def prepare_captioner(
    model: VideoBlipForCaptioning,
    method: str,
    blocks: Sequence[int] | None = None,
) -> nn.Module:
    """``model`` ready to train with ``method``.

    Every method but ``frozen`` also trains :data:`PAPER_ALSO_TRAINED` (the paper fine-tunes the projection and the
    language head in all its experiments; for the mixing methods they come from ``MethodTargets.token_mix``). ``token_mix`` mixes and tunes ``blocks`` (default: the last; Figure 4's "which layer mixes");
    ``partial`` tunes the same blocks without mixing: TokenMix with ``strategy="none"``, the paper's Table 3
    ablation, so the two rows differ in the mixing only (same wrapped modules, same trainable tensors).
    """
    if method not in CAPTION_METHODS:
        raise ValueError(f"`method` must be one of {CAPTION_METHODS} for captioning, got {method!r}")
    if blocks is not None and method not in MIXING_METHODS:
        raise ValueError(f"`blocks` applies to the methods {MIXING_METHODS}, not to {method!r}")
    if method in MIXING_METHODS:
        options: dict = {} if blocks is None else {"blocks": list(blocks)}
        if method == "partial":
            options["strategy"] = "none"
        return prepare_model(model, "token_mix", **options)
    return prepare_model(model, method, also_train=list(PAPER_ALSO_TRAINED) if method != "frozen" else [])
