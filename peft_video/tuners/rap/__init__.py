"""RAP: sparse-and-correlated adapter (LoRM + asynchronous self-attention) for CLIP text-video retrieval."""

# RAP's sentence conditioning is the generic mechanism of peft_video.conditioning; these names stay importable
# from here (RapCondition is SentenceCondition), but task code imports them from peft_video.conditioning.
from ...conditioning import SentenceCondition as RapCondition
from ...conditioning import rap_condition
from .config import RapConfig
from .layer import RapCLIPAttention, RapLayer, RapMultiheadAttention
from .model import RapModel

__all__ = [
    "RapCLIPAttention",
    "RapCondition",
    "RapConfig",
    "RapLayer",
    "RapModel",
    "RapMultiheadAttention",
    "rap_condition",
]
