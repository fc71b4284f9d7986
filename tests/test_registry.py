"""Registration with peft: idempotent, prefixed, and loud on a collision with an upstream member."""

from __future__ import annotations

import pytest
from peft import PeftType
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

import peft_video
from peft_video import _registry

from .helpers import run_fresh


def test_import_registers_read_with_peft():
    assert PeftType("PEFT_VIDEO_READ") is PeftType.PEFT_VIDEO_READ
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.PEFT_VIDEO_READ] is peft_video.ReadConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.PEFT_VIDEO_READ] is peft_video.ReadModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.PEFT_VIDEO_READ] == "pvread_"


def test_registration_is_idempotent():
    before = len(PeftType.__members__)
    assert (
        _registry.register_method(
            name="read", config_cls=peft_video.ReadConfig, model_cls=peft_video.ReadModel
        )
        is PeftType.PEFT_VIDEO_READ
    )
    assert len(PeftType.__members__) == before


def test_reimport_in_fresh_process_is_idempotent():
    out = run_fresh("""
        import importlib, peft_video
        from peft import PeftType
        n = len(PeftType.__members__)
        importlib.reload(peft_video)
        assert len(PeftType.__members__) == n
        print("ok")
    """)
    assert "ok" in out


def test_upstream_collision_is_a_clear_error():
    name = "PEFT_VIDEO_UPSTREAM_TWIN"
    member = str.__new__(PeftType, name)  # simulate a future peft defining the same name itself
    member._name_, member._value_ = name, name
    PeftType._member_map_[name] = member
    try:
        with pytest.raises(RuntimeError, match="peft already defines PeftType.PEFT_VIDEO_UPSTREAM_TWIN"):
            _registry.extend_peft_type(name)
    finally:
        del PeftType._member_map_[name]


def test_names_without_the_project_prefix_are_refused():
    with pytest.raises(ValueError, match="must be upper case and start with 'PEFT_VIDEO_'"):
        _registry.extend_peft_type("LORA2")
