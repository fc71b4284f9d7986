"""READ: exact identity at init, eq. 5 against a float64 reference, gradients, peft behaviours, bad input."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftConfig, get_model_status, get_peft_model, inject_adapter_in_model
from safetensors.torch import load_file

import peft_video
from peft_video import ReadConfig
from peft_video.tuners.read import ReadLayer

from .helpers import run_fresh, train_steps
from .tiny_models import (
    CASES,
    NUM_FRAMES,
    frames,
    tiny_bart,
    tiny_clip,
    tiny_clip_vision,
    tiny_open_clip,
    tokens,
)


def read_config(axis: str, **kwargs) -> ReadConfig:
    return ReadConfig(recurrence_axis=axis, num_frames=NUM_FRAMES if axis == "frames" else None, **kwargs)


def read_layers(model: torch.nn.Module) -> list[ReadLayer]:
    return [m for m in model.modules() if isinstance(m, ReadLayer)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_output_identical_to_base_at_init(case):
    torch.manual_seed(0)
    base = (
        case.build().eval().requires_grad_(False)
    )  # frozen as under peft: some kernels depend on requires_grad
    with torch.no_grad():
        expected = case.run(base)
    model = get_peft_model(copy.deepcopy(base), read_config(case.axis)).eval()
    assert read_layers(model), "no READ layer was injected"
    with torch.no_grad():
        assert torch.equal(case.run(model), expected)
    # and the adapter is live: a random W_up changes the output
    model = get_peft_model(copy.deepcopy(base), read_config(case.axis, init_weights=False)).eval()
    with torch.no_grad():
        assert not torch.allclose(case.run(model), expected)


def reference_read(output: torch.Tensor, layer: ReadLayer, axis: str, num_frames: int) -> torch.Tensor:
    """Eq. 5 in float64 with explicit loops over sequences: O + GELU(RNN(O W_down)) W_up."""
    down, rnn, up = (
        copy.deepcopy(m).double()
        for m in (layer.pvread_down["default"], layer.pvread_rnn["default"], layer.pvread_up["default"])
    )
    o = output.double()
    hidden = o @ down.weight.T + down.bias
    result = torch.empty_like(hidden)
    if axis == "frames":
        videos, tokens_ = o.shape[0] // num_frames, o.shape[1]
        for v in range(videos):
            for n in range(tokens_):
                seq = hidden[v * num_frames : (v + 1) * num_frames, n]  # (T, k): frame t of video v, token n
                result[v * num_frames : (v + 1) * num_frames, n] = rnn(seq.unsqueeze(0))[0][0]
    else:
        for b in range(o.shape[0]):
            result[b] = rnn(hidden[b].unsqueeze(0))[0][0]
    return o + torch.nn.functional.gelu(result) @ up.weight.T + up.bias


@pytest.mark.parametrize("axis", ["frames", "tokens"])
@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
def test_layer_matches_float64_reference_of_eq5(axis, rnn_type):
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip_vision(), read_config(axis, rnn_type=rnn_type, init_weights=False))
    layer = read_layers(model)[0]
    x = torch.randn(2 * NUM_FRAMES, 17, 32)
    with torch.no_grad():
        got = layer(x)
        expected = reference_read(layer.base_layer(x), layer, axis, NUM_FRAMES)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_frames_axis_is_causal_over_time_and_local_to_videos():
    """Changing frame t of video 0 changes READ's output only at frames >= t of video 0."""
    torch.manual_seed(0)
    layer = read_layers(get_peft_model(tiny_clip_vision(), read_config("frames", init_weights=False)))[0]
    x = torch.randn(2 * NUM_FRAMES, 17, 32)
    changed = x.clone()
    changed[1] += 1.0
    with torch.no_grad():
        delta = (layer(changed) - layer(x)).abs().amax(dim=(1, 2))
    assert delta[0] == 0 and (delta[1:NUM_FRAMES] > 0).all() and (delta[NUM_FRAMES:] == 0).all()


def clip_video_loss(model: torch.nn.Module) -> torch.Tensor:
    return model.get_image_features(pixel_values=frames()).pooler_output.pow(2).mean()


def test_paper_init_is_dead_but_ours_trains_every_read_weight():
    """The paper's all-zero RNN/W_up gives zero gradient to all but W_up's bias forever; our init does not."""
    torch.manual_seed(0)
    paper = get_peft_model(tiny_clip(), read_config("frames", init_weights="paper"))
    grads = train_steps(paper, clip_video_loss, steps=3)
    for name, grad in grads[-1].items():
        if name.endswith("pvread_up.default.bias"):
            assert grad.abs().sum() > 0
        else:
            assert grad.abs().sum() == 0, f"{name} unexpectedly got gradient under the paper's init"

    ours = get_peft_model(tiny_clip(), read_config("frames"))
    grads = train_steps(ours, clip_video_loss, steps=2)
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert trainable and all("pvread_" in n for n in trainable)
    for name in trainable:
        assert grads[1][name].abs().sum() > 0, f"{name} got no gradient by the second step"


