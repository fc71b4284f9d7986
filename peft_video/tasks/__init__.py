"""Video-language tasks built on the tuners: task models, method presets, training and evaluation helpers."""

from .backbones import ClipBackbone, OpenClipTokenizer, load_clip_backbone
from .evaluation import RetrievalEmbeddings, embed_dataset, evaluate_retrieval, retrieval_relevance
from .methods import FRAME_WISE, METHODS, peft_config_for, prepare_model, trainable_parameters
from .retrieval import (
    VideoTextRetrievalModel,
    VideoTextRetrievalOutput,
    mean_pool_frames,
    same_text_mask,
    symmetric_info_nce,
)
from .training import OrderPairSampler, VideoTextTrainer

__all__ = [
    "FRAME_WISE",
    "METHODS",
    "ClipBackbone",
    "OpenClipTokenizer",
    "OrderPairSampler",
    "RetrievalEmbeddings",
    "VideoTextRetrievalModel",
    "VideoTextRetrievalOutput",
    "VideoTextTrainer",
    "embed_dataset",
    "evaluate_retrieval",
    "load_clip_backbone",
    "mean_pool_frames",
    "peft_config_for",
    "prepare_model",
    "retrieval_relevance",
    "same_text_mask",
    "symmetric_info_nce",
    "trainable_parameters",
]
