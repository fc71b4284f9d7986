"""TokenMix tuner: wraps the attention (mixing) and the fine-tuned parts of the chosen blocks of a vision encoder."""

from __future__ import annotations

import re

from peft.config import PeftConfig
from peft.tuners.tuners_utils import _get_submodules
from torch import nn

from .._wrapping import WrappingTuner
from .blocks import plan_token_mixing
from .config import TokenMixConfig
from .layer import TokenMixAttentionLayer, TokenMixCopyLayer, TokenMixLayer


class TokenMixModel(WrappingTuner):
    """Creates TokenMix adapters (cross-frame token mixing + partial fine-tuning) on a frame-wise image encoder.

    Example::

        >>> import peft_video  # registers TokenMix with peft
        >>> from peft import get_peft_model
        >>> model = get_peft_model(clip, peft_video.TokenMixConfig(num_frames=8))  # mix + fine-tune the last block
    """

    prefix: str = "pvtmix_"
    tuner_layer_cls = TokenMixLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict) -> PeftConfig:
        plan = plan_token_mixing(
            self.model, peft_config.blocks, peft_config.finetune, peft_config.strategy, peft_config.block_list
        )
        peft_config.target_modules = set(plan.targets)
        self._pvtmix_attention_targets = set(plan.attention)
        return peft_config

    def _create_and_replace(
        self,
        peft_config: TokenMixConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs,
    ) -> None:
        layer_cls = (
            TokenMixAttentionLayer if current_key in self._pvtmix_attention_targets else TokenMixCopyLayer
        )
        self._wrap_or_update(
            peft_config,
            adapter_name,
            target,
            target_name,
            parent,
            lambda: layer_cls(target, adapter_name, peft_config),
        )

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        """Put plain modules back: the base ones (``unload``) or the merged adapter's (``merge_and_unload``)."""
        for key in [k for k, m in self.model.named_modules() if isinstance(m, TokenMixLayer)]:
            parent, target, target_name = _get_submodules(self.model, key)
            setattr(parent, target_name, target.unloaded_module(merge, safe_merge, adapter_names))
        for key in [
            k for k, m in self.model.named_modules() if hasattr(m, "unload_and_optionally_merge_module")
        ]:
            parent, target, target_name = _get_submodules(self.model, key)
            unloaded = target.unload_and_optionally_merge_module(
                merge=merge, safe_merge=safe_merge, adapter_names=adapter_names
            )
            setattr(parent, target_name, unloaded)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """Drop the adapter name after our container, also inside a copied module (``pvtmix_copy.<name>.fc1.weight``).

        peft's default strips it only as the second-to-last key segment, which would keep it in the keys of a copied
        MLP and break loading under another adapter name.
        """
        pattern = rf"(\.{re.escape(cls.prefix)}[a-z_]+)\.{re.escape(adapter_name)}(?=\.|$)"
        stripped, count = re.subn(pattern, r"\1", key)
        return stripped if count else super()._remove_adapter_name_from_key(key, adapter_name)
