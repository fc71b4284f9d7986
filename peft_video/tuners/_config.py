"""The base of every peft-video config, and the argument checks its subclasses share.

:class:`PeftVideoConfig` stamps the method's ``PEFT_VIDEO_*`` peft type and the package version, carries the fields
every peft-video tuner has (``target_modules``, ``exclude_modules``, ``modules_to_save``), and runs each config's
checks in one order: common normalisation, the subclass's :meth:`PeftVideoConfig.validate`, then the rule that no
setting is silently ignored (:meth:`PeftVideoConfig.unused_settings`).

**The rule for settings that would have no effect** (nothing is silently ignored):

- *Contradictions are errors.* A setting that asks for something the rest of the config rules out is a
  ``ValueError`` naming both: READ's ``num_frames`` (recurrence over frames) with ``recurrence_axis="tokens"``,
  through :meth:`PeftVideoConfig.unused_settings`; checks that need the model (RAP's ``text_modulation=True``
  without a text tower) run at injection.
- *A switched-off part keeps its settings, unused.* An ablation switch (RAP's ``use_lorm`` / ``use_asa``, TokenMix's
  ``strategy="none"``, READ's ``rnn_type="none"``) says by itself that its part is off; that part's settings stay in
  the config and the saved file, documented in each field's help, so one config serves every row of an ablation.
- *A config read back from a saved* ``adapter_config.json`` (peft passes its stored ``peft_type``) is first brought
  to the current form (:meth:`PeftVideoConfig.upgrade_saved`), and a contradiction an earlier peft-video accepted
  loads as it behaved then: the unused value is reset to its default, with a warning.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig

from .._version import __version__


def is_positive_int(value: object) -> bool:
    """True for an ``int`` (not a ``bool``) above zero."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_positive_int(value: object, name: str, what: str = "") -> int:
    """``value`` if it is a positive integer, else a ``ValueError`` naming ``name`` (and ``what`` it is)."""
    if not is_positive_int(value):
        described = f"`{name}` ({what})" if what else f"`{name}`"
        raise ValueError(f"{described} must be a positive integer, got {value!r}")
    return value  # type: ignore[return-value]


def check_optional_positive_int(value: object, name: str) -> int | None:
    """``value`` if it is None or a positive integer, else a ``ValueError`` naming ``name``."""
    if value is not None and not is_positive_int(value):
        raise ValueError(f"`{name}` must be None or a positive integer, got {value!r}")
    return value  # type: ignore[return-value]


def check_probability(value: object, name: str) -> float:
    """``value`` if it is a number in [0, 1) (a dropout probability), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``name`` and the choices."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices) or value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is True or False, else a ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return value


def as_set(value: Any) -> Any:
    """A list or tuple of module names as a set (peft's convention for name lists); a regex string or None as is."""
    return set(value) if isinstance(value, (list, tuple)) else value


@dataclass
class PeftVideoConfig(PeftConfig):
    """A ``PeftConfig`` whose subclasses name their method (class attribute ``method``, e.g. ``"read"``).

    Subclasses put their checks in :meth:`validate` (not in ``__post_init__``), so that every config is normalised
    the same way first.
    """

    method = ""  # not a dataclass field: set by each subclass

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Modules to adapt: names (suffix match) or one regex (full match). None: the method's default "
            "for the architecture."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Names (suffix match) or a regex (full match) of modules to leave alone even if they match."
        },
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Extra modules (e.g. a task head) to train and save beside the adapter."},
    )
    peft_video_version: str = field(
        default=__version__, metadata={"help": "peft-video version that wrote this config (informational)."}
    )
    how_to_load: str = field(
        default="",
        metadata={
            "help": "Written into every saved adapter_config.json (informational): peft knows PEFT_VIDEO_* types only "
            "after `import peft_video`, and the error it raises without it does not say so."
        },
    )

    def __post_init__(self) -> None:
        # peft builds a config from a saved adapter_config.json with its stored peft_type; a new one has none yet
        from_saved = self.peft_type is not None
        super().__post_init__()
        from .._registry import peft_type_of

        self.peft_type = peft_type_of(self.method)
        self.how_to_load = loading_note(getattr(self.peft_type, "value", str(self.peft_type)))
        self.target_modules = as_set(self.target_modules)
        self.exclude_modules = as_set(self.exclude_modules)
        if from_saved:
            self.upgrade_saved()
        self.validate()
        self._reject_unused_settings(from_saved)

    def validate(self) -> None:
        """Check (and normalise) the method's own fields; ``ValueError`` naming the field for bad values."""

    def upgrade_saved(self) -> None:
        """Bring a config read from a saved ``adapter_config.json`` to the current form before :meth:`validate`
        (e.g. a value recorded at injection that is derived again on loading); the default changes nothing."""

    def unused_settings(self) -> dict[str, str]:
        """The fields that have no effect given the rest of this config, each with the reason (``"with `x`=..."``).

        Only those set away from their default are reported (see the module docstring for the rule).
        """
        return {}

    def card_variant(self) -> str:
        """One line for the model card naming what this config builds (the method's name unless it has variants)."""
        return self.method

    def _reject_unused_settings(self, from_saved: bool) -> None:
        defaults = {f.name: _default(f) for f in dataclasses.fields(self)}
        for name, reason in self.unused_settings().items():
            value, default = getattr(self, name), defaults[name]
            if value == default:
                continue
            if not from_saved:
                raise ValueError(
                    f"`{name}`={value!r} has no effect {reason}; leave `{name}` at its default ({default!r}) or "
                    "change the setting that switches it off"
                )
            warnings.warn(
                f"this saved {type(self).__name__} has `{name}`={value!r}, which has no effect {reason}: loading it "
                f"as it was trained, with `{name}`={default!r}",
                stacklevel=3,
            )
            setattr(self, name, default)


LOADING_ERROR = "KeyError: '{peft_type}'"
"""What peft 0.21 raises when a process that never imported peft_video loads a peft-video adapter, from every entry
point: ``PeftConfig.from_pretrained``, ``PeftModel.from_pretrained``, ``AutoPeftModel.from_pretrained`` and
transformers' ``model.load_adapter`` (each looks the type up in peft's config mapping)."""


def loading_note(peft_type: str) -> str:
    """The note every saved ``adapter_config.json`` carries: how to load it, and the error seen without it."""
    return (
        f"Run `import peft_video` (pip install peft-video) before loading this adapter: peft knows the type "
        f"{peft_type} only after it. Without it, PeftModel.from_pretrained, PeftConfig.from_pretrained, "
        f"AutoPeftModel.from_pretrained and transformers' load_adapter fail with "
        f"{LOADING_ERROR.format(peft_type=peft_type)}."
    )


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING
