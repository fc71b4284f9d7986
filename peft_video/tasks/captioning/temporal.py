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


FAMILY_OF_EVENT: dict[str, str] = {
    "left to right": "horizontal",
    "right to left": "horizontal",
    "down": "vertical",
    "up": "vertical",
    "grows": "size",
    "shrinks": "size",
    "appears": "visibility",
    "disappears": "visibility",
    "towards": "approach",
    "away": "approach",
    "appears and then": "sequence",
    "disappears and then": "sequence",
}
"""The event family each temporal fact belongs to (a fact and its time-reverse share it)."""


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
    """Fraction of predictions whose temporal fact equals their reference's (``temporal_fact_accuracy``); among the
    predictions that name the right kind of event (family), the fraction with the right direction / first event
    (``direction_accuracy``: exactly 50% for a captioner blind to frame order, which writes the same caption for a
    clip and its reversal); with ``order_pair_ids`` also the fraction of order-only pairs with both videos right
    (``temporal_pair_accuracy``).
    A reference without a fact is an error (this scorer is for the synthetic world's captions)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("`predictions` must not be empty")
    right, given_event = [], []
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        truth = temporal_fact(reference)
        if truth is None:
            raise ValueError(
                f"reference {index} ({reference!r}) states no temporal fact of the synthetic world"
            )
        fact = temporal_fact(prediction)
        right.append(fact == truth)
        if fact is not None and FAMILY_OF_EVENT[fact[0]] == FAMILY_OF_EVENT[truth[0]]:
            given_event.append(fact == truth)
    scores = {"temporal_fact_accuracy": sum(right) / len(right)}
    if given_event:
        scores["direction_accuracy"] = sum(given_event) / len(given_event)
    if order_pair_ids is not None:
        pairs: dict[int, list[bool]] = {}
        for pair, ok in zip(order_pair_ids, right, strict=True):
            pairs.setdefault(int(pair), []).append(ok)
        full = [all(oks) for oks in pairs.values() if len(oks) == 2]
        if full:
            scores["temporal_pair_accuracy"] = sum(full) / len(full)
    return scores
