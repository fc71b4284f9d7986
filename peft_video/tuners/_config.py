"""The base of every peft-video config, and the argument checks its subclasses share.

:class:`PeftVideoConfig` stamps the method's ``PEFT_VIDEO_*`` peft type and the package version, carries the fields
every peft-video tuner has (``target_modules``, ``exclude_modules``, ``modules_to_save``), and runs each config's
checks in one order: common normalisation, then the subclass's :meth:`PeftVideoConfig.validate`.
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        super().__post_init__()
        from .._registry import peft_type_of

        self.peft_type = peft_type_of(self.method)
        self.target_modules = as_set(self.target_modules)
        self.exclude_modules = as_set(self.exclude_modules)
        self.validate()

    def validate(self) -> None:
        """Check (and normalise) the method's own fields; ``ValueError`` naming the field for bad values."""
