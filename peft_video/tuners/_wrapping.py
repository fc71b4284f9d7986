"""Shared plumbing of peft-video's tuners, whose layers wrap whole modules (an FFN, an attention, a block part)
rather than a single Linear: the attribute forwarder of the layers and what every tuner does to wrap a target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from torch import nn


class ForwardsToBaseLayer:
    """Mixin for a tuner layer: attributes it lacks are read from the wrapped module (e.g. open_clip reads
    ``block.mlp.c_fc``, HF reads ``self_attn.embed_dim``).

    Names with the layer's own ``adapter_prefix`` (its adapter containers, e.g. ``pvread_down``) are never forwarded:
    asking for one that does not exist yet is an ``AttributeError``, not a lookup in the wrapped module.
    """

    adapter_prefix: str = ""  # e.g. "pvread_": set by each layer class

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_layer")
            if (
                base is None
                or name == "base_layer"
                or (self.adapter_prefix and name.startswith(self.adapter_prefix))
            ):
                raise
            return getattr(base, name)


class WrappingTuner(BaseTuner):
    """BaseTuner for whole-module wrappers.

    :meth:`_wrap_or_update` is the common tail of ``_create_and_replace``: a target that is already one of this
    tuner's layers gets the new adapter added, any other module is wrapped in a new layer (frozen unless its adapter
    is active) that replaces it in its parent. Unloading puts the wrapped module back as it was: peft's
    ``_replace_module`` assumes the base layer has a ``weight`` (true for Linear / Conv, not for an MLP or an
    attention), so unloading our wrappers goes through a plain ``setattr``.
    """

    def _wrap_or_update(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        new_layer: Callable[[], nn.Module],
    ) -> None:
        """Add ``adapter_name`` to ``target`` if it is our layer, else replace it with ``new_layer()``."""
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = new_layer()
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(
        self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module
    ) -> None:
        if hasattr(child, "base_layer") and new_module is child.get_base_layer():
            setattr(parent, child_name, new_module)
            return
        super()._replace_module(parent, child_name, new_module, child)
