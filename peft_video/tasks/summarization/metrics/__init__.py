"""Summarization metrics: the ``rouge`` ``evaluate`` module and the ROUGE scoring it runs (``rouge_scoring``)."""

from .rouge_scoring import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, ROUGE_TYPES, bootstrap_mid, rouge_scores

__all__ = ["BOOTSTRAP_SAMPLES", "BOOTSTRAP_SEED", "ROUGE_TYPES", "bootstrap_mid", "rouge_scores"]
