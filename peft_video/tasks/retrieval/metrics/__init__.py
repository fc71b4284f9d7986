"""Retrieval metrics: the ranking math (``ranking``) and the ``evaluate`` modules built on it."""

from .ranking import (
    RECALL_KS,
    TIE_TOLERANCE,
    chance_at_1,
    dual_softmax,
    expected_ranks,
    order_pair_accuracy,
    rank_metrics,
    recall_at_k,
    relevance_matrix,
    retrieval_at_1,
    retrieval_scores,
)

__all__ = [
    "RECALL_KS",
    "TIE_TOLERANCE",
    "chance_at_1",
    "dual_softmax",
    "expected_ranks",
    "order_pair_accuracy",
    "rank_metrics",
    "recall_at_k",
    "relevance_matrix",
    "retrieval_at_1",
    "retrieval_scores",
]
