"""What the three tuners share: the config base and its checks, the attribute forwarder, TokenMix's exclude_modules."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import PeftModel, get_peft_model

import peft_video
from peft_video import RapConfig, ReadConfig, TokenMixConfig
from peft_video.tuners._config import (
    PeftVideoConfig,
    check_bool,
    check_choice,
    check_optional_positive_int,
    check_positive_int,
    check_probability,
)
from peft_video.tuners.rap import RapLayer
from peft_video.tuners.read import ReadLayer
from peft_video.tuners.token_mix import TokenMixAttentionLayer, TokenMixLayer

from .tiny_models import frames, tiny_clip_vision

CONFIGS = [ReadConfig, RapConfig, TokenMixConfig]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_has_the_shared_fields_and_normalises_name_lists(config_cls):
    assert issubclass(config_cls, PeftVideoConfig)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert {"target_modules", "exclude_modules", "modules_to_save", "peft_video_version"} <= fields
    config = config_cls(exclude_modules=["a", "b"], modules_to_save=["head"])
    assert config.exclude_modules == {"a", "b"} and config.modules_to_save == ["head"]
    assert config_cls(exclude_modules=r"x\.\d+").exclude_modules == r"x\.\d+"  # a regex stays a string
    assert str(config.peft_type.value) == "PEFT_VIDEO_" + config_cls.method.upper()


def test_shared_checks_name_the_argument_and_what_they_expect():
    assert check_positive_int(3, "r") == 3
    for bad in (0, -1, 1.0, True, "2", None):
        with pytest.raises(ValueError, match=r"`r` \(bottleneck\) must be a positive integer, got "):
            check_positive_int(bad, "r", "bottleneck")
    assert check_optional_positive_int(None, "e") is None and check_optional_positive_int(4, "e") == 4
    with pytest.raises(ValueError, match="`e` must be None or a positive integer, got 0"):
        check_optional_positive_int(0, "e")
    assert check_probability(0, "p") == 0.0 and check_probability(0.5, "p") == 0.5
    for bad in (1.0, -0.1, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match=r"`p` must be in \[0, 1\), got"):
            check_probability(bad, "p")
    assert check_choice("gru", "kind", ("rnn", "gru")) == "gru"
    with pytest.raises(ValueError, match=r"`kind` must be one of \('rnn', 'gru'\), got 'cnn'"):
        check_choice("cnn", "kind", ("rnn", "gru"))
    with pytest.raises(ValueError, match="got True"):
        check_choice(True, "kind", (0, 1))  # True == 1 in Python, but it is not a choice
    assert check_bool(False, "flag") is False
    with pytest.raises(ValueError, match="`flag` must be True or False, got 1"):
        check_bool(1, "flag")


def _layers(model, cls):
    return [m for m in model.modules() if isinstance(m, cls)]


@pytest.mark.parametrize(
    ("config", "layer_cls", "forwarded"),
    [
        (ReadConfig(recurrence_axis="frames", num_frames=2), ReadLayer, "fc1"),
        (RapConfig(num_frames=2, rank=1, use_asa=False), RapLayer, "embed_dim"),
        (TokenMixConfig(num_frames=2), TokenMixLayer, "fc1"),
    ],
    ids=["read", "rap", "token_mix"],
)
def test_layers_forward_unknown_attributes_to_the_wrapped_module_but_not_adapter_names(
    config, layer_cls, forwarded
):
    layer = next(
        m
        for m in _layers(get_peft_model(tiny_clip_vision(), config), layer_cls)
        if hasattr(m.base_layer, forwarded)
    )
    assert getattr(layer, forwarded) is getattr(layer.base_layer, forwarded)
    with pytest.raises(AttributeError, match=f"'{type(layer).__name__}' object has no attribute"):
        getattr(layer, layer.adapter_prefix + "no_such_container")  # own name space: not forwarded
    with pytest.raises(AttributeError):
        layer.no_such_attribute  # noqa: B018


def test_token_mix_exclude_modules_leaves_the_excluded_parts_alone(tmp_path):
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    model = get_peft_model(base, TokenMixConfig(num_frames=2, exclude_modules=["mlp"]))
    targeted = sorted(model.base_model.targeted_module_names)
    assert targeted == [f"encoder.layers.1.{part}" for part in ("layer_norm1", "layer_norm2", "self_attn")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(".mlp." in n for n in trainable)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_clip_vision(), tmp_path)
    assert sorted(reloaded.base_model.targeted_module_names) == targeted


def test_token_mix_excluded_attention_does_not_mix():
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    x = frames(num_frames=2)
    with torch.no_grad():
        expected = base(pixel_values=x).last_hidden_state
    mixing = get_peft_model(_copy(base), TokenMixConfig(num_frames=2)).eval()
    excluded = get_peft_model(_copy(base), TokenMixConfig(num_frames=2, exclude_modules=["self_attn"])).eval()
    assert _layers(mixing, TokenMixAttentionLayer) and not _layers(excluded, TokenMixAttentionLayer)
    with torch.no_grad():
        assert not torch.allclose(
            mixing(pixel_values=x).last_hidden_state, expected
        )  # mixing changes the output
        assert torch.equal(
            excluded(pixel_values=x).last_hidden_state, expected
        )  # the copies start equal to base


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_token_mix_exclude_modules_round_trips_in_the_config(tmp_path):
    TokenMixConfig(num_frames=2, exclude_modules=["mlp"]).save_pretrained(tmp_path)
    loaded = peft_video.TokenMixConfig.from_pretrained(tmp_path)
    assert loaded.exclude_modules == {"mlp"}