def test_training_changes_only_read_parameters_and_all_of_them():
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), read_config("frames"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, clip_video_loss, steps=3)
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == ("pvread_" in name), f"{name}: changed={changed}"


def expected_parameter_count(d: int, k: int, rnn_type: str) -> int:
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[rnn_type]
    return (d * k + k) + gates * (2 * k * k + 2 * k) + (k * d + d)


@pytest.mark.parametrize("rnn_type", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("r", [1, 4, 8])
def test_parameter_count_equals_closed_form(rnn_type, r):
    model = get_peft_model(tiny_clip(), read_config("frames", r=r, rnn_type=rnn_type))
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == 2 * expected_parameter_count(32, r, rnn_type)  # two vision blocks


def trained_clip(tmp_path, axis: str = "frames"):
    torch.manual_seed(0)
    base = tiny_clip()
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(base, read_config(axis, r=4, rnn_type="gru"))
    train_steps(model, clip_video_loss, steps=3)
    return model.eval()


def test_save_and_reload_in_fresh_process_gives_identical_outputs(tmp_path):
    model = trained_clip(tmp_path)
    model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=frames()).pooler_output
    torch.save(expected, tmp_path / "expected.pt")

    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "PEFT_VIDEO_READ" and saved["peft_video_version"] == peft_video.__version__
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert weights and all("pvread_" in k for k in weights)
    assert not (tmp_path / "adapter" / "adapter_model.bin").exists()

    out = run_fresh(f"""
        import torch, peft_video
        from peft import PeftConfig, PeftModel
        from transformers import CLIPModel
        from tests.tiny_models import frames
        base = CLIPModel.from_pretrained(r"{tmp_path / "base"}")
        config = PeftConfig.from_pretrained(r"{tmp_path / "adapter"}")
        assert type(config).__name__ == "ReadConfig" and config.rnn_type == "gru", config
        model = PeftModel.from_pretrained(base, r"{tmp_path / "adapter"}").eval()
        with torch.no_grad():
            got = model.get_image_features(pixel_values=frames()).pooler_output
        assert torch.equal(got, torch.load(r"{tmp_path / "expected.pt"}")), (got - torch.load(r"{tmp_path / "expected.pt"}")).abs().max()
        print("identical")
    """)
    assert "identical" in out


def test_missing_import_fails_with_a_diagnosable_message(tmp_path):
    model = trained_clip(tmp_path)
    model.save_pretrained(tmp_path / "adapter")
    out = run_fresh(f"""
        from peft import PeftConfig
        try:
            PeftConfig.from_pretrained(r"{tmp_path / "adapter"}")
        except Exception as error:
            print(type(error).__name__, error)
    """)
    assert "PEFT_VIDEO_READ" in out


def test_two_adapters_switch_disable_and_delete(tmp_path):
    torch.manual_seed(0)
    base = tiny_clip().eval()
    with torch.no_grad():
        base_out = clip_video_loss(base)
    model = get_peft_model(copy.deepcopy(base), read_config("frames", init_weights=False)).eval()
    model.add_adapter("other", read_config("frames", rnn_type="lstm", init_weights=False))
    with torch.no_grad():
        default_out = clip_video_loss(model)
        model.set_adapter("other")
        other_out = clip_video_loss(model)
        assert not torch.equal(default_out, other_out) and not torch.equal(other_out, base_out)
        with model.disable_adapter():
            assert torch.equal(clip_video_loss(model), base_out)
        model.set_adapter("default")
        assert torch.equal(clip_video_loss(model), default_out)
        status = get_model_status(model)
        assert sorted(status.available_adapters) == ["default", "other"]
        model.delete_adapter("other")
        assert all("other" not in n for n, _ in model.named_parameters())
        assert torch.equal(clip_video_loss(model), default_out)


def test_load_adapter_adds_a_second_saved_adapter(tmp_path):
    model = trained_clip(tmp_path)
    model.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        expected = clip_video_loss(model)
    reloaded = get_peft_model(_base_from(tmp_path), read_config("frames", init_weights=False)).eval()
    reloaded.load_adapter(tmp_path / "adapter", adapter_name="loaded")
    with torch.no_grad():
        random_out = clip_video_loss(reloaded)
        reloaded.set_adapter("loaded")
        assert torch.equal(clip_video_loss(reloaded), expected)
        assert not torch.equal(random_out, expected)


def _base_from(tmp_path):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(tmp_path / "base")


