"""``evaluate`` module: accuracy on order-only pairs (a video and its time-reversal, captions that differ only in
temporal order). Chance is 50%; a model that mean-pools frame-wise features is at exactly 50% by construction.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("order_pair_accuracy")``.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from peft_video.tasks.retrieval.metrics.ranking import order_pair_accuracy

_DESCRIPTION = """
Each example is a video: its row of scores against the captions of all videos, in the same order (``predictions``),
and its order-only pair id (``references``; -1 for a video without a partner). video_to_text: does each video score
its own caption above its partner's? text_to_video: does each caption score its own video above the partner video?
Ties count one half.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of rows, row i = scores of video i against the caption of every video (N x N).
    references: list of int, the order-only pair id of video i (-1: none).
Returns:
    video_to_text, text_to_video: accuracies in [0, 1] over the complete pairs.
Example:
    >>> metric = peft_video.metrics.load("order_pair_accuracy")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 0])["video_to_text"]
    1.0
"""


class OrderPairAccuracy(evaluate.Metric):
    """Two-way choices inside each order-only pair, in both directions (see peft_video.tasks.retrieval.metrics.ranking)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        widths = {len(row) for row in predictions}
        if widths != {len(references)}:
            raise ValueError(
                f"`predictions` must be a square matrix (each video against all {len(references)} captions), "
                f"got row lengths {sorted(widths)}"
            )
        return order_pair_accuracy(torch.tensor(predictions, dtype=torch.float64), list(references))
