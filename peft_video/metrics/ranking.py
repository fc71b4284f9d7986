"""Retrieval ranking math on a score matrix: tie-aware ranks, R@K, MdR, MnR and dual-softmax re-ranking.

Shared by the ``evaluate`` modules in this package and by anything that scores retrieval directly. Scores are
(queries, candidates), higher is better; ``relevant`` marks the correct candidates of each query (one or more).
Candidates whose score is within ``tie_tolerance`` of the best relevant one are tied with it and the tie is broken
uniformly at random, in expectation: a mean-pooled model scores a video and its time-reversal identically (up to
rounding), and neither an optimistic nor a pessimistic tie rule would be fair to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.evaluation import TIE_TOLERANCE

__all__ = ["RECALL_KS", "dual_softmax", "expected_ranks", "rank_metrics", "recall_at_k", "relevance_matrix"]

RECALL_KS: tuple[int, ...] = (1, 5, 10)


def _check(scores: torch.Tensor, relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(
            f"`scores` must be a non-empty (queries, candidates) tensor, got {_describe(scores)}"
        )
    if not isinstance(relevant, torch.Tensor) or relevant.shape != scores.shape:
        raise ValueError(
            f"`relevant` must be a bool tensor of the shape of `scores` {tuple(scores.shape)}, got {_describe(relevant)}"
        )
    relevant = relevant.bool()
    empty = (~relevant.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"every query needs at least one relevant candidate; queries {empty[:5].tolist()} have none"
        )
    return scores.double(), relevant


def _tie_counts(
    scores: torch.Tensor, relevant: torch.Tensor, tie_tolerance: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: non-relevant candidates strictly above the best relevant score (h), tied with it (g), and the
    relevant candidates tied with it (r >= 1)."""
    scores, relevant = _check(scores, relevant)
    best = scores.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)
    above = scores > best + tie_tolerance
    tied = (scores - best).abs() <= tie_tolerance
    higher = (above & ~relevant).sum(dim=1).double()
    tied_other = (tied & ~relevant).sum(dim=1).double()
    tied_relevant = (tied & relevant).sum(dim=1).double()
    return higher, tied_other, tied_relevant


def expected_ranks(
    scores: torch.Tensor, relevant: torch.Tensor, tie_tolerance: float = TIE_TOLERANCE
) -> torch.Tensor:
    """Expected 1-based rank of each query's first relevant candidate, ties broken uniformly at random: (Q,) float64.

    With h candidates above and g non-relevant ones tied with r relevant ones, it is h + 1 + g / (r + 1).
    """
    higher, tied_other, tied_relevant = _tie_counts(scores, relevant, tie_tolerance)
    return higher + 1 + tied_other / (tied_relevant + 1)


def recall_at_k(
    scores: torch.Tensor, relevant: torch.Tensor, k: int, tie_tolerance: float = TIE_TOLERANCE
) -> torch.Tensor:
    """Per query, the probability that a relevant candidate is among the top ``k`` (0/1 without ties): (Q,) float64.

    In a random order of g tied non-relevant and r tied relevant candidates, the first j are all non-relevant with
    probability prod_{i<j} (g - i) / (g + r - i); a relevant one is in the top k when that fails for j = k - h.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"`k` must be a positive integer, got {k!r}")
    higher, tied_other, tied_relevant = _tie_counts(scores, relevant, tie_tolerance)
    slots = k - higher  # how many of the tied block may come before the cut
    miss = torch.ones_like(higher)
    total = tied_other + tied_relevant
    for i in range(k):
        factor = ((tied_other - i) / (total - i)).clamp(min=0)
        miss = torch.where(slots > i, miss * factor, miss)
    return torch.where(slots >= 1, 1 - miss, torch.zeros_like(miss))


def rank_metrics(
    scores: torch.Tensor,
    relevant: torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    tie_tolerance: float = TIE_TOLERANCE,
) -> dict[str, float]:
    """``R@k`` for each k (percent, as retrieval papers report), ``MdR`` and ``MnR`` (expected ranks, 1 is best)."""
    ranks = expected_ranks(scores, relevant, tie_tolerance)
    metrics = {f"R@{k}": 100.0 * float(recall_at_k(scores, relevant, k, tie_tolerance).mean()) for k in ks}
    metrics["MdR"] = float(
        ranks.median()
    )  # the lower median for an even count, like torch and CLIP4Clip's floor
    metrics["MnR"] = float(ranks.mean())
    return metrics


def dual_softmax(scores: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Dual-softmax re-ranking (DSL, Cheng et al. 2021, RAP*): scale each score by the softmax over all *queries*
    (dim 0) of its candidate's column, at ``temperature``; a candidate that matches many queries is demoted."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ValueError(f"`scores` must be a (queries, candidates) tensor, got {_describe(scores)}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`temperature` must be a positive number, got {temperature!r}")
    return scores * torch.softmax(scores / temperature, dim=0)


def relevance_matrix(query_keys: Sequence[object], candidate_keys: Sequence[object]) -> torch.Tensor:
    """(Q, C) bool: candidate j is relevant to query i when their keys are equal (e.g. the same caption text, so
    that the duplicate captions of a templated world count as correct, or the same video id)."""
    index: dict[object, list[int]] = {}
    for j, key in enumerate(candidate_keys):
        index.setdefault(key, []).append(j)
    relevant = torch.zeros(len(query_keys), len(candidate_keys), dtype=torch.bool)
    for i, key in enumerate(query_keys):
        relevant[i, index.get(key, [])] = True
    return relevant


def _describe(value: object) -> str:
    return f"tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
