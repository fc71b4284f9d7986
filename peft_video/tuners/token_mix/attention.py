"""Mixed self-attention computed from an attention module's own projection weights.

The mixed path never calls the wrapped module's attention backend (HF eager / sdpa / flash): it reads q/k/v and the
output projection from the module and runs :func:`token_mixing_attention`. Three module layouts are understood:
separate ``q_proj``/``k_proj``/``v_proj`` (HF CLIP, ViT), a fused ``qkv`` + ``projection`` (HF BLIP) and
``torch.nn.MultiheadAttention`` (open_clip). :class:`TokenMixingAttention` is the plain (non-peft) module that keeps
mixing after ``merge_and_unload``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .mixing import TokenMixer


def _dropout_p(module: nn.Module, *names: str) -> float:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, nn.Dropout):
            return value.p
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _reject_mask(mask: object, argument: str) -> None:
    if mask is not None:
        raise ValueError(
            f"TokenMix mixes unmasked self-attention of frame-wise image encoders; the mixed attention got "
            f"`{argument}` of type {type(mask).__name__}, expected None"
        )


class SeparateProjections:
    """HF CLIP / ViT style: ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` (or ``o_proj``); returns (out, None)."""

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj")) and (
            hasattr(module, "out_proj") or hasattr(module, "o_proj")
        )

    def hidden_states(self, args: tuple, kwargs: dict) -> torch.Tensor:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        _reject_mask(kwargs.get("attention_mask", args[1] if len(args) > 1 else None), "attention_mask")
        return hidden

    def heads(self, module: nn.Module) -> int:
        return getattr(module, "num_heads", None) or module.num_attention_heads

    def scale(self, module: nn.Module, head_dim: int) -> float:
        return getattr(module, "scale", None) or getattr(module, "scaling", None) or head_dim**-0.5

    def dropout(self, module: nn.Module) -> float:
        return _dropout_p(module, "attention_dropout", "dropout")

    def qkv(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return module.q_proj(x), module.k_proj(x), module.v_proj(x)

    def project_out(self, module: nn.Module, context: torch.Tensor) -> torch.Tensor:
        out_proj = module.out_proj if hasattr(module, "out_proj") else module.o_proj
        return out_proj(context)

    def result(self, out: torch.Tensor) -> tuple[torch.Tensor, None]:
        return out, None


class FusedQKV(SeparateProjections):
    """HF BLIP style: one ``qkv`` Linear (q, k, v stacked on the output axis) and ``projection``; returns (out, None)."""

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return hasattr(module, "qkv") and hasattr(module, "projection")

    def qkv(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = module.qkv(x).chunk(3, dim=-1)
        return q, k, v

    def project_out(self, module: nn.Module, context: torch.Tensor) -> torch.Tensor:
        return module.projection(context)


class TorchMultiheadAttention:
    """``nn.MultiheadAttention`` (open_clip), self-attention only; returns (out, None) like ``need_weights=False``."""

    @staticmethod
    def matches(module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def hidden_states(self, args: tuple, kwargs: dict) -> torch.Tensor:
        names = ("query", "key", "value")
        query, key, value = (
            kwargs[n] if n in kwargs else args[i] if len(args) > i else None for i, n in enumerate(names)
        )
        if key is not query or value is not query:
            raise ValueError(
                "TokenMix mixes self-attention only: the mixed nn.MultiheadAttention got `key`/`value` that are not "
                "the `query` tensor"
            )
        _reject_mask(kwargs.get("attn_mask"), "attn_mask")
        _reject_mask(kwargs.get("key_padding_mask"), "key_padding_mask")
        if kwargs.get("is_causal"):
            raise ValueError("TokenMix mixes bidirectional self-attention; got `is_causal=True`")
        return query

    def heads(self, module: nn.Module) -> int:
        return module.num_heads

    def scale(self, module: nn.Module, head_dim: int) -> float:
        return head_dim**-0.5

    def dropout(self, module: nn.Module) -> float:
        return float(module.dropout)

    def qkv(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if module.in_proj_weight is None:
            raise ValueError(
                "TokenMix needs nn.MultiheadAttention with a packed `in_proj_weight` (kdim == vdim == embed_dim)"
            )
        q, k, v = F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        return q, k, v

    def project_out(self, module: nn.Module, context: torch.Tensor) -> torch.Tensor:
        return module.out_proj(context)

    def result(self, out: torch.Tensor) -> tuple[torch.Tensor, None]:
        return out, None


_KINDS = (TorchMultiheadAttention, FusedQKV, SeparateProjections)


def attention_kind(module: nn.Module) -> SeparateProjections | TorchMultiheadAttention:
    """The layout adapter for ``module``, or a ``ValueError`` saying which layouts TokenMix understands."""
    for kind in _KINDS:
        if kind.matches(module):
            return kind()
    raise ValueError(
        f"TokenMix cannot mix attention module {type(module).__name__}: expected q_proj/k_proj/v_proj + out_proj|o_proj "
        "(HF CLIP, ViT), qkv + projection (HF BLIP) or torch.nn.MultiheadAttention (open_clip)"
    )


def floating_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the first floating-point parameter of ``module`` (None if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _cast(value: Any, dtype: torch.dtype | None) -> Any:
    if dtype is not None and isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


def call_in_own_dtype(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``module(*args, **kwargs)`` with floating inputs cast to the module's dtype and outputs cast back.

    peft upcasts adapter weights of bf16/fp16 models to fp32; TokenMix's trainable copies are such weights.
    """
    dtype = floating_dtype(module)
    first = next(
        (a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_floating_point()), None
    )
    if dtype is None or first is None or first.dtype == dtype:
        return module(*args, **kwargs)
    out = module(*_cast(args, dtype), **{k: _cast(v, dtype) for k, v in kwargs.items()})
    return _cast(out, first.dtype)


def mixed_attention_forward(
    attention: nn.Module, mixer: TokenMixer, args: tuple, kwargs: dict[str, Any]
) -> Any:
    """Run ``attention`` (called as ``attention(*args, **kwargs)``) with eq. 8 in place of its per-frame attention.

    When eq. 8 reduces to per-frame attention (one frame, or ``strategy="none"``) the module's own forward runs, so the
    output is bit-identical to the unmixed module. Computation happens in the weights' dtype; the output is cast back.
    """
    if mixer.strategy == "none":  # no mixing: T is not needed (nor required)
        return call_in_own_dtype(attention, args, kwargs)
    num_frames = mixer.frames()
    if mixer.is_identity(num_frames):
        return call_in_own_dtype(attention, args, kwargs)
    kind = attention_kind(attention)
    hidden = kind.hidden_states(args, kwargs)
    batch_first = getattr(attention, "batch_first", True)
    if not batch_first:
        hidden = hidden.transpose(0, 1)
    if hidden.ndim != 3:
        raise ValueError(
            f"TokenMix expects the mixed attention's input as (B*T, S, D) frames, got shape {tuple(hidden.shape)}"
        )
    input_dtype = hidden.dtype
    weight_dtype = floating_dtype(attention) or input_dtype
    x = hidden.to(weight_dtype)
    frames, tokens, width = x.shape
    heads = kind.heads(attention)
    head_dim = width // heads
    q, k, v = (t.reshape(frames, tokens, heads, head_dim).transpose(1, 2) for t in kind.qkv(attention, x))
    dropout_p = kind.dropout(attention) if attention.training else 0.0
    context = mixer(q, k, v, scale=kind.scale(attention, head_dim), dropout_p=dropout_p)
    out = kind.project_out(attention, context.transpose(1, 2).reshape(frames, tokens, width)).to(input_dtype)
    if not batch_first:
        out = out.transpose(0, 1)
    return kind.result(out)


def _hide_wrapper_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    inner = prefix + "attention."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _restore_wrapper_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    inner = prefix + "attention."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)


class TokenMixingAttention(nn.Module):
    """A plain attention module that mixes tokens across frames (eq. 8); what stays in a block after merging.

    It wraps the block's attention module (``.attention``) and a weightless :class:`TokenMixer` (``.mixer``, which
    knows T). Its state dict has the wrapped module's keys, so a merged model's state dict loads into the plain
    architecture and vice versa (re-apply mixing with :func:`peft_video.tuners.token_mix.apply_token_mixing`).
    """

    def __init__(self, attention: nn.Module, mixer: TokenMixer) -> None:
        super().__init__()
        attention_kind(attention)  # fail early on layouts we cannot mix
        self.attention = attention
        self.mixer = mixer
        self.register_state_dict_post_hook(_hide_wrapper_prefix)
        self.register_load_state_dict_pre_hook(_restore_wrapper_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return mixed_attention_forward(self.attention, self.mixer, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("attention", "mixer"):
                raise
            return getattr(self.attention, name)
