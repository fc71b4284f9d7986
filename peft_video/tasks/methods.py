"""The fine-tuning methods every task model can be prepared with, by name: the papers' baselines and peft-video's own.

A task model describes itself once, with :class:`MethodTargets` (``model.method_targets()``: its pretrained part, its
block lists, its projections, its new modules, and the target modules of each peft method); :func:`prepare_model`
then applies any of :data:`METHODS` to it:

- ``frozen`` (nothing of the pretrained model trains), ``full``, ``bitfit`` (the bias terms, Zaken et al.),
  ``partial`` (the last N blocks of each block list), ``proj`` (the final projections / heads): plain
  ``requires_grad`` selections on the task model; :func:`save_trainable` / :func:`load_trainable` store exactly the
  trainable tensors as safetensors.
- ``lora`` and ``ia3`` (peft), ``adapter`` (Houlsby: ``ReadConfig(rnn_type="none")``, READ without its recurrence),
  ``prompt`` (peft prompt tuning, where the model takes token inputs), ``read``, ``rap``, ``token_mix``: a peft
  ``PeftModel`` that saves only the adapter.

Modules the pretrained checkpoint lacks (``MethodTargets.new_modules``: a fusion layer, input projections rebuilt for
new feature widths) are trained by every method, ``frozen`` included (peft methods through ``modules_to_save``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PromptTuningConfig, get_peft_model
from torch import nn

METHODS: tuple[str, ...] = (
    "frozen",
    "full",
    "bitfit",
    "partial",
    "proj",
    "lora",
    "ia3",
    "adapter",
    "prompt",
    "read",
    "rap",
    "token_mix",
)
SELECTIVE_METHODS: tuple[str, ...] = ("frozen", "full", "bitfit", "partial", "proj")
"""Methods that choose which existing weights train (no peft wrapper)."""
FRAME_WISE: tuple[str, ...] = ("frozen", "full", "bitfit", "partial", "proj", "lora", "ia3", "adapter")
"""Methods that, on a frame-wise video encoder, encode each frame on its own: pooled over frames (or flattened into
a cross-attention without temporal positions) they cannot tell a video from its time-reversal."""

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "frozen": 1e-3,
    "full": 1e-4,
    "bitfit": 1e-3,
    "partial": 1e-4,
    "proj": 1e-3,
    "lora": 1e-3,
    "ia3": 1e-2,
    "adapter": 1e-2,
    "prompt": 1e-2,
    "read": 1e-2,
    "rap": 1e-2,
    "token_mix": 1e-3,
}
"""Peak learning rates used when none is given (``frozen`` only trains new modules, if a task has any): methods that
move pretrained weights (full, partial) need small ones; methods that start at the identity with few weights need
larger ones. Set once, on validation data of the synthetic worlds, never on a test split."""

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "lora_alpha": 16}
ADAPTER_DEFAULTS: dict[str, Any] = {"r": 8}
READ_DEFAULTS: dict[str, Any] = {"r": 8}
PROMPT_DEFAULTS: dict[str, Any] = {"num_virtual_tokens": 20}

Targets = str | tuple[str, ...] | None


@dataclass(frozen=True)
class MethodTargets:
    """What the method registry needs to know about a task model. Names are dotted module (or parameter) names
    relative to the task model; a ``str`` target is a regex (full match, as in peft), a tuple a list of name
    suffixes."""

    backbone: tuple[str, ...] = ("",)
    """Modules holding the pretrained weights (``""``: the whole model); ``bitfit`` trains the biases inside them."""
    blocks: tuple[str, ...] = ()
    """Dotted paths of the ``nn.ModuleList``s of transformer blocks; ``partial`` trains the last N of each."""
    projections: tuple[str, ...] = ()
    """Module or parameter names that ``proj`` trains (the final projections / prediction heads)."""
    new_modules: tuple[str, ...] = ()
    """Modules the pretrained checkpoint lacks: every method trains them (peft methods via ``modules_to_save``)."""
    lora: Targets = None
    """peft LoRA ``target_modules``; None: LoRA does not apply."""
    ia3: Targets = None
    ia3_feedforward: Targets = None
    """peft IA3 ``target_modules`` and ``feedforward_modules`` (the FFN layers whose input IA3 scales)."""
    read: Targets = None
    """READ / ``adapter`` ``target_modules`` (FFN modules whose output is adapted); None: READ's architecture defaults."""
    read_axis: str = "tokens"
    """READ's recurrence axis: ``"tokens"`` (a (B, L, D) sequence) or ``"frames"`` (frame-wise vision towers)."""
    num_frames: int | None = None
    """Frames per video of a frame-wise tower (READ's frames axis, RAP, TokenMix); a call may override it."""
    prompt_task_type: str | None = None
    """peft ``TaskType`` for ``prompt`` (e.g. ``"SEQ_2_SEQ_LM"``); None: prompt tuning does not apply."""
    token_mix: dict[str, Any] | None = None
    """``TokenMixConfig`` keyword arguments where TokenMix applies (a frame-wise vision tower); None: it does not."""
    rap: bool = False
    """RAP applies (two-tower CLIP retrieval)."""
    notes: dict[str, str] = field(default_factory=dict)
    """Why a method does not apply (method -> reason), for the error message."""


