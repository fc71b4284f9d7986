"""Input checks shared by the text-generation metrics (summarization ROUGE, COCO caption metrics).

``evaluate`` stores inputs in Arrow before a metric sees them and casts on the way: an int becomes ``"5"``, a
list reference in a batch that starts with a string becomes the text ``"['a']"``, ``None`` slips through. So
the checks run on the raw Python inputs, in ``add`` / ``add_batch`` (which ``compute`` calls), through the
:class:`TextPairInputs` mixin, and every error names the argument and the index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _as_list(value: Any, name: str) -> list:
    """``value`` as a list when it is a sequence (list, tuple, numpy array, datasets column); else a clear error."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"`{name}` must be a list, got {type(value).__name__}: {value!r:.80}")
    return list(value)


def check_reference_list(refs: Any, name: str) -> list[str]:
    """One example's references (a string, or a non-empty list of non-blank strings) as a list of strings."""
    refs = [refs] if isinstance(refs, str) else _as_list(refs, name)
    if not refs:
        raise ValueError(f"`{name}` is an empty list: every example needs at least one reference")
    for j, ref in enumerate(refs):
        if not isinstance(ref, str):
            raise ValueError(f"`{name}[{j}]` must be a string, got {type(ref).__name__}: {ref!r:.80}")
        if not ref.strip():
            raise ValueError(f"`{name}[{j}]` is blank: a reference needs some text, got {ref!r}")
    return refs


def check_text_pairs(predictions: Any, references: Any) -> tuple[list[str], list[list[str]]]:
    """Check ``predictions`` (strings; an empty string is a valid, if poor, output) against ``references`` (per
    example a string or a non-empty list of non-blank strings); return them with every references entry a list.

    Raises ``ValueError`` naming the argument and the index of the first bad entry.
    """
    predictions = _as_list(predictions, "predictions")
    references = _as_list(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must have one entry per example, got {len(predictions)} predictions "
            f"and {len(references)} references"
        )
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ValueError(
                f"`predictions[{i}]` must be a string, got {type(prediction).__name__}: {prediction!r:.80}"
            )
    return predictions, [check_reference_list(refs, f"references[{i}]") for i, refs in enumerate(references)]


def check_not_empty(predictions: list) -> None:
    """The whole evaluated set must hold at least one example (a corpus score of nothing is undefined)."""
    if len(predictions) == 0:
        raise ValueError("`predictions` and `references` are empty: there is nothing to score")


class TextPairInputs:
    """Mixin for an ``evaluate.Metric`` whose inputs are prediction strings and reference lists: checks them in
    ``add`` / ``add_batch`` before ``evaluate`` casts them, and hands ``evaluate`` every references entry as a list
    (features ``{"predictions": string, "references": Sequence(string)}``).

    Not an ``evaluate`` class itself, so ``evaluate.load`` never mistakes it for the metric of a script.
    """

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Check a batch of predictions and references (see ``check_text_pairs``), then add it."""
        predictions, references = check_text_pairs(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Check one prediction and its references (see ``check_text_pairs``), then add it."""
        if not isinstance(prediction, str):
            raise ValueError(
                f"`prediction` must be a string, got {type(prediction).__name__}: {prediction!r:.80}"
            )
        reference = check_reference_list(reference, "reference")
        return super().add(prediction=prediction, reference=reference, **kwargs)
