"""Retrieval scores for templated worlds, where many items share one caption, and the order-only pair score.

A retrieved item counts as correct when it carries the query's caption (not only when it is the query's own
item), so duplicate captions neither help nor hurt; ``chance_at_1`` is the matching random-ranking baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

TIE_TOLERANCE = 1e-6
"""Score gaps below this count as ties (half credit): mean pooling makes pair scores equal up to rounding."""


def retrieval_at_1(
    similarity: torch.Tensor, query_captions: Sequence[str], item_captions: Sequence[str]
) -> float:
    """Fraction of queries (rows of ``similarity``) whose highest-scoring item has the query's caption."""
    if similarity.shape != (len(query_captions), len(item_captions)):
        raise ValueError(
            f"`similarity` must be (queries, items) = ({len(query_captions)}, {len(item_captions)}), "
            f"got {tuple(similarity.shape)}"
        )
    top = similarity.argmax(dim=1).tolist()
    return sum(item_captions[j] == q for j, q in zip(top, query_captions, strict=True)) / len(query_captions)


def chance_at_1(query_captions: Sequence[str], item_captions: Sequence[str]) -> float:
    """Expected ``retrieval_at_1`` of a random ranking."""
    counts = Counter(item_captions)
    return sum(counts[q] for q in query_captions) / (len(query_captions) * len(item_captions))


def order_pair_accuracy(similarity: torch.Tensor, order_pair_ids: Sequence[int]) -> dict[str, float]:
    """Two-way choices inside each order-only pair; ``similarity[i, j]`` scores video i against caption j.

    ``video_to_text``: does video i score its own caption above its partner's? ``text_to_video``: does caption i
    score its own video above the partner video? Ties (within ``TIE_TOLERANCE``) count one half.
    """
    n = len(order_pair_ids)
    if similarity.shape != (n, n):
        raise ValueError(
            f"`similarity` must be ({n}, {n}) (videos x their captions), got {tuple(similarity.shape)}"
        )
    members: dict[int, list[int]] = {}
    for i, pair in enumerate(order_pair_ids):
        if pair >= 0:
            members.setdefault(int(pair), []).append(i)
    pairs = [m for m in members.values() if len(m) == 2]
    if not pairs:
        raise ValueError(
            "`order_pair_ids` must contain at least one complete pair (two rows with the same id >= 0)"
        )

    def score(gap: float) -> float:
        return 0.5 if abs(gap) < TIE_TOLERANCE else float(gap > 0)

    v2t = t2v = 0.0
    for a, b in pairs:
        for own, other in ((a, b), (b, a)):
            v2t += score(float(similarity[own, own] - similarity[own, other]))
            t2v += score(float(similarity[own, own] - similarity[other, own]))
    return {"video_to_text": v2t / (2 * len(pairs)), "text_to_video": t2v / (2 * len(pairs))}
