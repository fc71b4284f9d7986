"""``evaluate`` module: text-to-video and video-to-text retrieval, R@1/5/10, MdR and MnR, optionally with DSL.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("video_text_retrieval")``.
"""

from __future__ import annotations

import datasets
import evaluate
import torch

from peft_video.tasks.retrieval.metrics.ranking import RECALL_KS, TIE_TOLERANCE, dual_softmax, rank_metrics

_DESCRIPTION = """
Text-video retrieval scores in both directions from one similarity matrix. Each example is a text query: its row of
scores against every video (``predictions``) and the indices of the videos that are correct for it
(``references``; one or more, e.g. every video with the same caption in a templated world). The video-to-text
direction uses the transposed matrix, a video's correct texts being the queries that list it (a video no
text lists is a candidate only). Ranks are tie-aware
(a tie is broken uniformly at random, in expectation). ``dual_softmax=True`` re-ranks each direction with DSL
(scores times the softmax over that direction's queries, at ``temperature``), which needs the whole query set.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of rows, row i = scores of text i against every video (higher is better), all one length.
    references: list of lists of int, the correct video indices of text i.
    dual_softmax: re-rank with DSL before ranking (default False).
    temperature: DSL temperature (default 0.01, CLIP's logit scale 100).
    tie_tolerance: scores closer than this are tied (default 1e-6).
Returns:
    t2v_R@1, t2v_R@5, t2v_R@10 (percent), t2v_MdR, t2v_MnR, and the same with prefix v2t_.
Example:
    >>> metric = peft_video.metrics.load("video_text_retrieval")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[0], [1]])["t2v_R@1"]
    100.0
"""


class VideoTextRetrieval(evaluate.Metric):
    """R@K, MdR and MnR for text-to-video and video-to-text retrieval from a (texts, videos) score matrix."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        dual_softmax: bool = False,
        temperature: float = 0.01,
        tie_tolerance: float = TIE_TOLERANCE,
    ) -> dict[str, float]:
        widths = {len(row) for row in predictions}
        if len(widths) != 1:
            raise ValueError(
                f"`predictions` rows must all score the same videos, got row lengths {sorted(widths)}"
            )
        scores = torch.tensor(predictions, dtype=torch.float64)
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        for i, videos in enumerate(references):
            bad = [j for j in videos if not 0 <= j < scores.shape[1]]
            if bad:
                raise ValueError(f"`references`[{i}] names videos {bad} outside 0..{scores.shape[1] - 1}")
            relevant[i, list(videos)] = True
        results = {}
        if not relevant.any(dim=1).all():
            raise ValueError("every text in `references` needs at least one correct video, got an empty list")
        queried = relevant.any(dim=0)  # videos no text is correct for take part as candidates only
        for prefix, s, r in (("t2v", scores, relevant), ("v2t", scores.T, relevant.T)):
            if dual_softmax:
                s = _dual_softmax(s, temperature)
            if prefix == "v2t":
                s, r = s[queried], r[queried]
            metrics = rank_metrics(s, r, RECALL_KS, tie_tolerance)
            results.update({f"{prefix}_{name}": value for name, value in metrics.items()})
        return results


_dual_softmax = dual_softmax  # the keyword argument of _compute shadows the function's name
