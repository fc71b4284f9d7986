"""What a model card says that the model cannot tell (training data, metrics, PVLA settings), kept on the model.

Record it with :func:`set_card_info`; the next ``save_pretrained`` / ``push_to_hub`` writes it into the card.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from peft import PeftModel

_CARD_INFO_ATTRIBUTE = "_peft_video_card_info"


@dataclasses.dataclass
class CardInfo:
    """Facts for the card that the model cannot tell: training data, metrics, PVLA settings, naming."""

    training_data: str | None = None
    datasets: list[str] = dataclasses.field(default_factory=list)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    pvla: dict[str, Any] | None = None
    base_model: str | None = None
    license: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


def unwrap_peft_model(model: Any, *, argument: str = "model") -> PeftModel:
    """The PeftModel inside ``model`` (itself, or under DDP's / torch.compile's wrappers), or a clear TypeError."""
    seen = model
    while not isinstance(seen, PeftModel):
        inner = getattr(seen, "module", None) or getattr(seen, "_orig_mod", None)
        if inner is None or inner is seen:
            raise TypeError(
                f"`{argument}` must be a peft PeftModel (what `get_peft_model` or `PeftModel.from_pretrained` return), "
                f"or one wrapped by Accelerate/DDP; got {type(model).__name__}"
            )
        seen = inner
    return seen


def as_dict(value: Any, argument: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"`{argument}` must be a mapping or a dataclass instance, got {type(value).__name__}")


def as_str_list(value: str | Sequence[str], argument: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) and v for v in items):
        raise TypeError(f"`{argument}` must be a string or a sequence of non-empty strings, got {value!r}")
    return items


def get_card_info(model: Any) -> CardInfo:
    """The card facts recorded on ``model`` with :func:`set_card_info` (empty if none)."""
    peft_model = unwrap_peft_model(model)
    return peft_model.__dict__.get(_CARD_INFO_ATTRIBUTE) or CardInfo()


def set_card_info(
    model: Any,
    *,
    training_data: str | None = None,
    datasets: str | Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    pvla: Mapping[str, Any] | Any | None = None,
    base_model: str | None = None,
    license: str | None = None,
    tags: str | Sequence[str] | None = None,
) -> CardInfo:
    """Record facts for the card written by the next ``save_pretrained`` / ``push_to_hub``; returns them.

    Arguments left as None keep what an earlier call recorded; ``metrics`` are merged. ``training_data`` is free
    text, ``datasets`` are Hub dataset ids (they also go into the card's metadata), ``pvla`` the PVLA loss settings
    (a mapping or a dataclass), ``base_model`` the Hub id of the base model when the model was loaded from a local
    copy, ``tags`` extra Hub tags.
    """
    info = dataclasses.replace(get_card_info(model))
    if training_data is not None:
        if not isinstance(training_data, str):
            raise TypeError(f"`training_data` must be a string, got {type(training_data).__name__}")
        info.training_data = training_data
    if datasets is not None:
        info.datasets = as_str_list(datasets, "datasets")
    if metrics is not None:
        info.metrics = {**info.metrics, **as_dict(metrics, "metrics")}
    if pvla is not None:
        info.pvla = as_dict(pvla, "pvla")
    if base_model is not None:
        info.base_model = as_str_list(base_model, "base_model")[0]
    if license is not None:
        info.license = as_str_list(license, "license")[0]
    if tags is not None:
        info.tags = as_str_list(tags, "tags")
    unwrap_peft_model(model).__dict__[_CARD_INFO_ATTRIBUTE] = info
    return info
