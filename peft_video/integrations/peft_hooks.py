"""Make peft's own ``save_pretrained`` and ``push_to_hub`` write the peft-video card for peft-video adapters.

Importing this module (``import peft_video`` does) wraps two ``PeftModel`` methods once: ``create_or_update_model_card``
(called by ``save_pretrained``) writes the filled template of the method, and ``push_to_hub`` uploads what
``save_pretrained`` wrote instead of transformers' generic card. Models whose adapters are not peft-video's keep
peft's and transformers' behaviour exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from peft import PeftModel

from .hub import push_adapter_to_hub
from .model_card import is_peft_video_model, write_model_card

_MARK = "_peft_video_hook"


def _wrap(name: str, ours: Callable[..., Any]) -> None:
    original = getattr(PeftModel, name)
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def method(self: PeftModel, *args: Any, **kwargs: Any) -> Any:
        if is_peft_video_model(self):
            return ours(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    setattr(method, _MARK, True)
    setattr(PeftModel, name, method)


def _write_card(model: PeftModel, output_dir: str) -> None:
    write_model_card(model, output_dir)


def install() -> None:
    """Wrap ``PeftModel.create_or_update_model_card`` and ``PeftModel.push_to_hub`` (idempotent)."""
    _wrap("create_or_update_model_card", _write_card)
    _wrap("push_to_hub", push_adapter_to_hub)


install()
