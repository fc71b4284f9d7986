"""Text-video retrieval (RAP's task, and the first task of READ and TokenMix): the task model, Trainer glue,
evaluation and metrics. Data comes from the shared ``peft_video.data`` (synthetic world, MSR-VTT-style loaders)."""

from .evaluation import (
    RETRIEVAL_COLUMNS,
    RETRIEVAL_SERIES,
    RetrievalEmbeddings,
    embed_dataset,
    evaluate_retrieval,
    retrieval_relevance,
)
from .metrics.ranking import retrieval_scores
from .model import (
    TEXT_EMBEDDINGS,
    VideoTextRetrievalModel,
    VideoTextRetrievalOutput,
    pvla_source,
    same_text_mask,
    symmetric_info_nce,
)
from .training import OrderPairSampler, VideoTextTrainer

__all__ = [
    "RETRIEVAL_COLUMNS",
    "RETRIEVAL_SERIES",
    "TEXT_EMBEDDINGS",
    "OrderPairSampler",
    "RetrievalEmbeddings",
    "VideoTextRetrievalModel",
    "VideoTextRetrievalOutput",
    "VideoTextTrainer",
    "embed_dataset",
    "evaluate_retrieval",
    "pvla_source",
    "retrieval_relevance",
    "retrieval_scores",
    "same_text_mask",
    "symmetric_info_nce",
]
