"""READ's recurrence axis follows from the config and the model, never silently the wrong one (issue 16, part 2)."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model

import peft_video
from peft_video import ReadConfig
from peft_video.tuners.read import ReadLayer

from .tiny_models import NUM_FRAMES, frames, tiny_bart, tiny_clip, tiny_clip_vision, tiny_open_clip


def video_embedding(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Mean over frames of each frame's [CLS] feature: an order-blind pooling, so any order signal comes from READ."""
    cls = model(pixel_values=pixels).last_hidden_state[:, 0]
    return cls.reshape(-1, NUM_FRAMES, cls.shape[-1]).mean(dim=1)


def reversed_in_time(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.reshape(-1, NUM_FRAMES, *pixels.shape[1:]).flip(1).flatten(0, 1)


def test_num_frames_means_frames():
    assert ReadConfig(num_frames=8).recurrence_axis == "frames"
    assert ReadConfig().recurrence_axis is None  # decided at injection
    with pytest.raises(ValueError, match=r"`num_frames`=8 has no effect with `recurrence_axis`='tokens'"):
        ReadConfig(num_frames=8, recurrence_axis="tokens")


def test_issue_16_num_frames_on_a_vision_tower_learns_frame_order():
    """ReadConfig(num_frames=T) on a CLIP vision tower tells a video from its reversal; token recurrence cannot."""
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    pixels = frames()
    frames_read = get_peft_model(
        copy.deepcopy(base), ReadConfig(num_frames=NUM_FRAMES, init_weights=False)
    ).eval()
    assert frames_read.peft_config["default"].recurrence_axis == "frames"
    tokens_read = get_peft_model(
        copy.deepcopy(base), ReadConfig(recurrence_axis="tokens", init_weights=False)
    )
    with torch.no_grad():
        forward, backward = (
            video_embedding(frames_read, pixels),
            video_embedding(frames_read, reversed_in_time(pixels)),
        )
        assert not torch.allclose(forward, backward, atol=1e-4)
        forward, backward = (
            video_embedding(tokens_read, pixels),
            video_embedding(tokens_read, reversed_in_time(pixels)),
        )
        torch.testing.assert_close(forward, backward)  # the recurrence never crosses frames: order-blind


@pytest.mark.parametrize(
    ("build", "axis", "tower"),
    [(tiny_clip_vision, "frames", "encoder.layers"), (tiny_bart, "tokens", "fc2")],
    ids=["vision-only", "encoder-decoder text"],
)
def test_axis_follows_from_the_model_and_is_saved(build, axis, tower, tmp_path):
    model = get_peft_model(build(), ReadConfig())
    assert model.peft_config["default"].recurrence_axis == axis
    assert all(tower in name for name in model.base_model.targeted_module_names)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["recurrence_axis"] == axis
    assert PeftConfig.from_pretrained(tmp_path).recurrence_axis == axis


def test_vision_tower_without_num_frames_takes_t_at_run_time():
    model = get_peft_model(tiny_clip_vision(), ReadConfig(init_weights=False)).eval()
    with pytest.raises(ValueError, match="`num_frames` is not set"):
        model(pixel_values=frames())
    with torch.no_grad(), peft_video.use_num_frames(NUM_FRAMES):
        assert model(pixel_values=frames()).last_hidden_state.shape == (2 * NUM_FRAMES, 17, 32)


@pytest.mark.parametrize("build", [tiny_clip, tiny_open_clip], ids=["hf-clip", "open-clip"])
def test_two_tower_model_without_axis_or_targets_is_a_clear_error(build):
    with pytest.raises(ValueError, match="needs to know which to adapt: pass `num_frames`=T"):
        get_peft_model(build(), ReadConfig())
    vision = get_peft_model(build(), ReadConfig(num_frames=NUM_FRAMES))
    text = get_peft_model(build(), ReadConfig(recurrence_axis="tokens"))
    assert all("vision" in n or "visual" in n for n in vision.base_model.targeted_module_names)
    assert not any("vision" in n or "visual" in n for n in text.base_model.targeted_module_names)


def test_axis_follows_from_explicit_targets():
    vision = get_peft_model(
        tiny_clip(), ReadConfig(target_modules=r"vision_model\.encoder\.layers\.\d+\.mlp")
    )
    text = get_peft_model(tiny_clip(), ReadConfig(target_modules=r"text_model\.encoder\.layers\.\d+\.mlp"))
    assert vision.peft_config["default"].recurrence_axis == "frames"
    assert text.peft_config["default"].recurrence_axis == "tokens"
    layers = [m for m in vision.modules() if isinstance(m, ReadLayer)]
    assert layers and all(layer.pvread_axis["default"] == "frames" for layer in layers)
    with pytest.raises(ValueError, match="selects modules of the vision tower .* and others"):
        get_peft_model(tiny_clip(), ReadConfig(target_modules=["mlp"]))  # both towers' MLPs
    with pytest.raises(
        ValueError, match="recurrence_axis='frames' recurs over the frames .* text-tower modules"
    ):
        get_peft_model(
            tiny_clip(),
            ReadConfig(recurrence_axis="frames", target_modules=r"text_model\.encoder\.layers\.\d+\.mlp"),
        )
    both = ReadConfig(recurrence_axis="tokens", target_modules=["mlp"])  # explicit: allowed, over tokens
    assert len(get_peft_model(tiny_clip(), both).base_model.targeted_module_names) == 4


def test_adapter_saved_with_tokens_and_num_frames_by_an_older_version_loads_as_it_behaved(tmp_path):
    """Before the axis rule, ReadConfig(num_frames=T) defaulted to tokens and saved both: it must still load."""
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    trained = get_peft_model(
        copy.deepcopy(base), ReadConfig(recurrence_axis="tokens", init_weights=False)
    ).eval()
    trained.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    saved["num_frames"] = 8  # what the older version wrote
    (tmp_path / "adapter_config.json").write_text(json.dumps(saved))
    with pytest.warns(
        UserWarning, match=r"`num_frames`=8, which has no effect with `recurrence_axis`='tokens'"
    ):
        config = PeftConfig.from_pretrained(tmp_path)
    assert (config.recurrence_axis, config.num_frames) == ("tokens", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=frames()).last_hidden_state,
            trained(pixel_values=frames()).last_hidden_state,
        )
