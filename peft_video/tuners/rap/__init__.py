"""RAP: sparse-and-correlated adapter (LoRM + asynchronous self-attention) for CLIP text-video retrieval."""

from .condition import RapCondition, rap_condition
from .config import RapConfig
from .layer import RapCLIPAttention, RapLayer, RapMultiheadAttention
from .model import RapModel
from .retrieval import retrieval_scores

__all__ = [
    "RapCLIPAttention",
    "RapCondition",
    "RapConfig",
    "RapLayer",
    "RapModel",
    "RapMultiheadAttention",
    "rap_condition",
    "retrieval_scores",
]