def check_method(method: object) -> str:
    """``method`` if it names one of :data:`METHODS`, else a ``ValueError``."""
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    return method


def method_targets(model: nn.Module) -> MethodTargets:
    """The task model's :class:`MethodTargets` (its ``method_targets()``), or a clear error."""
    describe = getattr(model, "method_targets", None)
    if not callable(describe):
        raise ValueError(
            f"{type(model).__name__} does not describe itself to the method registry: a task model needs a "
            "`method_targets()` method returning `peft_video.tasks.methods.MethodTargets`"
        )
    targets = describe()
    if not isinstance(targets, MethodTargets):
        raise TypeError(
            f"{type(model).__name__}.method_targets() must return MethodTargets, got {type(targets)}"
        )
    return targets


def _not_applicable(method: str, model: nn.Module, targets: MethodTargets, what: str) -> ValueError:
    reason = targets.notes.get(method, f"it declares no {what}")
    return ValueError(f"method {method!r} does not apply to {type(model).__name__}: {reason}")


def peft_config_for(
    method: str,
    model: nn.Module,
    num_frames: int | None = None,
    also_train: Sequence[str] = (),
    **options: Any,
) -> PeftConfig | None:
    """The peft config of ``method`` for ``model`` (None for the selective methods, which need no peft wrapper).

    ``num_frames`` overrides the model's frames per video; ``also_train`` names further modules to train and save
    (``modules_to_save``, e.g. the text tower's word embeddings); ``options`` override the config's fields.
    """
    import peft_video

    check_method(method)
    if method in SELECTIVE_METHODS:
        return None
    targets = method_targets(model)
    frames = num_frames if num_frames is not None else targets.num_frames
    options = dict(options)
    modules_to_save = [*targets.new_modules, *also_train, *(options.pop("modules_to_save", None) or [])]
    saved = {"modules_to_save": modules_to_save or None}
    if method == "lora":
        if targets.lora is None:
            raise _not_applicable(method, model, targets, "LoRA targets")
        return LoraConfig(
            **{**LORA_DEFAULTS, "target_modules": _peft_targets(targets.lora), **saved, **options}
        )
    if method == "ia3":
        if targets.ia3 is None:
            raise _not_applicable(method, model, targets, "IA3 targets")
        return IA3Config(
            **{
                "target_modules": _peft_targets(targets.ia3),
                "feedforward_modules": _peft_targets(targets.ia3_feedforward or ()),
                **saved,
                **options,
            }
        )
    if method in ("adapter", "read"):
        read_targets = {} if targets.read is None else {"target_modules": _peft_targets(targets.read)}
        defaults = ADAPTER_DEFAULTS if method == "adapter" else READ_DEFAULTS
        fields = {**defaults, "recurrence_axis": targets.read_axis}  # the adapter: which tower, no recurrence
        if method == "adapter":
            fields["rnn_type"] = "none"
        if targets.read_axis == "frames":
            fields["num_frames"] = frames
        return peft_video.ReadConfig(**{**fields, **read_targets, **saved, **options})
    if method == "prompt":
        if targets.prompt_task_type is None:
            raise _not_applicable(method, model, targets, "token inputs for peft prompt tuning")
        return PromptTuningConfig(
            **{**PROMPT_DEFAULTS, "task_type": targets.prompt_task_type, **saved, **options}
        )
    if method == "rap":
        if not targets.rap:
            raise _not_applicable(method, model, targets, "two-tower CLIP for RAP")
        return peft_video.RapConfig(**{"num_frames": frames, **saved, **options})
    if targets.token_mix is None:
        raise _not_applicable(method, model, targets, "frame-wise vision tower for TokenMix")
    mix = dict(targets.token_mix)
    mix_saved = [*(mix.pop("modules_to_save", None) or []), *modules_to_save]
    return peft_video.TokenMixConfig(
        **{"num_frames": frames, **mix, "modules_to_save": mix_saved or None, **options}
    )


def prepare_model(
    model: nn.Module,
    method: str,
    num_frames: int | None = None,
    also_train: Sequence[str] = (),
    partial_blocks: int = 1,
    **options: Any,
) -> nn.Module:
    """``model`` ready for training with ``method``: a ``PeftModel`` for peft methods, else ``model`` itself with
    exactly the method's parameters trainable (see the module docstring). ``partial_blocks`` is ``partial``'s N."""
    check_method(method)
    config = peft_config_for(method, model, num_frames, also_train, **options)
    if config is not None:
        if partial_blocks != 1:
            raise ValueError(
                f"`partial_blocks` only applies to method 'partial', got {partial_blocks} for {method!r}"
            )
        return get_peft_model(model, config)
    if options:
        raise ValueError(f"method {method!r} takes no config options, got {sorted(options)}")
    names = selected_parameters(model, method, also_train=also_train, partial_blocks=partial_blocks)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    return model


