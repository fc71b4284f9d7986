"""``evaluate`` module: QVHighlights moment retrieval and highlight detection, the official scorer's brief metrics.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("qvhighlights")``.
"""

from __future__ import annotations

import datasets
import evaluate

from peft_video.tasks.grounding.metrics.records import JsonRecordInputs, decode_records, qvhighlights_scores

_DESCRIPTION = """
The brief metrics of QVHighlights' official scorer (jayleicn/moment_detr standalone_eval/eval.py) with its exact
definitions, quirks included: moment retrieval mAP (VOC-interpolated AP averaged over IoU 0.5:0.05:0.95, first 10
listed windows), R1@0.5/0.7 (the first listed window against the ground-truth window it overlaps most), mAP per
ground-truth length range, and highlight detection mAP / Hit@1 at saliency >= 2, 3, 4 (Hit@1: positive for any
annotator). See ``peft_video.tasks.grounding.metrics.records.qvhighlights_scores`` for every definition.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: submission records, one per query: ``qid``, ``pred_relevant_windows`` [[start, end, score], ...]
        (seconds; the first 10 listed are scored), ``pred_saliency_scores`` (one per 2-s clip); ``query`` and
        ``vid`` may be present and are ignored. Either task's field may be absent from every record.
    references: annotation records as in the QVHighlights jsonl: ``qid``, ``relevant_windows`` [[start, end], ...],
        and for highlights ``duration``, ``relevant_clip_ids``, ``saliency_scores`` [[a1, a2, a3], ...].
    decimals: rounding of the percentages (default 2, as the official scorer; None: none).
    clip_length: seconds per clip (default 2).
    strict_saliency_length: a saliency list whose length is not the clip count is an error (default True); False
        applies the official scorer's zero-padding / cutting.
Records are stored as JSON text inside ``evaluate`` (their fields vary: the test split lacks windows, qids are
ints or strings), so any JSON-serialisable record works, numpy / torch numbers included; extra fields are ignored.
Returns:
    Percentages: MR-full-mAP, MR-full-mAP@0.5, MR-full-mAP@0.75, MR-full-R1@0.5, MR-full-R1@0.7, MR-short-mAP,
    MR-middle-mAP, MR-long-mAP (a length range without queries is left out instead of failing), and
    HL-min-{Fair,Good,VeryGood}-{mAP,Hit1}.
Example:
    >>> metric = peft_video.metrics.load("qvhighlights")
    >>> metric.compute(
    ...     predictions=[{"qid": 1, "pred_relevant_windows": [[10, 20, 0.9]]}],
    ...     references=[{"qid": 1, "relevant_windows": [[10, 20]]}],
    ... )["MR-full-mAP"]
    100.0
"""


class QVHighlights(JsonRecordInputs, evaluate.Metric):
    """QVHighlights' official brief metrics from submission and annotation records (records kept as JSON text)."""

    json_inputs = ("predictions", "references")

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        decimals: int | None = 2,
        clip_length: float = 2.0,
        strict_saliency_length: bool = True,
    ) -> dict[str, float]:
        return qvhighlights_scores(
            decode_records(predictions),
            decode_records(references),
            decimals=decimals,
            clip_length=clip_length,
            strict_saliency_length=strict_saliency_length,
        )
