"""Model cards for peft-video adapters: fill the method's template (``model_cards/<method>.md``) at save time.

The template gives the method's prose, paper and citation; this module fills in what the saved model says (base
model, target modules, trainable parameters, frames, configuration, how to load) and what only the user knows
(training data, metrics, PVLA settings), recorded with :func:`set_card_info`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

import torch
from huggingface_hub import ModelCard
from peft import PeftConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict

from .._registry import PEFT_TYPE_PREFIX
from .._version import __version__
from .card_info import CardInfo, as_str_list, get_card_info, unwrap_peft_model

CARD_START = "<!-- peft-video card: start. Regenerated on every save; edit outside these markers. -->"
CARD_END = "<!-- peft-video card: end -->"
FALLBACK_TEMPLATE = "_generic"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Fields of peft's own PeftConfig (bookkeeping, not method hyperparameters) are left out of the card's config table.
_GENERIC_CONFIG_FIELDS = {f.name for f in dataclasses.fields(PeftConfig)} | {
    "target_modules",
    "exclude_modules",
    "peft_video_version",
}


@dataclasses.dataclass(frozen=True)
class AdapterFacts:
    """What one saved adapter is: read from the PeftModel, its config and its state dict."""

    name: str
    peft_type: str
    config: PeftConfig
    parameters: int
    modules: list[str]

    @property
    def method(self) -> str:
        """The template name of the method: ``PEFT_VIDEO_TOKEN_MIX`` -> ``token_mix``."""
        return self.peft_type.removeprefix(PEFT_TYPE_PREFIX).lower()


def peft_type_name(config: PeftConfig) -> str:
    """The plain string of a config's peft type (peft stores an enum member, a str subclass)."""
    return str(getattr(config.peft_type, "value", config.peft_type))


def is_peft_video_model(model: PeftModel) -> bool:
    """True if any adapter of ``model`` is a peft-video method (its peft type starts with ``PEFT_VIDEO_``)."""
    configs = getattr(model, "peft_config", None) or {}
    return any(peft_type_name(c).startswith(PEFT_TYPE_PREFIX) for c in configs.values())


def load_template(method: str) -> str:
    """The card template of ``method`` (``model_cards/<method>.md``, shipped as package data).

    A method without a template gets the generic one with a warning, so that saving never fails over a card.
    """
    cards = importlib.resources.files("peft_video") / "model_cards"
    template = cards / f"{method}.md"
    if not template.is_file():
        warnings.warn(
            f"peft-video has no model card template for method {method!r} (expected model_cards/{method}.md); "
            "writing the generic card",
            stacklevel=2,
        )
        template = cards / f"{FALLBACK_TEMPLATE}.md"
    return template.read_text(encoding="utf-8")


def _adapted_modules(model: PeftModel, adapter_name: str) -> list[str]:
    """Names (relative to the base model) of the tuner layers that hold ``adapter_name``."""
    names = []
    for name, module in model.get_base_model().named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        holders = (getattr(module, attr, None) for attr in module.adapter_layer_names)
        if any(holder is not None and adapter_name in holder for holder in holders):
            names.append(name)
    return names


def adapter_facts(model: PeftModel) -> list[AdapterFacts]:
    """Facts of every adapter of ``model``, the active one first."""
    active = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
    order = sorted(model.peft_config, key=lambda name: (name != active, name))
    facts = []
    for name in order:
        config = model.peft_config[name]
        state = get_peft_model_state_dict(model, adapter_name=name)
        parameters = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
        facts.append(
            AdapterFacts(name, peft_type_name(config), config, parameters, _adapted_modules(model, name))
        )
    return facts


