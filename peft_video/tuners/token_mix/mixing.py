"""Token mixing attention (eq. 8 of Liu et al., AAAI 2023): every query of every frame attends to one key/value set
built across the T frames of its video. Pure tensor math; knows nothing of models.

Key-set strategies (``S`` tokens per frame, the first ``P`` of them prefix tokens such as CLS):

- ``"uniform_cls"`` (default; the authors' public code): patch ``j`` (0-based, prefix excluded) is taken from frame
  ``j mod T``, and the prefix tokens of *all* T frames are added: ``T*P + (S - P)`` keys.
- ``"uniform"`` (the paper's text, read as position ``s`` from frame ``s mod T``, prefix included): exactly ``S`` keys,
  as the paper restricts ``|K| = S``.
- ``"none"``: no mixing (each frame attends to itself); the paper's "partial fine-tuning without TM" ablation.

Both mixing strategies tie positions to frames, so the result depends on the frame order. With ``T = 1`` both key sets
are the frame's own tokens in their own order, and eq. 8 is plain self-attention (eq. 3).

``cross_frame_weight`` w multiplies the unnormalised attention weight ``exp(logit)`` of patch keys taken from another
frame than the query's, i.e. adds ``log w`` to their logits. The public code instead multiplies those *logits* by 0.8,
which is sign-dependent (it raises negative logits); the additive log-space bias is the sound form of "down-weight
other frames". As in the public code, prefix keys are never re-weighted.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...video import flatten_frames, resolve_num_frames, unflatten_frames
from .._config import check_choice

MIXING_STRATEGIES = ("uniform_cls", "uniform", "none")


def validate_strategy(strategy: object) -> str:
    """Return ``strategy`` or raise a ``ValueError`` naming the argument and the allowed values."""
    return check_choice(strategy, "strategy", MIXING_STRATEGIES)


def validate_cross_frame_weight(weight: object) -> float:
    """Return ``weight`` as a float, or raise if it is not a finite positive number."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise ValueError(
            f"`cross_frame_weight` must be a finite number > 0 (1.0: no re-weighting), got {weight!r}"
        )
    return float(weight)


def validate_num_prefix_tokens(num_prefix_tokens: object) -> int:
    """Return ``num_prefix_tokens`` or raise if it is not a non-negative integer."""
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(
            f"`num_prefix_tokens` must be a non-negative integer (1 for a CLS token), got {num_prefix_tokens!r}"
        )
    return num_prefix_tokens


@functools.lru_cache(maxsize=64)
def mixed_key_index(
    strategy: str, num_frames: int, seq_len: int, num_prefix_tokens: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frame, position)`` of every key of the shared set, as two int64 tensors of length K (cached, on CPU)."""
    validate_strategy(strategy)
    if strategy == "none":
        raise ValueError("strategy 'none' builds no shared key set: each frame attends to its own tokens")
    if num_prefix_tokens > seq_len:
        raise ValueError(
            f"`num_prefix_tokens`={num_prefix_tokens} exceeds the {seq_len} tokens per frame of this input"
        )
    positions = torch.arange(seq_len)
    if strategy == "uniform":
        return positions % num_frames, positions
    prefix_frames = torch.arange(num_frames).repeat_interleave(num_prefix_tokens)
    prefix_positions = torch.arange(num_prefix_tokens).repeat(num_frames)
    patches = positions[num_prefix_tokens:]
    patch_frames = (patches - num_prefix_tokens) % num_frames
    return torch.cat([prefix_frames, patch_frames]), torch.cat([prefix_positions, patches])


def cross_frame_bias(
    key_frames: torch.Tensor,
    key_positions: torch.Tensor,
    num_frames: int,
    seq_len: int,
    weight: float,
    num_prefix_tokens: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive logit bias of shape (T*S, K): ``log(weight)`` where a patch key comes from another frame, else 0."""
    query_frames = torch.arange(num_frames, device=key_frames.device).repeat_interleave(seq_len)
    other_frame = query_frames[:, None] != key_frames[None, :]
    patch_key = (key_positions >= num_prefix_tokens)[None, :]
    zero = torch.zeros((), dtype=dtype, device=key_frames.device)
    return torch.where(other_frame & patch_key, zero + math.log(weight), zero)


def token_mixing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_frames: int,
    *,
    strategy: str = "uniform_cls",
    scale: float | None = None,
    cross_frame_weight: float = 1.0,
    num_prefix_tokens: int = 1,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Eq. 8 on per-frame heads: q, k, v of shape (B*T, H, S, d) -> attention output (B*T, H, S, d).

    Queries of all T frames of a video attend to the one key/value set chosen by ``strategy``;
    ``strategy="none"`` is per-frame self-attention.
    """
    if strategy == "none":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    frames_q = unflatten_frames(q, num_frames)  # (B, T, H, S, d)
    videos, _, heads, seq_len, head_dim = frames_q.shape
    key_frames, key_positions = mixed_key_index(strategy, num_frames, seq_len, num_prefix_tokens)
    key_frames = key_frames.to(q.device)
    key_positions = key_positions.to(q.device)
    # (B, T, H, S, d) -> (B, H, T, S, d); advanced indexing of the adjacent (T, S) axes gives (B, H, K, d)
    keys = unflatten_frames(k, num_frames).transpose(1, 2)[:, :, key_frames, key_positions]
    values = unflatten_frames(v, num_frames).transpose(1, 2)[:, :, key_frames, key_positions]
    queries = frames_q.transpose(1, 2).reshape(videos, heads, num_frames * seq_len, head_dim)
    bias = None
    if cross_frame_weight != 1.0:
        bias = cross_frame_bias(
            key_frames,
            key_positions,
            num_frames,
            seq_len,
            cross_frame_weight,
            num_prefix_tokens,
            dtype=q.dtype,
        )
    out = F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=bias, dropout_p=dropout_p, scale=scale
    )
    out = out.reshape(videos, heads, num_frames, seq_len, head_dim).transpose(1, 2)
    return flatten_frames(out)


class TokenMixer(nn.Module):
    """The mixing settings of one adapter or one merged block (no weights): T, strategy, cross-frame weight.

    ``num_frames=None`` defers T to :func:`peft_video.use_num_frames`; a ``use_num_frames`` context always wins.
    """

    def __init__(
        self,
        num_frames: int | None,
        strategy: str = "uniform_cls",
        cross_frame_weight: float = 1.0,
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.strategy = validate_strategy(strategy)
        self.cross_frame_weight = validate_cross_frame_weight(cross_frame_weight)
        self.num_prefix_tokens = validate_num_prefix_tokens(num_prefix_tokens)

    def frames(self) -> int:
        """The frame count in force for this forward pass."""
        return resolve_num_frames(self.num_frames)

    def is_identity(self, num_frames: int) -> bool:
        """True when eq. 8 reduces to per-frame self-attention: no mixing, or a single frame."""
        return self.strategy == "none" or num_frames == 1

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, dropout_p: float = 0.0
    ) -> torch.Tensor:
        return token_mixing_attention(
            q,
            k,
            v,
            self.frames(),
            strategy=self.strategy,
            scale=scale,
            cross_frame_weight=self.cross_frame_weight,
            num_prefix_tokens=self.num_prefix_tokens,
            dropout_p=dropout_p,
        )

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, strategy={self.strategy!r}, "
            f"cross_frame_weight={self.cross_frame_weight}, num_prefix_tokens={self.num_prefix_tokens}"
        )
