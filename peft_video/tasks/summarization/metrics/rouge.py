"""``evaluate`` module: ROUGE-1 / ROUGE-2 / ROUGE-L / ROUGE-Lsum F-measures in percent, as READ-PVLA's code reports
them (Google's ``rouge_score``, aggregated like the Hub ``rouge`` metric, with a seeded bootstrap).

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("rouge")``. The scoring itself lives in
``peft_video.tasks.summarization.metrics.rouge_scoring``.
"""

from __future__ import annotations

import datasets
import evaluate

from peft_video.tasks.summarization.metrics.rouge_scoring import (
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    ROUGE_TYPES,
    rouge_scores,
)
from peft_video.tasks.text_inputs import TextPairInputs

_CITATION = """
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""

_DESCRIPTION = """
ROUGE F-measures of generated summaries against references, in percent: Google's rouge_score per example (its
tokenizer lower-cases and keeps [a-z0-9] runs; best reference per type when there are several), then the corpus
value is the "mid" of rouge_score's bootstrap (median of 1,000 resample means), the recipe of the Hub `rouge` metric,
with the resamples drawn from a private RNG seeded by `bootstrap_seed`, so that the numbers are reproducible.
rougeLsum splits sentences at newlines only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one generated summary per example (may be empty).
    references: list with, per example, a str or a non-empty list of str (the best-matching one counts, per type).
    rouge_types: types to compute (default rouge1, rouge2, rougeL, rougeLsum; also rouge3 .. rouge9).
    use_stemmer: Porter-stem tokens before matching (default False, as READ-PVLA reports).
    use_aggregator: True (default): one bootstrap-mid value per type; False: a list with one value per example.
    bootstrap_samples: bootstrap resamples (default 1000).
    bootstrap_seed: seed of the bootstrap RNG (default 0; None: fresh entropy, not reproducible).
Returns:
    rouge1, rouge2, rougeL, rougeLsum: F-measures in percent (floats, or lists with use_aggregator=False).
Example:
    >>> rouge = peft_video.metrics.load("rouge")
    >>> rouge.compute(predictions=["a man is cooking"], references=["a man cooks pasta"])["rouge1"]
    50.0
"""


class Rouge(TextPairInputs, evaluate.Metric):
    """ROUGE F-measures (percent) of summaries, bootstrap-aggregated like the Hub metric but reproducibly."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(
        self,
        predictions,
        references,
        rouge_types=ROUGE_TYPES,
        use_stemmer: bool = False,
        use_aggregator: bool = True,
        bootstrap_samples: int = BOOTSTRAP_SAMPLES,
        bootstrap_seed: int | None = BOOTSTRAP_SEED,
    ):
        return rouge_scores(
            predictions,
            references,
            rouge_types,
            use_stemmer=use_stemmer,
            use_aggregator=use_aggregator,
            bootstrap_samples=bootstrap_samples,
            bootstrap_seed=bootstrap_seed,
        )