def base_model_name(model: PeftModel, info: CardInfo) -> str | None:
    """The base model's name or path: recorded with set_card_info, else from its config or the adapter config."""
    if info.base_model:
        return info.base_model
    base = model.get_base_model()
    config = getattr(base, "config", None)
    for candidate in (
        getattr(config, "_name_or_path", None),
        getattr(base, "name_or_path", None),
        *(c.base_model_name_or_path for c in model.peft_config.values()),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def is_hub_id(name: str | None) -> bool:
    """True if ``name`` looks like a Hub model id and is not a local directory (only those go into metadata)."""
    return bool(name) and _HUB_ID.match(name) is not None and not Path(name).exists()


def _code(value: Any) -> str:
    if isinstance(value, set):
        value = sorted(value)
    if isinstance(value, tuple):
        value = list(value)
    return "`" + json.dumps(value, default=str) + "`" if not isinstance(value, str) else f"`{value}`"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _targets(facts: AdapterFacts) -> str:
    pattern = facts.config.target_modules
    shown = _code(pattern) if pattern is not None else "the method's defaults"
    listed = "\n".join(f"- `{m}`" for m in facts.modules)
    if not facts.modules:
        return shown
    return (
        f"{shown}, matching {len(facts.modules)} modules\n\n<details><summary>adapted modules</summary>\n\n"
        f"{listed}\n\n</details>"
    )


def _variant(config: PeftConfig) -> str:
    describe = getattr(config, "card_variant", None)
    return describe() if callable(describe) else peft_type_name(config)


def _num_frames(config: PeftConfig) -> str:
    frames = getattr(config, "num_frames", None)
    if frames is not None:
        return (
            f"{frames} (frame-wise encoders take B*{frames} frames, the frames of each video consecutive; "
            "override per call with `peft_video.use_num_frames(T)`)"
        )
    return "not fixed in the config (set at run time with `peft_video.use_num_frames(T)` where the method needs it)"


def _config_table(config: PeftConfig) -> str:
    rows = [
        (f"`{key}`", _code(value))
        for key, value in sorted(config.to_dict().items())
        if key not in _GENERIC_CONFIG_FIELDS and not key.startswith("_")
    ]
    return _table(rows, ("setting", "value")) if rows else "No method-specific settings."


def _adapters_table(all_facts: list[AdapterFacts]) -> str:
    rows = [
        (
            f"`{f.name}`" + (" (active)" if i == 0 else ""),
            f"`{f.peft_type}`",
            f"{f.parameters:,}",
            str(len(f.modules)),
            _code(getattr(f.config, "num_frames", None)),
            "." if f.name == "default" else f"`{f.name}/`",
        )
        for i, f in enumerate(all_facts)
    ]
    return _table(rows, ("adapter", "peft type", "parameters", "adapted modules", "num_frames", "saved in"))


def _trainable(parameters: int, total: int) -> str:
    share = 100.0 * parameters / total if total else 0.0
    return f"{parameters:,} ({share:.4f}% of the base model's {total:,})"


def _pvla(settings: dict[str, Any] | None) -> str:
    if not settings:
        return (
            "No PVLA settings were recorded: this adapter was trained without the PVLA alignment loss, or its "
            "settings were not passed to `peft_video.integrations.set_card_info(model, pvla=...)`."
        )
    rows = [(f"`{k}`", _code(v)) for k, v in settings.items()]
    return (
        "Trained with the PVLA loss (partial optimal transport between video and text representations, "
        "READ-PVLA section 3.3) added to the task loss:\n\n" + _table(rows, ("setting", "value"))
    )


def _training_data(info: CardInfo) -> str:
    parts = []
    if info.training_data:
        parts.append(info.training_data)
    if info.datasets:
        parts.append(
            "Datasets: " + ", ".join(f"[`{d}`](https://huggingface.co/datasets/{d})" for d in info.datasets)
        )
    return "\n\n".join(parts) or "Not recorded."


def _metrics(info: CardInfo) -> str:
    if not info.metrics:
        return "Not recorded."
    return _table(
        [
            (f"`{k}`", _code(v) if not isinstance(v, (int, float)) else f"{v:.4g}")
            for k, v in info.metrics.items()
        ],
        ("metric", "value"),
    )


def _how_to_load(
    model: PeftModel, base_name: str | None, location: str, all_facts: list[AdapterFacts]
) -> str:
    base = model.get_base_model()
    cls = type(base)
    lines = [
        "import peft_video  # registers the PEFT_VIDEO_* adapter types with peft: needed before loading",
        "from peft import PeftModel",
    ]
    if cls.__module__.startswith("transformers.") and base_name:
        lines.append(f"from transformers import {cls.__name__}")
        lines.append("")
        lines.append(f"base = {cls.__name__}.from_pretrained({json.dumps(base_name)})")
    else:
        lines.append("")
        source = f" ({base_name})" if base_name else ""
        lines.append(
            f"base = ...  # the base model this adapter was trained on: {cls.__module__}.{cls.__name__}{source}"
        )
    lines.append(f"model = PeftModel.from_pretrained(base, {json.dumps(location)})")
    for facts in all_facts[1:]:
        if facts.name != "default":
            lines.append(
                f"model.load_adapter({json.dumps(location)}, adapter_name={json.dumps(facts.name)}, "
                f"subfolder={json.dumps(facts.name)})"
            )
    return "```python\n" + "\n".join(lines) + "\n```"


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "peft_video_version": __version__,
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


def peft_video_adapters(model: PeftModel) -> list[AdapterFacts]:
    """Facts of the peft-video adapters of ``model``, the active one first (a clear error if there are none)."""
    facts = [f for f in adapter_facts(model) if f.peft_type.startswith(PEFT_TYPE_PREFIX)]
    if not facts:
        raise ValueError(
            "`model` has no peft-video adapter; peft writes the card of other adapter types itself"
        )
    return facts


def card_fields(model: PeftModel, *, adapter_location: str) -> dict[str, str]:
    """The values of the template placeholders (``${name}``) for ``model``: every template may use any of them."""
    info = get_card_info(model)
    all_facts = peft_video_adapters(model)
    primary = all_facts[0]
    total = sum(p.numel() for p in model.parameters()) - sum(f.parameters for f in all_facts)
    base_name = base_model_name(model, info)
    return {
        "base_model": base_name or f"an unnamed {type(model.get_base_model()).__name__}",
        "peft_type": primary.peft_type,
        "adapter_name": primary.name,
        "variant": _variant(primary.config),
        "trainable_parameters": _trainable(primary.parameters, total),
        "target_modules": _targets(primary),
        "num_frames": _num_frames(primary.config),
        "config": _config_table(primary.config),
        "adapters": _adapters_table(all_facts),
        "pvla": _pvla(info.pvla),
        "training_data": _training_data(info),
        "metrics": _metrics(info),
        "how_to_load": _how_to_load(model, base_name, adapter_location, all_facts),
        **_versions(),
    }


def render_model_card(
    model: Any, *, adapter_location: str, extra_tags: Sequence[str] | None = None
) -> ModelCard:
    """The filled card of a peft-video PeftModel; ``adapter_location`` is where the how-to-load code loads from."""
    peft_model = unwrap_peft_model(model)
    info = get_card_info(peft_model)
    primary = peft_video_adapters(peft_model)[0]
    base_name = base_model_name(peft_model, info)
    values = card_fields(peft_model, adapter_location=adapter_location)
    template = ModelCard(load_template(primary.method))
    body = Template(template.text).substitute(values).strip()
    card = ModelCard(f"---\n{template.data.to_yaml()}\n---\n\n{CARD_START}\n{body}\n{CARD_END}\n")
    card.data["library_name"] = "peft"
    tags = list(card.data.get("tags") or [])
    base = peft_model.get_base_model()
    for tag in [
        *(getattr(base, "model_tags", None) or []),
        *info.tags,
        *as_str_list(extra_tags or [], "tags"),
    ]:
        if tag not in tags:
            tags.append(tag)
    card.data["tags"] = tags
    if is_hub_id(base_name):
        card.data["base_model"] = base_name
    if info.datasets:
        card.data["datasets"] = info.datasets
    if info.license:
        card.data["license"] = info.license
    return card


def merge_with_existing(card: ModelCard, existing: ModelCard) -> ModelCard:
    """Our card, keeping what another writer (e.g. Trainer's training summary) put outside our markers.

    Metadata: the other card's keys are kept unless ours sets them, tags are united. Body: our marked block
    replaces an earlier one in place; a card without our block keeps its text below ours.
    """
    data = existing.data.to_dict()
    ours = card.data.to_dict()
    tags = list(ours.get("tags") or [])
    tags += [t for t in data.get("tags") or [] if t not in tags]
    data.update(ours)
    data["tags"] = tags
    block = card.text.strip()
    text = existing.text
    if CARD_START in text and CARD_END in text:
        before, rest = text.split(CARD_START, 1)
        after = rest.split(CARD_END, 1)[1]
        body = f"{before.rstrip()}\n\n{block}\n\n{after.lstrip()}".strip()
    else:
        body = f"{block}\n\n{text.strip()}".strip()
    merged = ModelCard(f"---\n{type(card.data)(**data).to_yaml()}\n---\n\n{body}\n")
    return merged


def write_model_card(
    model: Any,
    output_dir: str | Path,
    *,
    adapter_location: str | None = None,
    extra_tags: Sequence[str] | None = None,
) -> Path:
    """Write (or update) ``output_dir/README.md`` with the card of ``model``; returns the file's path."""
    path = Path(output_dir) / "README.md"
    card = render_model_card(
        model, adapter_location=adapter_location or str(output_dir), extra_tags=extra_tags
    )
    if path.is_file():
        card = merge_with_existing(card, ModelCard.load(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
