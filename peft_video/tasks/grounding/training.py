"""Training the grounding model with ``transformers.Trainer``: the model computes its own loss from the collator's
labels, so the stock Trainer loop works; :class:`GroundingTrainer` only fixes the settings that would break it.

* Items of a :class:`~.data.GroundingDataset` carry fields that are not model inputs (``record``, ``clip_ids``, ...):
  the collator turns them into inputs and labels, so the Trainer must not strip "unused" fields before collating
  (``remove_unused_columns`` is switched off).
* The label inputs are named for evaluation (``label_names``), also under a peft wrapper whose ``forward`` hides
  them; evaluation reports the loss only (moment and saliency predictions are scored with
  :func:`~.inference.predict_dataset` and the grounding metrics).
* The loss terms (span L1, gIoU, class, saliency; last decoder layer, unweighted) are logged beside ``loss``.

PVLA is added the house way, ``callbacks=[PVLACallback(PVLALoss(), model.pvla_source(), weight=...)]``, over the
encoder blocks' joint sequence (clips vs query tokens); :data:`DEFAULT_PVLA_WEIGHT` is this task's default weight.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import Trainer

from .data import GroundingCollator

__all__ = ["DEFAULT_PVLA_WEIGHT", "LABEL_NAMES", "LOSS_TERMS", "GroundingTrainer"]

logger = logging.getLogger(__name__)

LABEL_NAMES: list[str] = ["span_labels", "span_mask", "saliency_pos_labels", "saliency_neg_labels"]
LOSS_TERMS: tuple[str, ...] = ("loss_span", "loss_giou", "loss_label", "loss_saliency")

DEFAULT_PVLA_WEIGHT = 0.1
"""PVLA's weight in the grounding loss (the paper's public code uses 1e-2 beside UMT's losses). 0.1 is the largest
weight that left the task loss unchanged when fine-tuning READ from the tiny model on the synthetic targets
(``colours``, ``approach``; weights 0, 0.01, 0.1, 1, two seeds each): validation R1@0.5 moved by no more than the
seeds did at any weight, while weight 1 raised the final task loss on ``approach`` (2.7 against 2.2-2.3)."""


class GroundingTrainer(Trainer):
    """``Trainer`` for :class:`~.modeling.GroundingModel`, bare or under peft (see the module docstring).

    ``data_collator`` defaults to :class:`~.data.GroundingCollator` seeded with ``args.data_seed`` or ``args.seed``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            self.args.remove_unused_columns = False  # the collator needs the items' own fields
        if not isinstance(self.data_collator, GroundingCollator):
            if kwargs.get("data_collator") is not None:
                raise ValueError(
                    f"GroundingTrainer needs a GroundingCollator, got {type(kwargs['data_collator']).__name__}"
                )
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self.data_collator = GroundingCollator(seed=seed)
        if not self.label_names:
            self.label_names = list(LABEL_NAMES)
        self._terms: dict[str, list[torch.Tensor]] = {name: [] for name in LOSS_TERMS}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError(
                "the grounding model returned no loss: the batch has no labels (collate with "
                "GroundingCollator(labels=True) over labelled records)"
            )
        if model.training:
            for name in LOSS_TERMS:
                value = getattr(outputs, name, None)
                if value is not None:
                    self._terms[name].append(value.detach().float())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            for name, values in self._terms.items():
                if values:
                    logs[name] = round(float(torch.stack(values).mean()), 4)
                    values.clear()
        super().log(logs, start_time)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, None, None]:
        """The evaluation loss of a batch (predictions are scored with ``predict_dataset`` instead)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
