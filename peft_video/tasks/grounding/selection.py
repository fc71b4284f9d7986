"""Model selection on a validation split during ``Trainer`` training: score every few steps, keep the best weights.

:class:`ValidationSelection` is a ``TrainerCallback``: every ``every`` optimizer steps (and after the last one) it
scores the model on the validation dataset with :func:`~.evaluation.evaluate_grounding`, keeps an in-memory copy of
the trainable tensors whenever the chosen score is the best so far (the earliest step wins ties), and at the end
of training copies the best ones back. Only the trainable tensors change during fine-tuning, so restoring them
restores the selected model exactly; the test split is never looked at.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from transformers import TrainerCallback

from .data import GroundingDataset
from .evaluation import UMT_KEY, evaluate_grounding

__all__ = ["ValidationSelection", "default_selection_metric"]

logger = logging.getLogger(__name__)


def default_selection_metric(dataset: GroundingDataset, scorer: str = "qvhighlights") -> str:
    """UMT's mAP for ``scorer`` ``"youtube"`` / ``"tvsum"``; else ``MR-full-mAP`` when the records have moment
    windows, ``HL-min-VeryGood-mAP`` when they do not (highlight-only data)."""
    if not all(r.has_labels for r in dataset.records):
        raise ValueError(f"validation data {dataset.name!r} must be labelled to select a model on it")
    if scorer != "qvhighlights":
        return UMT_KEY
    return "MR-full-mAP" if all(r.windows for r in dataset.records) else "HL-min-VeryGood-mAP"


class ValidationSelection(TrainerCallback):
    """Score on ``dataset`` every ``every`` steps; restore the best trainable weights by ``metric`` at train end.

    ``scorer`` is :func:`~.evaluation.evaluate_grounding`'s; ``metric`` defaults to :func:`default_selection_metric`.

    After training: ``best_step``, ``best_score``, ``history`` (``[(step, score), ...]``) and ``seconds`` (the time
    spent scoring, which the Trainer's runtime includes).
    """

    def __init__(
        self,
        dataset: GroundingDataset,
        *,
        every: int,
        metric: str | None = None,
        scorer: str = "qvhighlights",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"`every` must be a positive number of steps, got {every!r}")
        self.dataset, self.every, self.scorer = dataset, every, scorer
        self.metric = metric or default_selection_metric(dataset, scorer)
        self.best_step: int | None = None
        self.best_score = float("-inf")
        self.history: list[tuple[int, float]] = []
        self.seconds = 0.0
        self._best: dict[str, torch.Tensor] = {}

    def _score(self, model: torch.nn.Module, step: int) -> None:
        start = time.perf_counter()
        _, scores = evaluate_grounding(model, self.dataset, scorer=self.scorer)
        if self.metric not in scores:
            raise ValueError(
                f"selection metric {self.metric!r} is not among the validation scores {sorted(scores)}"
            )
        score = float(scores[self.metric])
        self.history.append((step, score))
        if score > self.best_score:
            self.best_score, self.best_step = score, step
            self._best = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        self.seconds += time.perf_counter() - start

    def on_step_end(self, args: Any, state: Any, control: Any, model: torch.nn.Module = None, **kwargs: Any):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._score(model, state.global_step)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, model: torch.nn.Module = None, **kwargs: Any):
        if self.best_step is None or (self.history and self.history[-1][0] != state.global_step):
            self._score(model, state.global_step)  # training stopped off the schedule: score where it ended
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in self._best:
                    parameter.copy_(self._best[name])
        logger.info(
            "validation selection: step %d of %d (%s %.2f)",
            self.best_step,
            state.global_step,
            self.metric,
            self.best_score,
        )
        return control