def test_peft_config_round_trip(tmp_path):
    config = read_config("frames", r=3, rnn_type="lstm", read_dropout=0.1)
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ReadConfig)
    assert (loaded.r, loaded.rnn_type, loaded.read_dropout, loaded.num_frames) == (3, "lstm", 0.1, NUM_FRAMES)


def test_inject_adapter_in_model_without_peft_model():
    torch.manual_seed(0)
    base = tiny_open_clip().eval().requires_grad_(False)
    with torch.no_grad():
        expected = base.encode_text(tokens(length=16))
    injected = inject_adapter_in_model(read_config("tokens"), base)
    assert len(read_layers(injected)) == 2
    with torch.no_grad():
        assert torch.equal(injected.encode_text(tokens(length=16)), expected)


def test_modules_to_save_trains_and_saves_the_head(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), read_config("frames", modules_to_save=["visual_projection"]))
    train_steps(model, clip_video_loss, steps=2)
    model.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert any("visual_projection" in k for k in keys) and any("pvread_" in k for k in keys)


def test_merge_is_refused_with_a_clear_error():
    model = get_peft_model(tiny_clip(), read_config("frames"))
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_unload_restores_the_base_modules():
    base = tiny_clip().eval()
    with torch.no_grad():
        expected = clip_video_loss(base)
    unloaded = get_peft_model(copy.deepcopy(base), read_config("frames", init_weights=False)).unload()
    assert not read_layers(unloaded)
    with torch.no_grad():
        assert torch.equal(clip_video_loss(unloaded), expected)


def test_use_num_frames_overrides_the_config():
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip(), read_config("frames", init_weights=False)).eval()
    x = frames(videos=1, num_frames=8)
    with torch.no_grad(), peft_video.use_num_frames(8):
        eight = model.get_image_features(pixel_values=x).pooler_output
    with torch.no_grad():
        four = model.get_image_features(pixel_values=x).pooler_output  # config T=4: two 4-frame clips
    assert torch.allclose(eight[:4], four[:4]) and not torch.allclose(eight[4:], four[4:])


def test_bad_num_frames_for_batch_is_a_clear_error():
    model = get_peft_model(tiny_clip(), ReadConfig(recurrence_axis="frames", num_frames=3))
    with pytest.raises(ValueError, match=r"`num_frames`=3 does not divide the frame batch of size 8"):
        model.get_image_features(pixel_values=frames())


def test_frames_axis_without_num_frames_is_a_clear_error():
    model = get_peft_model(tiny_clip(), ReadConfig(recurrence_axis="frames"))
    with pytest.raises(ValueError, match="`num_frames` is not set"):
        model.get_image_features(pixel_values=frames())


def test_missing_target_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no_such_module"):
        get_peft_model(tiny_clip(), ReadConfig(target_modules=["no_such_module"]))


def test_unknown_architecture_without_targets_is_a_clear_error():
    with pytest.raises(ValueError, match="pass `target_modules`"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), ReadConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"rnn_type": "transformer"},
            r"`rnn_type` must be one of \('rnn', 'gru', 'lstm', 'none'\), got 'transformer'",
        ),
        ({"r": 0}, r"`r` \(READ bottleneck size k\) must be a positive integer, got 0"),
        ({"r": -2}, r"got -2"),
        ({"num_frames": 0}, r"`num_frames` must be a positive integer \(frames per video\), got 0"),
        (
            {"recurrence_axis": "space"},
            r"`recurrence_axis` must be one of \('tokens', 'frames'\), got 'space'",
        ),
        ({"read_dropout": 1.5}, r"`read_dropout` must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_config_values_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReadConfig(**kwargs)


def test_bart_decoder_and_encoder_ffns_are_targeted():
    model = get_peft_model(tiny_bart(), ReadConfig())
    names = [n for n, m in model.named_modules() if isinstance(m, ReadLayer)]
    assert any(".encoder." in n for n in names) and any(".decoder." in n for n in names)
    assert all(n.endswith("fc2") for n in names)


class TaskWrapper(torch.nn.Module):
    """A task model holding the backbone as a submodule, as the retrieval recipe does."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


@pytest.mark.parametrize("build", [tiny_clip, tiny_open_clip], ids=["hf-clip", "open-clip"])
@pytest.mark.parametrize("axis", ["frames", "tokens"])
def test_default_targets_find_the_right_tower_inside_a_wrapper(build, axis):
    model = get_peft_model(TaskWrapper(build()), read_config(axis))
    names = [n for n, m in model.named_modules() if isinstance(m, ReadLayer)]
    vision = [n for n in names if "vision_model" in n or "visual" in n]
    assert len(names) == 2 and len(vision) == (2 if axis == "frames" else 0), names
