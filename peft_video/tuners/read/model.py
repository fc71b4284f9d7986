"""READ tuner: injects :class:`ReadLayer` around the feed-forward modules of a transformer."""

from __future__ import annotations

from peft.config import PeftConfig
from torch import nn

from ...architectures import (
    SEQUENCE_FFNS,
    TEXT,
    TOWER_BLOCK_LISTS,
    VISION,
    architecture_of,
    tower_block_lists,
)
from .._wrapping import WrappingTuner
from .config import ReadConfig
from .layer import ReadLayer


def default_read_targets(model: nn.Module, recurrence_axis: str) -> list[str] | str:
    """Default ``target_modules`` for ``model`` and the recurrence axis, or a clear error if there is none.

    Encoder-decoder text models (BART, mBART, T5): their feed-forward modules, for ``"tokens"``. Models with towers
    (see :mod:`peft_video.architectures`): the feed-forward module of every block of one tower: the vision tower for
    ``"frames"``; for ``"tokens"`` the text tower, or the vision tower of a vision-only model (recurring over its
    patch tokens).
    """
    architecture = architecture_of(model)
    towers = {} if architecture in SEQUENCE_FFNS else tower_block_lists(model)
    if architecture in SEQUENCE_FFNS and recurrence_axis == "tokens":
        return list(SEQUENCE_FFNS[architecture])
    tower = VISION if recurrence_axis == "frames" or TEXT not in towers else TEXT
    if tower not in towers:
        known = sorted({*SEQUENCE_FFNS, *TOWER_BLOCK_LISTS})
        raise ValueError(
            f"READ has no default `target_modules` for architecture {architecture!r} with "
            f"recurrence_axis={recurrence_axis!r}; pass `target_modules` (the feed-forward modules to adapt). "
            f"Known architectures: {known}"
        )
    blocks = towers[tower]
    return blocks.regex(members=blocks.anatomy.ffn)


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
        self._wrap_or_update(
            peft_config,
            adapter_name,
            target,
            target_name,
            parent,
            lambda: ReadLayer(target, adapter_name, peft_config),
        )
