"""Temporal language grounding and highlight detection (READ-PVLA's first task): model, data, metrics, training.

* :class:`GroundingModel` / :class:`GroundingConfig`: a Moment-DETR-style model over clip and query token features
  (registered with ``AutoConfig`` / ``AutoModel`` as ``peft_video_grounding``).
* Data: :func:`load_qvhighlights`, :func:`load_highlight_dataset` (YouTube Highlights, TVSum), the synthetic world
  (:func:`build_world`), :class:`GroundingDataset`, :class:`GroundingCollator`.
* :class:`GroundingTrainer` (``transformers.Trainer``), :class:`ValidationSelection` (model selection on a
  validation split), :func:`predict_dataset`, :func:`evaluate_grounding`, :class:`GroundingPredictor`.
* The shipped tiny model: :func:`tiny_grounding_path`, :func:`load_grounding_backbone`.
"""

from transformers import AutoConfig, AutoModel

from ..methods import METHODS
from .assets import BACKBONES, load_grounding_backbone, tiny_grounding_config, tiny_grounding_path
from .configuration import GroundingConfig
from .data import (
    GroundingCollator,
    GroundingDataset,
    GroundingRecord,
    InMemoryFeatures,
    NpzFeatures,
    l2_normalize,
    parse_record,
    saliency_pairs,
)
from .evaluation import (
    GROUNDING_COLUMNS,
    GROUNDING_SERIES,
    ORDER_KEY,
    SCORE_KEYS,
    SCORERS,
    UMT_KEY,
    evaluate_grounding,
)
from .formats import load_highlight_dataset, load_qvhighlights, read_jsonl
from .inference import decode_moments, predict_dataset, predict_features, sliding_windows, temporal_nms
from .modeling import NOT_APPLICABLE, GroundingModel, GroundingOutput
from .predictor import GroundingPredictor
from .selection import ValidationSelection, default_selection_metric
from .synthetic import DOMAINS, TARGET_DOMAINS, build_split, build_world, make_video
from .training import DEFAULT_PVLA_WEIGHT, GroundingTrainer

GROUNDING_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in NOT_APPLICABLE)
"""The method registry's methods that apply to the grounding model."""

AutoConfig.register(GroundingConfig.model_type, GroundingConfig, exist_ok=True)
AutoModel.register(GroundingConfig, GroundingModel, exist_ok=True)

__all__ = [
    "BACKBONES",
    "DEFAULT_PVLA_WEIGHT",
    "DOMAINS",
    "GROUNDING_COLUMNS",
    "GROUNDING_METHODS",
    "GROUNDING_SERIES",
    "ORDER_KEY",
    "SCORERS",
    "SCORE_KEYS",
    "UMT_KEY",
    "TARGET_DOMAINS",
    "ValidationSelection",
    "GroundingCollator",
    "GroundingConfig",
    "GroundingDataset",
    "GroundingModel",
    "GroundingOutput",
    "GroundingPredictor",
    "GroundingRecord",
    "GroundingTrainer",
    "InMemoryFeatures",
    "NpzFeatures",
    "build_split",
    "build_world",
    "decode_moments",
    "default_selection_metric",
    "evaluate_grounding",
    "l2_normalize",
    "load_grounding_backbone",
    "load_highlight_dataset",
    "load_qvhighlights",
    "make_video",
    "parse_record",
    "predict_dataset",
    "predict_features",
    "read_jsonl",
    "saliency_pairs",
    "sliding_windows",
    "temporal_nms",
    "tiny_grounding_config",
    "tiny_grounding_path",
]
