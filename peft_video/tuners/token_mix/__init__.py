"""TokenMix: cross-frame token mixing attention with partial fine-tuning (Liu et al., AAAI 2023)."""

from .attention import TokenMixingAttention
from .blocks import apply_token_mixing, plan_token_mixing
from .config import TokenMixConfig
from .layer import TokenMixAttentionLayer, TokenMixCopyLayer, TokenMixLayer
from .mixing import TokenMixer, token_mixing_attention
from .model import TokenMixModel

__all__ = [
    "TokenMixAttentionLayer",
    "TokenMixConfig",
    "TokenMixCopyLayer",
    "TokenMixLayer",
    "TokenMixModel",
    "TokenMixer",
    "TokenMixingAttention",
    "apply_token_mixing",
    "plan_token_mixing",
    "token_mixing_attention",
]
