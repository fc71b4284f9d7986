"""Captioning metrics: the ``coco_caption`` ``evaluate`` module, the pycocoevalcap scoring it runs
(``coco_scoring``) and COCO-format result / ground-truth files (``coco_format``)."""

from .coco_format import (
    align_to_ground_truth,
    read_coco_ground_truth,
    read_coco_results,
    score_coco_files,
    write_coco_results,
)
from .coco_scoring import METRIC_KEYS, JavaNotFoundError, coco_caption_scores, ptb_tokenize, require_java

__all__ = [
    "METRIC_KEYS",
    "JavaNotFoundError",
    "align_to_ground_truth",
    "coco_caption_scores",
    "ptb_tokenize",
    "read_coco_ground_truth",
    "read_coco_results",
    "require_java",
    "score_coco_files",
    "write_coco_results",
]
