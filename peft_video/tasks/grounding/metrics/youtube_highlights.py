"""``evaluate`` module: YouTube Highlights mAP per domain and averaged, as UMT computes it.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("youtube_highlights")``.
"""

from __future__ import annotations

import datasets
import evaluate

from peft_video.tasks.grounding.metrics.records import (
    JsonRecordInputs,
    decode_records,
    youtube_highlights_scores,
)

_DESCRIPTION = """
Highlight detection on YouTube Highlights as UMT (TencentARC/UMT datasets/youtube.py) evaluates it: per video,
clips ranked by predicted saliency against the clip labels (highlight: label > 0), a trapezoid AP over the ranking
(AP 0 for a video without highlights), the mean over a domain's videos, and the mean over domains. See
``peft_video.tasks.grounding.metrics.records.youtube_highlights_scores``.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list, one per video, of predicted scores, one per clip.
    references: list of records ``{"labels": [...], "domain": "dog", "vid": "..."}``, one label per clip (0/1 or
        match counts); ``domain`` and ``vid`` optional (no domain: one group). Stored as JSON text.
    decimals: rounding of the percentages (default None: none; UMT prints fractions with 5 decimals).
Returns:
    mAP (mean over domains, percent) and mAP-<domain> for each domain.
Example:
    >>> metric = peft_video.metrics.load("youtube_highlights")
    >>> metric.compute(predictions=[[0.9, 0.1]], references=[{"labels": [1, 0], "domain": "dog"}])
    {'mAP': 100.0, 'mAP-dog': 100.0}
"""


class YouTubeHighlights(JsonRecordInputs, evaluate.Metric):
    """UMT's YouTube Highlights mAP from per-clip scores and clip labels."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, decimals: int | None = None) -> dict[str, float]:
        return youtube_highlights_scores(predictions, decode_records(references), decimals=decimals)