def selected_parameters(
    model: nn.Module, method: str, also_train: Sequence[str] = (), partial_blocks: int = 1
) -> set[str]:
    """Names of the parameters a selective method (``frozen``, ``full``, ``bitfit``, ``partial``, ``proj``) trains."""
    if method not in SELECTIVE_METHODS:
        raise ValueError(f"`method` must be one of {SELECTIVE_METHODS} here, got {method!r}")
    if isinstance(partial_blocks, bool) or not isinstance(partial_blocks, int) or partial_blocks < 1:
        raise ValueError(f"`partial_blocks` must be a positive integer, got {partial_blocks!r}")
    every = [name for name, _ in model.named_parameters()]
    if method == "full":
        return set(every)
    targets = method_targets(model)
    chosen = set(_under_modules(every, [*targets.new_modules], suffix=True))
    if method != "frozen":  # `also_train` names pretrained weights (e.g. word embeddings): frozen keeps them
        chosen |= set(_under_modules(every, list(also_train), suffix=True))
    if method == "bitfit":
        pretrained = _under_modules(every, list(targets.backbone))
        chosen |= {name for name in pretrained if name.rsplit(".", 1)[-1].endswith("bias")}
    elif method == "partial":
        if not targets.blocks:
            raise _not_applicable(method, model, targets, "block lists")
        for path in targets.blocks:
            blocks = model.get_submodule(path)
            if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
                raise ValueError(
                    f"`blocks` entry {path!r} of {type(model).__name__} is not a non-empty ModuleList"
                )
            if partial_blocks > len(blocks):
                raise ValueError(
                    f"`partial_blocks`={partial_blocks} exceeds the {len(blocks)} blocks of {path!r}"
                )
            last = [f"{path}.{index}" for index in range(len(blocks) - partial_blocks, len(blocks))]
            chosen |= set(_under_modules(every, last))
    elif method == "proj":
        if not targets.projections:
            raise _not_applicable(method, model, targets, "projections")
        chosen |= set(_under_modules(every, list(targets.projections)))
    return chosen


def _under_modules(names: Iterable[str], modules: Sequence[str], suffix: bool = False) -> list[str]:
    """The parameter names inside any of ``modules`` (or equal to one: a bare parameter). ``""`` is the whole model;
    with ``suffix`` a module also matches at the end of a longer path (peft's ``modules_to_save`` rule)."""
    if "" in modules:
        return list(names)
    found = []
    for name in names:
        for module in modules:
            if name == module or name.startswith(module + "."):
                found.append(name)
                break
            if suffix and (f".{module}." in f".{name}" or name.endswith("." + module)):
                found.append(name)
                break
    return found


def _peft_targets(targets: str | tuple[str, ...] | list[str]) -> str | list[str]:
    return targets if isinstance(targets, str) else list(targets)


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


TRAINABLE_WEIGHTS = "trainable_model.safetensors"
TRAINABLE_CONFIG = "trainable_config.json"


def save_trainable(model: nn.Module, directory: str | Path, method: str | None = None) -> Path:
    """Save exactly the trainable tensors of ``model`` (a selective method's result) as safetensors, with a small
    JSON naming the method; tied tensors are stored once. Returns the directory."""
    from safetensors.torch import save_file

    from .._version import __version__

    output = Path(directory)
    output.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if parameter.requires_grad and parameter.data_ptr() not in seen:
            seen.add(parameter.data_ptr())
            tensors[name] = parameter.detach().cpu().contiguous()
    if not tensors:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to save")
    save_file(tensors, str(output / TRAINABLE_WEIGHTS))
    info = {"method": method, "tensors": len(tensors), "parameters": trainable_parameters(model)}
    (output / TRAINABLE_CONFIG).write_text(
        json.dumps({**info, "peft_video_version": __version__}, indent=2) + "\n"
    )
    return output


def load_trainable(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load tensors saved by :func:`save_trainable` into ``model`` (same architecture), in place; every saved name
    must exist with the same shape. Returns ``model``."""
    from safetensors.torch import load_file

    path = Path(directory) / TRAINABLE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"`directory` {str(directory)!r} holds no {TRAINABLE_WEIGHTS} (written by save_trainable)"
        )
    saved = load_file(str(path))
    parameters = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(set(saved) - set(parameters))
    if unknown:
        raise ValueError(f"{path} holds tensors that {type(model).__name__} lacks: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            if parameters[name].shape != tensor.shape:
                raise ValueError(
                    f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the model's "
                    f"{tuple(parameters[name].shape)}"
                )
            parameters[name].copy_(tensor)
    return model
