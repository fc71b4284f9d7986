"""READ tuner: injects :class:`ReadLayer` around the feed-forward modules of a transformer."""

from __future__ import annotations

from peft.tuners.tuners_utils import check_target_module_exists
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


def default_axis(model: nn.Module) -> str:
    """The recurrence axis of a config that gives neither an axis nor targets: the one tower the model has decides."""
    architecture = architecture_of(model)
    towers = {} if architecture in SEQUENCE_FFNS else tower_block_lists(model)
    if VISION in towers and TEXT in towers:
        raise ValueError(
            f"READ on a model with a vision and a text tower (architecture {architecture!r}) needs to know which to "
            "adapt: pass `num_frames`=T (or recurrence_axis='frames') for the vision tower with recurrence over "
            "frames, recurrence_axis='tokens' for the text tower, or `target_modules`"
        )
    return "frames" if VISION in towers else "tokens"


def check_axis_against_targets(model: nn.Module, config: ReadConfig, axis: str | None) -> str:
    """The axis for the modules ``config`` targets in ``model`` (decided from them when ``axis`` is None), or a
    ``ValueError`` for targets that contradict it or span a vision tower and other modules."""
    architecture = architecture_of(model)
    towers = {} if architecture in SEQUENCE_FFNS else tower_block_lists(model)
    targeted = [key for key, _ in model.named_modules() if key and check_target_module_exists(config, key)]
    in_tower = {
        tower: [key for key in targeted if blocks.locate(key) is not None] for tower, blocks in towers.items()
    }
    vision, text = in_tower.get(VISION, []), in_tower.get(TEXT, [])
    if axis == "frames" and text:
        raise ValueError(
            f"recurrence_axis='frames' recurs over the frames of a frame-wise vision tower, but `target_modules` "
            f"selects text-tower modules {text[:3]}: use recurrence_axis='tokens' for the text tower"
        )
    if axis is not None:
        return axis
    if vision and len(vision) < len(targeted):
        others = [key for key in targeted if key not in vision]
        raise ValueError(
            f"`target_modules` selects modules of the vision tower ({vision[:2]}...) and others ({others[:2]}...), "
            "and READ has one recurrence axis per adapter: set `recurrence_axis` (or `num_frames`), or put the two "
            "groups in two adapters"
        )
    return "frames" if vision else "tokens"


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

    def _prepare_adapter_config(self, peft_config: ReadConfig, model_config: dict) -> ReadConfig:
        """Decide the recurrence axis (see :class:`ReadConfig`) and the default targets; both are written into the
        config, so the saved adapter says what it does."""
        axis = peft_config.recurrence_axis
        if peft_config.target_modules is None:
            axis = axis or default_axis(self.model)
            targets = default_read_targets(self.model, axis)
            peft_config.target_modules = targets if isinstance(targets, str) else set(targets)
        peft_config.recurrence_axis = check_axis_against_targets(self.model, peft_config, axis)
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
