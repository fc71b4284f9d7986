"""ROUGE for video-language summarization, the numbers READ-PVLA's code reports: the Hub ``rouge`` metric's recipe.

Per example, Google's ``rouge_score`` (``RougeScorer``: its default tokenizer lower-cases and keeps runs of
``[a-z0-9]``, so text without latin letters or digits has no tokens; Porter stemming only with ``use_stemmer``)
gives precision, recall and F-measure for each ROUGE type; with several references the one of highest F-measure
is taken, per type (``RougeScorer.score_multi``, so two types may pick different references). Over the corpus the
scores are aggregated as ``rouge_score.scoring.BootstrapAggregator`` does it, the Hub metric's default: 1,000
bootstrap resamples of the examples (with replacement, as many as there are examples), the mean of each, and the
"mid" value, the median of those means (the 50th percentile; close to, not exactly, the plain mean). Reported is the
mid F-measure times 100.

Determinism: ``BootstrapAggregator`` draws its resamples from numpy's global RNG (``np.random.choice``), one type after
the other, so the Hub metric's numbers move in the third or fourth digit from one process to the next unless
``evaluate.load("rouge", seed=s)`` seeds it. Here the same draws come from a private
``np.random.RandomState(bootstrap_seed)``, consumed type after type in the same order: the numbers equal
``BootstrapAggregator`` after ``np.random.seed(bootstrap_seed)`` (and so the Hub metric loaded with
``seed=bootstrap_seed``), repeated calls give the same numbers, and numpy's global RNG is never touched.

``rougeLsum`` is ``rouge_score``'s summary-level LCS over sentences separated by ``"\\n"``; nothing splits sentences
here (``rouge_score``'s ``split_summaries`` needs nltk's punkt data, a download), so text on one line gives
``rougeLsum == rougeL``: put one sentence per line for the summary-level variant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer

from peft_video.tasks.text_inputs import check_not_empty, check_text_pairs

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
"""The default types: unigram and bigram overlap, sentence-level LCS, summary-level LCS."""

BOOTSTRAP_SAMPLES = 1000
"""Bootstrap resamples per type: ``rouge_score``'s ``BootstrapAggregator`` default, which the Hub metric keeps."""

BOOTSTRAP_SEED = 0
"""Default seed of the private bootstrap RNG."""

_ROUGE_TYPE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")


def check_rouge_types(rouge_types: Sequence[str]) -> tuple[str, ...]:
    """``rouge_types`` as a tuple after checking each is ``rouge1`` .. ``rouge9``, ``rougeL`` or ``rougeLsum``."""
    if isinstance(rouge_types, str):
        rouge_types = [rouge_types]
    types = tuple(rouge_types)
    bad = [t for t in types if not (isinstance(t, str) and _ROUGE_TYPE.fullmatch(t))]
    if not types or bad or len(set(types)) != len(types):
        raise ValueError(
            "`rouge_types` must be distinct names among rouge1 .. rouge9, rougeL, rougeLsum, got "
            f"{list(types)!r}" + (f" (not ROUGE types: {bad!r})" if bad else "")
        )
    return types


def bootstrap_mid(
    matrix: np.ndarray, rng: np.random.RandomState, n_samples: int = BOOTSTRAP_SAMPLES
) -> np.ndarray:
    """The "mid" of ``BootstrapAggregator``: per column of ``matrix`` (examples x measures), the median over
    ``n_samples`` resamples (``len(matrix)`` rows drawn with replacement from ``rng``) of the resample's mean.

    Draws and arithmetic follow ``rouge_score`` step by step (one ``randint`` per resample, which is what
    ``choice`` over ``arange(n)`` draws; row means per resample; the percentile), so the result is the same float.
    """
    n = matrix.shape[0]
    means = np.zeros((n_samples, matrix.shape[1]))
    for i in range(n_samples):
        means[i, :] = np.mean(matrix[rng.randint(0, n, size=n), :], axis=0)
    return np.percentile(means, 50.0, axis=0)


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    *,
    use_stemmer: bool = False,
    use_aggregator: bool = True,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
    bootstrap_seed: int | None = BOOTSTRAP_SEED,
) -> dict[str, float] | dict[str, list[float]]:
    """ROUGE F-measures in percent, per type: the bootstrap mid over the corpus (``use_aggregator=True``) or one
    value per example (``use_aggregator=False``).

    ``references`` holds per example one string or a list of them (best F-measure per type). ``bootstrap_seed=None``
    draws the resamples from fresh OS entropy (the Hub metric's unseeded behaviour, not reproducible).
    """
    predictions, references = check_text_pairs(predictions, references)
    check_not_empty(predictions)
    types = check_rouge_types(rouge_types)
    if isinstance(bootstrap_samples, bool) or not isinstance(bootstrap_samples, int) or bootstrap_samples < 1:
        raise ValueError(f"`bootstrap_samples` must be a positive integer, got {bootstrap_samples!r}")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    per_example = [
        scorer.score_multi(refs, prediction) for prediction, refs in zip(predictions, references, strict=True)
    ]
    if not use_aggregator:
        return {t: [100 * float(scores[t].fmeasure) for scores in per_example] for t in types}
    rng = np.random.RandomState(bootstrap_seed)
    result = {}
    for t in types:  # one RNG stream across the types, in order, as BootstrapAggregator uses the global one
        matrix = np.vstack([tuple(scores[t]) for scores in per_example])  # (precision, recall, fmeasure)
        result[t] = 100 * float(bootstrap_mid(matrix, rng, bootstrap_samples)[2])
    return result
