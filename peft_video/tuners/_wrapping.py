"""Shared plumbing for tuner layers that wrap whole modules (an FFN, a block) rather than a single Linear."""

from __future__ import annotations

from typing import Any

from peft.tuners.tuners_utils import BaseTuner
from torch import nn


class ForwardsToBaseLayer:
    """Mixin for a tuner layer: attributes it lacks are read from the wrapped module (e.g. ``block.mlp.c_fc``)."""

    _modules: dict[str, nn.Module]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer" or "base_layer" not in self._modules:
                raise
            return getattr(self._modules["base_layer"], name)


class WrappingTuner(BaseTuner):
    """BaseTuner for whole-module wrappers: unloading puts the wrapped module back as it was.

    peft's ``_replace_module`` assumes the base layer has a ``weight`` (true for Linear / Conv, not for an MLP or a
    transformer block), so unloading our wrappers goes through a plain ``setattr``.
    """

    def _replace_module(
        self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module
    ) -> None:
        if hasattr(child, "base_layer") and new_module is child.get_base_layer():
            setattr(parent, child_name, new_module)
            return
        super()._replace_module(parent, child_name, new_module, child)
