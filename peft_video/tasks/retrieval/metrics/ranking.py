"""All retrieval ranking math, in one place: scores, tie-aware ranks, R@K, MdR, MnR, dual softmax, order-only pairs.

Shared by the ``evaluate`` modules beside this file, the retrieval evaluation and anything that scores retrieval
directly. Scores are (queries, candidates), higher is better; ``relevant`` marks the correct candidates of each query
(one or more). **The tie rule** (one for every function here): two scores within ``TIE_TOLERANCE`` of each other
(``abs(a - b) <= tie_tolerance``) are tied, and a tie is broken uniformly at random, in expectation: a mean-pooled
model scores a video and its time-reversal identically (up to rounding), and neither an optimistic nor a pessimistic
tie rule would be fair to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ....video import mean_pool_frames

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

RECALL_KS: tuple[int, ...] = (1, 5, 10)
TIE_TOLERANCE = 1e-6
"""Score gaps up to this count as ties: mean pooling makes a pair's scores equal up to rounding."""


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
    _check_temperature(temperature)
    return scores * torch.softmax(scores / temperature, dim=0)


def _check_temperature(temperature: object) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`temperature` must be a positive number, got {temperature!r}")


def retrieval_scores(
    query_embeds: torch.Tensor,
    candidate_embeds: torch.Tensor,
    *,
    num_frames: int | None = None,
    dual_softmax: bool = False,
    temperature: float = 0.01,
) -> torch.Tensor:
    """Cosine scores (Q, C): row i ranks the candidates for query i (higher is better).

    Text-to-video: ``retrieval_scores(text, video)``; video-to-text: ``retrieval_scores(video, text)``. With
    ``num_frames`` set, ``candidate_embeds`` are per-frame (C*T, E) embeddings, pooled first with
    :func:`peft_video.video.mean_pool_frames` (CLIP4Clip's meanP, as in the RAP paper). ``dual_softmax=True`` is
    RAP*'s DSL re-ranking (:func:`dual_softmax`), which needs the whole query set at once.
    """
    for name, value in (("query_embeds", query_embeds), ("candidate_embeds", candidate_embeds)):
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D tensor (items, E), got {_describe(value)}")
    _check_temperature(temperature)
    if num_frames is not None:
        candidate_embeds = mean_pool_frames(candidate_embeds, num_frames)
    if query_embeds.shape[1] != candidate_embeds.shape[1]:
        raise ValueError(
            f"`query_embeds` have width {query_embeds.shape[1]} but `candidate_embeds` have width "
            f"{candidate_embeds.shape[1]}"
        )
    scores = F.normalize(query_embeds, dim=-1) @ F.normalize(candidate_embeds, dim=-1).T
    return _dual_softmax(scores, temperature) if dual_softmax else scores


_dual_softmax = dual_softmax  # retrieval_scores' keyword argument shadows the function's name


def retrieval_at_1(
    similarity: torch.Tensor, query_captions: Sequence[str], item_captions: Sequence[str]
) -> float:
    """Fraction (0..1) of queries (rows of ``similarity``) whose top-scoring item carries the query's caption: R@1
    with :func:`relevance_matrix` of the captions, so duplicate captions of a templated world count as correct."""
    relevant = relevance_matrix(list(query_captions), list(item_captions))
    return float(recall_at_k(similarity, relevant, 1).mean())


def chance_at_1(query_captions: Sequence[str], item_captions: Sequence[str]) -> float:
    """Expected :func:`retrieval_at_1` of a random ranking."""
    counts = Counter(item_captions)
    return sum(counts[q] for q in query_captions) / (len(query_captions) * len(item_captions))


def order_pair_accuracy(
    similarity: torch.Tensor, order_pair_ids: Sequence[int], tie_tolerance: float = TIE_TOLERANCE
) -> dict[str, float]:
    """Two-way choices inside each order-only pair; ``similarity[i, j]`` scores video i against caption j.

    ``video_to_text``: does video i score its own caption above its partner's? ``text_to_video``: does caption i
    score its own video above the partner video? A tie (the module's tie rule) counts one half.
    """
    n = len(order_pair_ids)
    if not isinstance(similarity, torch.Tensor) or similarity.shape != (n, n):
        raise ValueError(
            f"`similarity` must be ({n}, {n}) (videos x their captions), got {_describe(similarity)}"
        )
    members: dict[int, list[int]] = {}
    for i, pair in enumerate(order_pair_ids):
        if int(pair) >= 0:
            members.setdefault(int(pair), []).append(i)
    pairs = [m for m in members.values() if len(m) == 2]
    if not pairs:
        raise ValueError(
            "`order_pair_ids` must contain at least one complete pair (two rows with the same id >= 0)"
        )
    own, other = torch.tensor(pairs).T
    own, other = torch.cat([own, other]), torch.cat([other, own])
    diagonal = similarity[own, own].double()
    v2t = _choice_credit(diagonal - similarity[own, other].double(), tie_tolerance)
    t2v = _choice_credit(diagonal - similarity[other, own].double(), tie_tolerance)
    return {"video_to_text": float(v2t.mean()), "text_to_video": float(t2v.mean())}


def _choice_credit(gap: torch.Tensor, tie_tolerance: float) -> torch.Tensor:
    """1 for a positive gap, 0 for a negative one, 1/2 for a tie."""
    return torch.where(gap.abs() <= tie_tolerance, 0.5, (gap > 0).double())


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
