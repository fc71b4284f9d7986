"""Configuration of RAP, the sparse-and-correlated adapter for text-video retrieval (Cao et al., ACL 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...architectures import validate_blocks
from ...video import validate_num_frames
from .._config import (
    PeftVideoConfig,
    check_bool,
    check_choice,
    check_optional_positive_int,
    check_positive_int,
)

PROJ_INITS = ("auto", "model", "random")


@dataclass
class RapConfig(PeftVideoConfig):
    """Configuration of a RAP adapter on a frame-wise CLIP video encoder (HF ``CLIPModel`` / ``CLIPVisionModel``,
    open_clip ``CLIP`` / ``VisionTransformer``).

    Each targeted vision self-attention gets LoRM (eq. 1-2): its input u = (1 + C) * x + S with C, S of shape T x D,
    each the product of a T x R and an R x D factor (one factor zero at init, so the output is unchanged), and ASA
    (eq. 5-8): per frame, the top-K patches by similarity to the conditioning sentence take their keys and values
    from patch n + gamma_n of frame t + delta_t. Each text-tower self-attention gets a scale and shift of shape D
    (eq. 3). The sentence embedding is handed over with :func:`peft_video.rap_condition`.

    ``use_lorm`` and ``use_asa`` are the ablation switches of Table 4: a part switched off keeps its settings
    (``rank`` for LoRM; ``top_k``, ``condition_dim``, ``proj_init`` for ASA; ``blocks`` for both), saved but unused,
    so that one config serves every row of an ablation. Contradictions are errors: ``text_modulation=True`` on a
    model without a text tower, LoRM or ASA on while ``target_modules`` selects no vision block, and vision (text)
    targets with LoRM and ASA (``text_modulation``) off. ``text_modulation=None`` (the default) means "in every text
    block, if the model has a text tower" and is decided at injection and saved.
    """

    method = "rap"

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Self-attention modules to adapt (names by suffix or one regex, full match). If None: the vision "
            "blocks chosen by `blocks` and, with `text_modulation`, every text block of HF CLIP / open_clip."
        },
    )
    num_frames: int = field(
        default=12,
        metadata={
            "help": "Frames per video T (paper: 12 on MSR-VTT). LoRM's T x R factors and ASA's temporal offsets have T "
            "rows, so every forward must see B*T frames, video-major."
        },
    )
    rank: int = field(
        default=3,
        metadata={
            "help": "Temporal rank R of LoRM's scale and shift (paper: 3); unused with use_lorm=False."
        },
    )
    top_k: int = field(
        default=3,
        metadata={
            "help": "Patches per frame that ASA warps, K (paper: 3); at most the patch count N; unused with use_asa=False."
        },
    )
    blocks: Literal["all", "light"] | list[int] | int = field(
        default="all",
        metadata={
            "help": "Vision blocks that get LoRM and ASA: 'all', 'light' (the last 4, RAP_light of Table 3), one index "
            "or a list of indices, Python style (-1: the last). Used to build the default `target_modules`; unused with use_lorm and use_asa False."
        },
    )
    use_lorm: bool = field(default=True, metadata={"help": "Low-rank temporal modulation of video features."})
    use_asa: bool = field(
        default=True,
        metadata={"help": "Asynchronous self-attention; needs a condition (`peft_video.rap_condition`)."},
    )
    text_modulation: bool | None = field(
        default=None,
        metadata={
            "help": "Scale and shift (eq. 3) in every text-tower block. None: where the model has a text tower (with "
            "explicit `target_modules`: where they select text blocks), decided at injection and saved. True: required "
            "(an error for a model without a text tower). False: off."
        },
    )
    condition_dim: int | None = field(
        default=None,
        metadata={
            "help": "Width E of the conditioning sentence embeddings (ASA's projection maps the vision width to E). "
            "If None: the model's joint embedding width (HF `projection_dim`, open_clip `embed_dim`). Unused with use_asa=False."
        },
    )
    proj_init: Literal["auto", "model", "random"] = field(
        default="auto",
        metadata={
            "help": "Initial ASA projection: 'model' copies the frozen visual projection (CLIP's patch-to-text map), "
            "'random' is nn.Linear's init, 'auto' is 'model' where the model has one of width E, else 'random'. "
            "Unused with use_asa=False."
        },
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "True: one LoRM factor, text scale/shift and offsets zero, so the output is unchanged at init. "
            "False: everything random (tests only)."
        },
    )

    def validate(self) -> None:
        validate_num_frames(self.num_frames)
        check_positive_int(self.rank, "rank", "LoRM temporal rank R")
        if self.use_lorm and self.rank > self.num_frames:
            raise ValueError(
                f"`rank`={self.rank} exceeds `num_frames`={self.num_frames}: LoRM's T x R factor cannot have rank "
                "above T (the paper uses R=3 with T=12)"
            )
        check_positive_int(self.top_k, "top_k", "patches ASA warps per frame")
        self.blocks = validate_blocks(self.blocks)
        for name in ("use_lorm", "use_asa", "init_weights"):
            check_bool(getattr(self, name), name)
        if self.text_modulation is not None:
            check_bool(self.text_modulation, "text_modulation")
        if not (self.use_lorm or self.use_asa or self.text_modulation is not False):
            raise ValueError(
                "`use_lorm`, `use_asa` and `text_modulation` are all False: the adapter would do nothing"
            )
        check_optional_positive_int(self.condition_dim, "condition_dim")
        check_choice(self.proj_init, "proj_init", PROJ_INITS)

    def upgrade_saved(self) -> None:
        # Before text_modulation=None existed, the saved True meant "where the model has a text tower": None now.
        if self.text_modulation is True:
            self.text_modulation = None
