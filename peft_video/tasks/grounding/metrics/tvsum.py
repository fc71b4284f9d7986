"""``evaluate`` module: TVSum top-5 mAP per category and averaged, as UMT computes it.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("tvsum")``.
"""

from __future__ import annotations

import datasets
import evaluate

from peft_video.tasks.grounding.metrics.records import JsonRecordInputs, decode_records, tvsum_scores

_DESCRIPTION = """
Highlight detection on TVSum as UMT (TencentARC/UMT datasets/tvsum.py) evaluates it: for each of the annotators,
clip labels are "score above that annotator's median" (the lower median for an even count), the 5 best-scored
clips are taken and a trapezoid AP runs over them (recall within those 5; AP 0 when none is positive); the mean
over videos, then over annotators, per domain (category), and the mean over domains. See
``peft_video.tasks.grounding.metrics.records.tvsum_scores``.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list, one per video, of predicted scores, one per clip.
    references: list of records ``{"annotations": [[s_1, ..., s_20], ...], "domain": "BK", "vid": "..."}``, one row
        per clip with every annotator's score; ``domain`` and ``vid`` optional (no domain: one group). Stored as
        JSON text.
    top_k: clips taken per video (default 5).
    decimals: rounding of the percentages (default None: none; UMT prints fractions with 5 decimals).
Returns:
    mAP (mean over domains, percent) and mAP-<domain> for each domain.
Example:
    >>> metric = peft_video.metrics.load("tvsum")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.5]], references=[{"annotations": [[5], [1], [1]]}])
    {'mAP': 100.0}
"""


class TVSum(JsonRecordInputs, evaluate.Metric):
    """UMT's TVSum top-5 mAP from per-clip scores and every annotator's per-clip scores."""

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

    def _compute(
        self, predictions, references, top_k: int = 5, decimals: int | None = None
    ) -> dict[str, float]:
        return tvsum_scores(predictions, decode_records(references), top_k=top_k, decimals=decimals)
