"""Extend peft's closed ``PeftType`` enum and register peft-video's tuners: the only module touching peft's maps.

peft's ``register_peft_method`` accepts only names already present in ``PeftType``. We add our members at import
time, idempotently, with a ``PEFT_VIDEO_`` prefix so that no future upstream method can collide with them.
"""

from __future__ import annotations

from peft import PeftType
from peft.utils import register_peft_method

PEFT_TYPE_PREFIX = "PEFT_VIDEO_"


def extend_peft_type(name: str) -> PeftType:
    """Return ``PeftType[name]``, adding the member if peft does not have it yet (idempotent).

    Raises ``RuntimeError`` if ``name`` lacks our project prefix, or if a member of that name exists but was not
    created by peft-video (an upstream collision), so that we never silently hijack a peft method.
    """
    if not name.startswith(PEFT_TYPE_PREFIX) or name != name.upper():
        raise ValueError(
            f"peft-video peft_type names must be upper case and start with {PEFT_TYPE_PREFIX!r}, got {name!r}"
        )
    existing = PeftType.__members__.get(name)
    if existing is not None:
        if getattr(existing, "_peft_video_owned", False):
            return existing
        raise RuntimeError(
            f"peft already defines PeftType.{name}, which peft-video also wants to register. This peft version is "
            "not supported by this peft-video version: upgrade peft-video or pin peft to the range in its README."
        )
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member._sort_order_ = len(PeftType._member_names_)
    member.__objclass__ = PeftType
    member._peft_video_owned = True
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)  # bypass EnumType.__setattr__, which forbids new members
    return member


def peft_type_of(method: str) -> PeftType:
    """The ``PeftType`` member of a peft-video method, e.g. ``"read"`` -> ``PeftType.PEFT_VIDEO_READ``."""
    return extend_peft_type(PEFT_TYPE_PREFIX + method.upper())


def register_method(*, name: str, config_cls: type, model_cls: type) -> PeftType:
    """Register one tuner with peft under ``PEFT_VIDEO_<NAME>`` (idempotent); returns its ``PeftType`` member."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    peft_type = peft_type_of(name)
    if (
        PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) is config_cls
        and PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type) is model_cls
    ):
        return peft_type
    register_peft_method(
        name=peft_type.value.lower(), config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix
    )
    return peft_type
