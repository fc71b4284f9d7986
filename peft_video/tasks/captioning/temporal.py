"""Temporal facts of the synthetic world's captions, and whether generated captions get them right.

Caption metrics barely move when one word is wrong ("moves up" for "moves down" keeps BLEU-4 high), so on the
synthetic world every generated caption is also checked for its temporal fact: the event's direction (left to right
or back, up or down, grows or shrinks, appears or disappears, towards or away) and, for two-event captions, which
event comes first (the colour of the object named first). A video and its time-reversal always differ in this fact,
so a captioner that cannot see frame order (the same caption for both) gets at most one of each order-only pair
right: at most 50% accuracy, and 0% of pairs fully right.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...data.synthetic import COLOURS

_EVENTS: tuple[tuple[str, str], ...] = (  # (phrase, fact); longer phrases first so "moves away from" wins
    ("moves left to right", "left to right"),
    ("moves right to left", "right to left"),
    ("moves away from", "away"),
    ("moves towards", "towards"),
    ("moves down", "down"),
    ("moves up", "up"),
    ("grows", "grows"),
    ("shrinks", "shrinks"),
)


def temporal_fact(caption: str) -> tuple[str, str | None] | None:
    """``(event, first colour)`` of a caption: the direction of its event, and for two-event captions ("... appears
    and then ... appears") the colour named first; None when the caption states no event of the world."""
    words = caption.lower().replace(".", " ").split()
    text = " " + " ".join(words) + " "
    if " and then " in text:
        first, _, second = text.partition(" and then ")
        kind = (
            "appears"
            if " appears " in first + " "
            else "disappears"
            if " disappears " in first + " "
            else None
        )
        colour = next((w for w in first.split() if w in COLOURS), None)
        return (f"{kind} and then", colour) if kind else None
    for phrase, fact in _EVENTS:
        if f" {phrase} " in text:
            return fact, None
    if " disappears " in text:
        return "disappears", None
    if " appears " in text:
        return "appears", None
    return None


def temporal_fact_accuracy(
    predictions: Sequence[str], references: Sequence[str], order_pair_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """How often generated captions state their video's temporal fact.

    - ``temporal_fact_accuracy``: the fraction of predictions whose fact equals their reference's.
    - With ``order_pair_ids`` (the two videos of an order-only pair share an id), ``direction_accuracy``: among the
      predictions that state the fact of their own video or of its time-reversal, the fraction stating their own.
      A captioner blind to frame order writes the same caption for both videos of a pair, so it scores exactly 50%
      here, however well it names objects and events. And ``temporal_pair_accuracy``: the fraction of pairs with both
      videos right (0 for such a captioner).

    A reference without a fact is an error (this scorer is for the synthetic world's captions)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("`predictions` must not be empty")
    truths, facts = [], [temporal_fact(p) for p in predictions]
    for index, reference in enumerate(references):
        truth = temporal_fact(reference)
        if truth is None:
            raise ValueError(
                f"reference {index} ({reference!r}) states no temporal fact of the synthetic world"
            )
        truths.append(truth)
    right = [fact == truth for fact, truth in zip(facts, truths, strict=True)]
    scores = {"temporal_fact_accuracy": sum(right) / len(right)}
    if order_pair_ids is None:
        return scores
    if len(order_pair_ids) != len(predictions):
        raise ValueError(f"{len(order_pair_ids)} order_pair_ids for {len(predictions)} predictions")
    members: dict[int, list[int]] = {}
    for index, pair in enumerate(order_pair_ids):
        members.setdefault(int(pair), []).append(index)
    own_or_reversed, full = [], []
    for indices in members.values():
        if len(indices) != 2:
            continue
        full.append(all(right[i] for i in indices))
        for i, partner in (indices, indices[::-1]):
            if facts[i] in (truths[i], truths[partner]):
                own_or_reversed.append(facts[i] == truths[i])
    if own_or_reversed:
        scores["direction_accuracy"] = sum(own_or_reversed) / len(own_or_reversed)
    if full:
        scores["temporal_pair_accuracy"] = sum(full) / len(full)
    return scores
