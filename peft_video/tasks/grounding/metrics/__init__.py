"""Grounding and highlight-detection metrics: ``evaluate`` modules and the scorer math they share.

``qvhighlights.py``, ``youtube_highlights.py`` and ``tvsum.py`` are ``evaluate`` scripts (load them with
``peft_video.metrics.load(name)``); ``scoring`` holds the numpy math, ``records`` the record-level scorers they
call, ``submission`` the official QVHighlights submission jsonl.
"""

from .records import (
    LENGTH_RANGES,
    MAX_PRED_WINDOWS,
    SALIENCY_LEVELS,
    qvhighlights_scores,
    tvsum_scores,
    youtube_highlights_scores,
)
from .scoring import (
    IOU_THRESHOLDS,
    detection_ap,
    hit_at_one,
    interpolated_ranking_ap,
    temporal_iou,
    top1_iou,
    trapezoid_ap,
    tvsum_video_ap,
    voc_interpolated_ap,
    youtube_video_ap,
)
from .submission import SUBMISSION_FIELDS, read_submission, submission_record, write_submission

__all__ = [
    "IOU_THRESHOLDS",
    "LENGTH_RANGES",
    "MAX_PRED_WINDOWS",
    "SALIENCY_LEVELS",
    "SUBMISSION_FIELDS",
    "detection_ap",
    "hit_at_one",
    "interpolated_ranking_ap",
    "qvhighlights_scores",
    "read_submission",
    "submission_record",
    "temporal_iou",
    "top1_iou",
    "trapezoid_ap",
    "tvsum_scores",
    "tvsum_video_ap",
    "voc_interpolated_ap",
    "write_submission",
    "youtube_highlights_scores",
    "youtube_video_ap",
]
