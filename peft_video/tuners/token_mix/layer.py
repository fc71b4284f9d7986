"""TokenMix layers: per-adapter trainable copies of a block's modules (peft's ``ln_tuning`` pattern) and, on the
block's attention, the per-adapter mixing settings.

Only one TokenMix adapter can answer in a given module at a time (as in ``ln_tuning``). Merging changes nothing
numerically, since an adapter's copies *are* the tuned modules: ``merge()`` marks the adapter as the one answering,
and :meth:`TokenMixLayer.unloaded_module` hands ``merge_and_unload`` plain modules: the copy (cast to the base dtype),
and for a mixing attention a :class:`TokenMixingAttention`, which keeps mixing with the adapter's T.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from .._wrapping import ForwardsToBaseLayer
from .attention import (
    TokenMixingAttention,
    attention_kind,
    call_in_own_dtype,
    floating_dtype,
    mixed_attention_forward,
)
from .config import TokenMixConfig
from .mixing import TokenMixer


class TokenMixLayer(ForwardsToBaseLayer, nn.Module, BaseTunerLayer):
    """A module of a mixed block plus, per adapter, a trainable copy of it (``pvtmix_copy``)."""

    adapter_prefix = "pvtmix_"
    adapter_layer_names: tuple[str, ...] = ("pvtmix_copy",)
    other_param_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.pvtmix_copy = nn.ModuleDict()
        self._disable_adapters = False
        self.merged_adapters = []

    def _set_copy(self, adapter_name: str, trainable_copy: bool) -> None:
        """Give ``adapter_name`` a fresh copy of the base module (or none), as a trainable stand-in for it."""
        if trainable_copy:
            self.pvtmix_copy[adapter_name] = copy.deepcopy(self.get_base_layer())
        elif adapter_name in self.pvtmix_copy:
            del self.pvtmix_copy[adapter_name]

    def adapters_here(self) -> list[str]:
        """Names of the adapters that act on this module."""
        return list(self.pvtmix_copy)

    def _adapter_in_use(self) -> str | None:
        """The adapter answering in this module now, or None for the base module."""
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return None
        if self.merged:
            return self.merged_adapters[-1]
        here = [name for name in self.active_adapters if name in self.adapters_here()]
        if len(here) > 1:
            raise ValueError(
                f"TokenMix runs one adapter per module at a time, but adapters {here} are active on this module; "
                "activate one of them with `set_adapter`"
            )
        return here[0] if here else None

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Mark one adapter as merged: its modules answer until ``unmerge`` (numerically nothing else changes)."""
        names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.adapters_here()]
        if not names:
            return
        if len(names) > 1 or self.merged:
            raise ValueError(
                f"TokenMix can merge one adapter per module, got {sorted(set(names) | set(self.merged_adapters))}"
            )
        if safe_merge:
            for param in self.pvtmix_copy[names[0]].parameters() if names[0] in self.pvtmix_copy else ():
                if not torch.isfinite(param).all():
                    raise ValueError(f"NaNs or infs in the weights of adapter {names[0]!r}; not merging it")
        self.merged_adapters.append(names[0])

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        self.merged_adapters.clear()

    def _copy_in_base_dtype(self, adapter_name: str) -> nn.Module:
        """The adapter's copy as a plain module in the base module's dtype (copies may be upcast by peft)."""
        module = self.pvtmix_copy[adapter_name]
        base_dtype = floating_dtype(self.get_base_layer())
        if base_dtype is not None and floating_dtype(module) != base_dtype:
            module = copy.deepcopy(module).to(base_dtype)
        return module.requires_grad_(False)

    def merged_module(self, adapter_name: str) -> nn.Module:
        """The plain module that stands for this module with ``adapter_name`` merged in."""
        return self._copy_in_base_dtype(adapter_name)

    def unloaded_module(
        self, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> nn.Module:
        """What ``unload`` / ``merge_and_unload`` leave in this module's place."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        if self.merged:
            return self.merged_module(self.merged_adapters[-1])
        return self.get_base_layer()


class TokenMixCopyLayer(TokenMixLayer):
    """A non-attention module of a mixed block (norm, MLP, layer scale): the active adapter's copy replaces it."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: TokenMixConfig) -> None:
        super().__init__(base_layer)
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: TokenMixConfig) -> None:
        """Create (or re-create) ``adapter_name``'s copy and make the active adapters trainable again."""
        self._set_copy(adapter_name, trainable_copy=True)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        adapter = self._adapter_in_use()
        if adapter is None:
            return self.base_layer(*args, **kwargs)
        return call_in_own_dtype(self.pvtmix_copy[adapter], args, kwargs)

    def __repr__(self) -> str:
        return "pvtmix." + super().__repr__()


class TokenMixAttentionLayer(TokenMixLayer):
    """The attention of a mixed block: per adapter, its mixing settings and optionally a trainable copy of it."""

    adapter_layer_names = ("pvtmix_copy", "pvtmix_mixer")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: TokenMixConfig) -> None:
        super().__init__(base_layer)
        attention_kind(base_layer)
        self.pvtmix_mixer = nn.ModuleDict()
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: TokenMixConfig) -> None:
        """Create (or re-create) ``adapter_name``'s mixer and, if the attention is fine-tuned, its copy."""
        self.pvtmix_mixer[adapter_name] = TokenMixer(
            config.num_frames, config.strategy, config.cross_frame_weight, config.num_prefix_tokens
        )
        self._set_copy(adapter_name, trainable_copy=config.finetune in ("block", "attention"))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def adapters_here(self) -> list[str]:
        return list(self.pvtmix_mixer)

    def _attention_of(self, adapter_name: str) -> nn.Module:
        return self.pvtmix_copy[adapter_name] if adapter_name in self.pvtmix_copy else self.get_base_layer()

    def merged_module(self, adapter_name: str) -> nn.Module:
        attention = (
            self._copy_in_base_dtype(adapter_name)
            if adapter_name in self.pvtmix_copy
            else self.get_base_layer()
        )
        mixer = self.pvtmix_mixer[adapter_name]
        if mixer.strategy == "none":
            return attention
        return TokenMixingAttention(
            attention,
            TokenMixer(mixer.num_frames, mixer.strategy, mixer.cross_frame_weight, mixer.num_prefix_tokens),
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        adapter = self._adapter_in_use()
        if adapter is None:
            return self.base_layer(*args, **kwargs)
        return mixed_attention_forward(self._attention_of(adapter), self.pvtmix_mixer[adapter], args, kwargs)

    def __repr__(self) -> str:
        return "pvtmix." + super().__repr__()
