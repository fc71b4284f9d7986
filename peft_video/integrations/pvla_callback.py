"""``PVLACallback``: switch the PVLA loss on in a ``transformers.Trainer`` run.

It lives with the integrations (it is the Trainer's side of PVLA); the loss and the hooks it attaches live in
:mod:`peft_video.alignment`, which never imports integrations. A callback cannot change the loss, so it attaches
:func:`peft_video.alignment.capture.attach_pvla` to the model at train begin: capture hooks plus a forward hook on
the model that adds ``weight * PVLA`` to ``output.loss`` in training forwards only. The Trainer then backpropagates and logs that loss as usual; the callback adds the PVLA
term's mean since the last log as ``logs["pvla"]`` and removes every hook at train end.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..alignment.capture import PVLAAttachment, SingleStream, TwoTower, check_pvla_arguments
from ..alignment.pvla import PVLALoss
from .card_info import get_card_info, set_card_info, unwrap_peft_model

__all__ = ["PVLACallback"]


class PVLACallback(TrainerCallback):
    """Add ``weight * loss(video, text)`` to the model's loss during ``Trainer`` training steps; log it as ``pvla``.

    The model must return its own loss (a ``ModelOutput`` / dict with ``loss``): with ``label_smoothing_factor`` or
    ``compute_loss_func`` the Trainer recomputes the loss from logits and would drop the term. ``logs["pvla"]`` is
    the unweighted term; ``state.log_history`` gets it too, and so do callbacks registered after this one (the
    console printer; report integrations such as TensorBoard run earlier and do not see it). Call :meth:`remove` if
    training stops with an exception, as ``on_train_end`` then never runs. On a peft model the settings (weight,
    loss settings, where the representations come from) are recorded for the adapter's model card at train begin,
    unless ``set_card_info(model, pvla=...)`` recorded some already.
    """

    def __init__(
        self, loss: PVLALoss, source: TwoTower | SingleStream, *, weight: float = 1.0, log_key: str = "pvla"
    ) -> None:
        check_pvla_arguments(loss, source, weight)  # now rather than at train begin
        self.loss, self.source, self.weight, self.log_key = loss, source, weight, log_key
        self.attachment: PVLAAttachment | None = None

    def attach(self, model: nn.Module) -> PVLAAttachment:
        """Attach to ``model`` (replacing any earlier attachment of this callback)."""
        self.remove()
        self.attachment = PVLAAttachment(model, self.loss, self.source, weight=self.weight)
        return self.attachment

    def remove(self) -> None:
        """Remove every hook this callback added (idempotent)."""
        if self.attachment is not None:
            self.attachment.remove()
            self.attachment = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("PVLACallback: the Trainer passed no `model` to on_train_begin")
        if getattr(args, "label_smoothing_factor", 0) != 0:
            warnings.warn(
                "PVLACallback: with label_smoothing_factor != 0 the Trainer computes the loss from logits, so "
                "the PVLA term added to the model's loss is ignored",
                stacklevel=2,
            )
        self.attach(model)
        self._record_card_info(model)

    def card_settings(self) -> dict[str, Any]:
        """What the model card's PVLA section lists: weight, the loss's settings and the representation source."""
        source = self.source
        if isinstance(source, TwoTower):
            where = {"video_modules": source.video_modules, "text_modules": source.text_modules}
        else:
            where = {"modules": source.modules}
        described = {k: v if isinstance(v, str) else list(v) for k, v in where.items()}
        return {"weight": self.weight, **self.loss.settings(), "source": type(source).__name__, **described}

    def _record_card_info(self, model: nn.Module) -> None:
        try:
            peft_model = unwrap_peft_model(model)
        except TypeError:
            return  # not a peft model: no adapter card to fill
        if get_card_info(peft_model).pvla is None:
            set_card_info(peft_model, pvla=self.card_settings())

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.remove()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.attachment is None or logs is None or "loss" not in logs:
            return
        value = self.attachment.pop_mean()
        if value is None:
            return
        logs[self.log_key] = value
        # Trainer.log appended a copy of `logs` to the history before calling the callbacks.
        if state.log_history and state.log_history[-1].get("loss") == logs["loss"]:
            state.log_history[-1][self.log_key] = value
