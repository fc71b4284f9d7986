"""The Houlsby adapter as READ without the recurrence: ReadConfig(rnn_type="none")."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from peft_video import ReadConfig
from peft_video.integrations.model_card import render_model_card
from peft_video.tuners.read import ReadLayer

from .tiny_models import NUM_FRAMES, frames, tiny_clip, tiny_clip_vision


def adapter_config(**kwargs) -> ReadConfig:
    return ReadConfig(rnn_type="none", num_frames=NUM_FRAMES, **kwargs)


def layers(model) -> list[ReadLayer]:
    return [m for m in model.modules() if isinstance(m, ReadLayer)]


@pytest.mark.parametrize("r", [1, 4, 8])
def test_parameter_count_is_2dk_plus_d_plus_k_per_module(r):
    model = get_peft_model(tiny_clip(), adapter_config(r=r))
    trainable, _ = model.get_nb_trainable_parameters()
    d, modules = 32, 2  # the tiny CLIP's vision width, two vision blocks
    assert trainable == modules * (2 * d * r + d + r)
    assert not any("pvread_rnn" in name for name, _ in model.named_parameters())


def test_no_rnn_parameters_are_saved_and_reload_is_exact(tmp_path):
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    model = get_peft_model(copy.deepcopy(base), adapter_config(init_weights=False)).eval()
    model.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert keys and all("pvread_down" in k or "pvread_up" in k for k in keys)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=frames()).last_hidden_state, model(pixel_values=frames()).last_hidden_state
        )


def test_identity_at_init_and_the_houlsby_formula_in_float64():
    torch.manual_seed(0)
    base = tiny_clip_vision().eval()
    with torch.no_grad():
        expected = base(pixel_values=frames()).last_hidden_state
        assert torch.equal(
            get_peft_model(copy.deepcopy(base), adapter_config())(pixel_values=frames()).last_hidden_state,
            expected,
        )
    layer = layers(get_peft_model(copy.deepcopy(base), adapter_config(init_weights=False)))[0]
    x = torch.randn(2 * NUM_FRAMES, 17, 32)
    with torch.no_grad():
        o = layer.base_layer(x).double()
        down, up = layer.pvread_down["default"], layer.pvread_up["default"]
        reference = (
            o
            + torch.nn.functional.gelu(o @ down.weight.double().T + down.bias.double()) @ up.weight.double().T
        )
        reference = reference + up.bias.double()
        torch.testing.assert_close(layer(x).double(), reference, atol=1e-5, rtol=1e-5)


def test_each_token_on_its_own_no_order_over_frames():
    """Changing frame 1 changes only frame 1's output (the recurrent READ changes every later frame too)."""
    torch.manual_seed(0)
    layer = layers(get_peft_model(tiny_clip_vision(), adapter_config(init_weights=False)))[0]
    x = torch.randn(2 * NUM_FRAMES, 17, 32)
    changed = x.clone()
    changed[1] += 1.0
    with torch.no_grad():
        delta = (layer(changed) - layer(x)).abs().amax(dim=(1, 2))
    assert delta[1] > 0 and (delta[torch.arange(len(delta)) != 1] == 0).all()


def test_same_targets_as_the_recurrent_variant_so_flipping_rnn_type_is_the_ablation():
    recurrent = get_peft_model(tiny_clip(), ReadConfig(num_frames=NUM_FRAMES, rnn_type="gru"))
    adapter = get_peft_model(tiny_clip(), adapter_config())
    assert adapter.base_model.targeted_module_names == recurrent.base_model.targeted_module_names
    assert adapter.peft_config["default"].recurrence_axis == "frames"


def test_paper_init_without_an_rnn_is_the_default_init():
    """'paper' differs from True only in zeroing the RNN: without one it is the same init (documented)."""
    weights = []
    for init in (True, "paper"):
        torch.manual_seed(0)
        model = get_peft_model(tiny_clip_vision(), adapter_config(init_weights=init))
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if "pvread_" in n})
    assert weights[0].keys() == weights[1].keys() and all(
        torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
    )


def test_model_card_names_the_houlsby_adapter():
    card = render_model_card(get_peft_model(tiny_clip(), adapter_config()), adapter_location="here").text
    assert "- Variant: adapter (Houlsby): READ without the recurrence" in card
    card = render_model_card(
        get_peft_model(tiny_clip(), ReadConfig(num_frames=4)), adapter_location="here"
    ).text
    assert "- Variant: READ, recurrent adapter: RNN recurrence over frames" in card
