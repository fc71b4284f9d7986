"""READ tuner: injects :class:`ReadLayer` around the feed-forward modules of a transformer."""

from __future__ import annotations

from peft.config import PeftConfig
from torch import nn

from ...architectures import OPEN_CLIP, architecture_of, contains_open_clip_text_tower
from .._wrapping import WrappingTuner
from .config import ReadConfig
from .layer import ReadLayer

_VIT_FFN = r".*layers?\.\d+\.(mlp|output\.dense)"
_CLIP_VISION_FFN = r"(.*\.)?vision_model\.encoder\.layers\.\d+\.mlp"

# Feed-forward modules whose output O is eq. 5's input, per architecture and recurrence axis. Strings are regexes
# (full match, tolerant of a wrapper's prefix such as `backbone.`); lists match module-name suffixes. CLIP-like
# two-tower models pick the tower from the axis.
READ_TARGET_MODULES: dict[str, dict[str, list[str] | str]] = {
    "bart": {"tokens": ["fc2"]},
    "mbart": {"tokens": ["fc2"]},
    "t5": {"tokens": ["DenseReluDense"]},
    "mt5": {"tokens": ["DenseReluDense"]},
    "clip": {"tokens": r"(.*\.)?text_model\.encoder\.layers\.\d+\.mlp", "frames": _CLIP_VISION_FFN},
    "clip_text_model": {"tokens": ["mlp"]},
    "clip_vision_model": {"tokens": ["mlp"], "frames": ["mlp"]},
    "blip": {"frames": _CLIP_VISION_FFN, "tokens": _CLIP_VISION_FFN},
    "blip_vision_model": {"tokens": ["mlp"], "frames": ["mlp"]},
    # transformers 5 names ViT's FFN `layers.N.mlp`; older releases `layer.N.output.dense`.
    "vit": {"tokens": _VIT_FFN, "frames": _VIT_FFN},
    OPEN_CLIP: {
        "tokens": r"(.*\.)?(?<!visual\.)transformer\.resblocks\.\d+\.mlp",
        "frames": r"(.*\.)?transformer\.resblocks\.\d+\.mlp",
    },
}


def default_read_targets(model: nn.Module, recurrence_axis: str) -> list[str] | str:
    """Default ``target_modules`` for ``model`` and the recurrence axis, or a clear error if unknown."""
    architecture = architecture_of(model)
    per_axis = READ_TARGET_MODULES.get(architecture or "", {})
    if recurrence_axis not in per_axis:
        raise ValueError(
            f"READ has no default `target_modules` for architecture {architecture!r} with "
            f"recurrence_axis={recurrence_axis!r}; pass `target_modules` (the feed-forward modules to adapt). "
            f"Known architectures: {sorted(READ_TARGET_MODULES)}"
        )
    targets = per_axis[recurrence_axis]
    if architecture == OPEN_CLIP and recurrence_axis == "frames" and contains_open_clip_text_tower(model):
        targets = r"(.*\.)?visual\.transformer\.resblocks\.\d+\.mlp"
    return targets


class ReadModel(WrappingTuner):
    """Creates READ (recurrent adapter) modules on a pretrained model; see :class:`ReadConfig`.

    Example::

        >>> import peft_video  # registers READ with peft
        >>> from peft import get_peft_model
        >>> model = get_peft_model(clip, peft_video.ReadConfig(recurrence_axis="frames", num_frames=8))
    """

    prefix: str = "pvread_"
    tuner_layer_cls = ReadLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict) -> PeftConfig:
        if peft_config.target_modules is None:
            targets = default_read_targets(self.model, peft_config.recurrence_axis)
            peft_config.target_modules = targets if isinstance(targets, str) else set(targets)
        return peft_config

    def _create_and_replace(
        self,
        peft_config: ReadConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs,
    ) -> None:
        if isinstance(target, ReadLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = ReadLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)
