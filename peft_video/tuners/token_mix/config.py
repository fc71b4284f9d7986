"""Configuration of TokenMix, the token mixing method of Liu et al., AAAI 2023 (Token Mixing, section "Method")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...architectures import validate_blocks
from ...video import validate_num_frames
from .._config import PeftVideoConfig, check_choice
from .blocks import FINETUNE_PARTS
from .mixing import validate_cross_frame_weight, validate_num_prefix_tokens, validate_strategy


@dataclass
class TokenMixConfig(PeftVideoConfig):
    """Configuration of a TokenMix adapter: cross-frame token mixing in some blocks of a frame-wise image encoder,
    trained by partial fine-tuning of those blocks (trainable copies of the chosen parts live in the adapter).

    The encoder sees B videos of T frames as B*T images (video-major). In every block listed in ``blocks`` each
    query of each frame attends to one key/value set built across the T frames of its video (eq. 8).

    ``strategy="none"`` is the paper's ablation switch (partial fine-tuning without mixing): the mixing settings
    (``cross_frame_weight``, ``num_prefix_tokens``, ``num_frames``) are then kept and saved but unused, so one config
    serves both rows of the ablation. ``target_modules`` is derived from ``blocks``, ``finetune`` and ``block_list``
    at injection (and recorded); setting it is an error (narrow the selection with ``exclude_modules``).
    """

    method = "token_mix"

    num_frames: int | None = field(
        default=None,
        metadata={
            "help": "Frames per video T (the encoder sees B*T frames, video-major). None: set it at run time with "
            "`peft_video.use_num_frames(T)`, which also overrides a configured value. Unused with strategy='none'."
        },
    )
    blocks: list[int] | int | Literal["all", "light"] = field(
        default_factory=lambda: [-1],
        metadata={
            "help": "Vision blocks that mix tokens and are fine-tuned: a list of indices, Python style ([-1]: the last "
            "block, the paper's setting), one index, 'all' or 'light' (the last 4)."
        },
    )
    finetune: Literal["block", "attention", "ffn", "none"] = field(
        default="block",
        metadata={
            "help": "What is trained in the mixed blocks: 'block' (whole block, the paper's default: 7.1M for a "
            "ViT-B/16 block), 'attention' (attention + its pre-norm: 2.4M), 'ffn' (MLP + its pre-norm: 4.7M) or "
            "'none' (mixing only; train other modules through `modules_to_save`)."
        },
    )
    strategy: Literal["uniform_cls", "uniform", "none"] = field(
        default="uniform_cls",
        metadata={
            "help": "Shared key/value set: 'uniform_cls' (patch j from frame j mod T plus the CLS tokens of all T "
            "frames, as in the authors' code), 'uniform' (position s from frame s mod T, exactly S keys, as in the "
            "paper's text) or 'none' (no mixing: partial fine-tuning only, the paper's ablation)."
        },
    )
    cross_frame_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight w of patch keys from other frames than the query's: adds log(w) to their logits (w < 1 "
            "favours the own frame). 1.0: no re-weighting. CLS keys are never re-weighted. Unused with strategy='none'."
        },
    )
    num_prefix_tokens: int = field(
        default=1,
        metadata={
            "help": "Non-patch tokens at the start of each frame's sequence (1 for a CLS token, 0 for none). Unused with "
            "strategy='none'."
        },
    )
    block_list: str | None = field(
        default=None,
        metadata={
            "help": "Dotted path of the ModuleList of vision blocks. None: chosen from the architecture (HF CLIP, "
            "CLIP vision, BLIP, BLIP vision, ViT, open_clip)."
        },
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Derived, do not set (an error): filled in at injection with the modules wrapped for `blocks` and "
            "`finetune`, and saved with the adapter."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Names (suffix match) or a regex (full match) of modules among those `blocks` and `finetune` "
            "select to leave alone: an excluded part is not fine-tuned, and an excluded attention does not mix."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Extra modules to train and save beside the adapter, e.g. the visual projection and the language "
            "head (the paper trains both)."
        },
    )

    def validate(self) -> None:
        if self.target_modules is not None:
            raise ValueError(
                f"`target_modules` is derived by TokenMix from `blocks`, `finetune` and `block_list` (got "
                f"{self.target_modules!r}); choose the blocks and parts with those, and leave some out with "
                "`exclude_modules`"
            )
        if self.num_frames is not None:
            validate_num_frames(self.num_frames)
        self.blocks = validate_blocks(self.blocks)
        check_choice(self.finetune, "finetune", FINETUNE_PARTS)
        validate_strategy(self.strategy)
        validate_cross_frame_weight(self.cross_frame_weight)
        validate_num_prefix_tokens(self.num_prefix_tokens)
        if self.strategy == "none" and self.finetune == "none":
            raise ValueError("`strategy`='none' with `finetune`='none' adapts nothing; change one of them")

    def upgrade_saved(self) -> None:
        # the recorded target_modules are what injection derived; loading derives them again
        self.target_modules = None
