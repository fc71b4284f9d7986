"""RAP as a peft tuner on tiny HF CLIP and open_clip models: identities, gradients, peft behaviours, bad input."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from peft import PeftConfig, PeftModel, get_model_status, get_peft_model, inject_adapter_in_model
from safetensors.torch import load_file

import peft_video
from peft_video import RapConfig, rap_condition, use_num_frames
from peft_video.tuners.rap import RapLayer

from .helpers import run_fresh, train_steps
from .tiny_models import NUM_FRAMES as FRAMES
from .tiny_models import VIDEOS, frames, tiny_clip, tiny_clip_vision, tiny_open_clip, tokens

PATCHES, EMBED = 16, 16  # tiny towers: image 32, patch 8 -> 16 patches; joint embedding width 16


def deep_hf_clip() -> torch.nn.Module:
    """tiny_clip with 6 vision blocks (to tell 'light' from 'all')."""
    model = tiny_clip()
    config = copy.deepcopy(model.config)
    config.vision_config.num_hidden_layers = 6
    return type(model)(config)


def deep_open_clip() -> torch.nn.Module:
    import open_clip

    return open_clip.CLIP(
        embed_dim=EMBED,
        vision_cfg={"width": 32, "layers": 6, "head_width": 16, "image_size": 32, "patch_size": 8},
        text_cfg={"context_length": 16, "vocab_size": 99, "width": 32, "heads": 2, "layers": 2},
    )


@dataclass(frozen=True)
class Family:
    """How to build and run one backbone family."""

    name: str
    build: Callable[[], torch.nn.Module]
    build_deep: Callable[[], torch.nn.Module]
    text_length: int
    vision_attention: str  # a vision block's attention module name, for block index {i}

    def encode_text(self, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        if self.name == "hf":
            return model.get_text_features(input_ids=ids).pooler_output
        return model.encode_text(ids)

    def encode_frames(self, model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        if self.name == "hf":
            return model.get_image_features(pixel_values=pixels).pooler_output
        return model.encode_image(pixels)

    def inputs(self, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return frames(seed), tokens(seed, length=self.text_length)


HF = Family("hf", tiny_clip, deep_hf_clip, 12, "vision_model.encoder.layers.{i}.self_attn")
OPEN_CLIP = Family("open_clip", tiny_open_clip, deep_open_clip, 16, "visual.transformer.resblocks.{i}.attn")
FAMILIES = pytest.mark.parametrize("family", [HF, OPEN_CLIP], ids=lambda f: f.name)


def rap(**kwargs) -> RapConfig:
    return RapConfig(**{"num_frames": FRAMES, "rank": 2, "top_k": 3, **kwargs})


def build(family: Family, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_peft_model(family.build().eval(), rap(**kwargs))


def encode_pair(family: Family, model, pixels, ids, *, condition: str = "paired"):
    """(text embeds, mean-pooled video embeds) with the video conditioned on its own caption (or the candidates)."""
    text = family.encode_text(model, ids)
    with rap_condition(**{condition: text}):
        video = family.encode_frames(model, pixels)
    return text, video.view(VIDEOS, FRAMES, -1).mean(1)


def contrastive_loss(family: Family) -> Callable[[torch.nn.Module], torch.Tensor]:
    """Symmetric InfoNCE of mean-pooled videos (conditioned on their captions) against the captions."""
    pixels, ids = family.inputs()

    def loss(model: torch.nn.Module) -> torch.Tensor:
        text, video = encode_pair(family, model, pixels, ids)
        logits = 10 * F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T
        labels = torch.arange(VIDEOS)
        return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)

    return loss


def rap_layers(model) -> list[RapLayer]:
    return [m for m in model.modules() if isinstance(m, RapLayer)]


def randomize_adapter(model, adapter: str = "default", seed: int = 0) -> None:
    """Give every parameter of ``adapter`` non-trivial values (so identities cannot pass by accident)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if f".{adapter}" in name and "pvrap_" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


# -- configuration and targets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "`rank`"),
        ({"rank": -2}, "`rank`"),
        ({"rank": 13}, "`rank`=13 exceeds `num_frames`=12"),
        ({"top_k": 0}, "`top_k`"),
        ({"num_frames": 0}, "`num_frames`"),
        ({"blocks": "heavy"}, "`blocks`"),
        ({"blocks": [1, 1]}, "`blocks`"),
        ({"proj_init": "zeros"}, "`proj_init`"),
        ({"condition_dim": 0}, "`condition_dim`"),
        ({"use_lorm": False, "use_asa": False, "text_modulation": False}, "would do nothing"),
    ],
)
def test_config_rejects_bad_values_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RapConfig(**kwargs)


@FAMILIES
def test_top_k_larger_than_patch_count_is_rejected(family):
    with pytest.raises(ValueError, match=f"`top_k`=17 exceeds the {PATCHES} patches"):
        build(family, top_k=17)


@FAMILIES
def test_default_targets_cover_vision_and_text_blocks(family, tmp_path):
    model = get_peft_model(family.build_deep(), rap(blocks="light"))
    model.save_pretrained(tmp_path)  # the saved config (blocks + resolved targets) reloads consistently
    reloaded = PeftModel.from_pretrained(family.build_deep(), tmp_path)
    assert reloaded.base_model.targeted_module_names == model.base_model.targeted_module_names
    targeted = model.base_model.targeted_module_names
    vision = sorted(k for k in targeted if k.startswith(("vision", "visual")))
    assert vision == [family.vision_attention.format(i=i) for i in (2, 3, 4, 5)]  # RAP_light: the last 4
    text = sorted(set(targeted) - set(vision))
    assert len(text) == 2 and {layer.pvrap_tower for layer in rap_layers(model)} == {"video", "text"}

    no_text = build(family, blocks=[-1], text_modulation=False)
    assert no_text.base_model.targeted_module_names == [family.vision_attention.format(i=1)]


class TaskWrapper(torch.nn.Module):
    """A retrieval model holding the CLIP as ``backbone`` (targets must tolerate the prefix)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone


@FAMILIES
def test_default_targets_tolerate_a_task_wrapper(family):
    torch.manual_seed(0)
    model = get_peft_model(TaskWrapper(family.build().eval()), rap())
    names = sorted(model.base_model.targeted_module_names)
    assert len(names) == 4 and all(name.startswith("backbone.") for name in names)
    assert sorted(layer.pvrap_tower for layer in rap_layers(model)) == ["text", "text", "video", "video"]
    backbone = model.base_model.model.backbone
    with torch.no_grad():
        text, video = encode_pair(family, backbone, *family.inputs())
    assert video.shape == (VIDEOS, EMBED)


def test_vision_only_models_get_no_text_targets():
    model = get_peft_model(tiny_clip_vision(), rap())
    names = sorted(model.base_model.targeted_module_names)
    assert names == [f"encoder.layers.{i}.self_attn" for i in range(2)]
    proj = model.base_model.pvrap_proj["default"]
    assert proj.weight.shape == (512, 32)  # CLIPVisionConfig's projection_dim
    visual = get_peft_model(tiny_open_clip().visual, rap())
    names = sorted(visual.base_model.targeted_module_names)
    assert names == [f"transformer.resblocks.{i}.attn" for i in range(2)]
    with torch.no_grad():  # both run conditioned, on their own joint width
        with rap_condition(paired=torch.randn(VIDEOS, 512)):
            assert model(pixel_values=frames()).pooler_output.shape == (VIDEOS * FRAMES, 32)
        with rap_condition(candidates=torch.randn(3, EMBED)):
            assert visual(frames()).shape == (VIDEOS * FRAMES, EMBED)


def test_proj_starts_from_the_frozen_visual_projection():
    base = tiny_clip()
    model = get_peft_model(copy.deepcopy(base), rap())
    assert torch.equal(model.base_model.pvrap_proj["default"].weight, base.visual_projection.weight)
    random = get_peft_model(copy.deepcopy(base), rap(proj_init="random"))
    assert not torch.equal(random.base_model.pvrap_proj["default"].weight, base.visual_projection.weight)
    with pytest.raises(ValueError, match="`proj_init`='model' needs a visual projection of shape"):
        get_peft_model(tiny_clip_vision(), rap(proj_init="model"))


def test_blocks_conflicting_with_explicit_targets_is_an_error():
    with pytest.raises(ValueError, match=r"`blocks`=\[0\] selects vision blocks \[0\]"):
        get_peft_model(
            tiny_clip(), rap(blocks=[0], target_modules=r"vision_model\.encoder\.layers\.1\.self_attn")
        )


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="RAP supports frame-wise CLIP video encoders"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), rap(target_modules=["0"]))


def test_config_round_trip(tmp_path):
    rap(blocks=[0, -1], top_k=5, use_lorm=False, condition_dim=16).save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, RapConfig)
    assert (loaded.blocks, loaded.top_k, loaded.use_lorm, loaded.condition_dim) == ([0, -1], 5, False, 16)


# -- identities --------------------------------------------------------------------------------------------------------


@FAMILIES
def test_output_unchanged_at_init(family):
    model = build(family)
    pixels, ids = family.inputs()
    with torch.no_grad():
        text, video = encode_pair(family, model, pixels, ids)
        with model.disable_adapter():
            base_text = family.encode_text(model, ids)
            base_video = family.encode_frames(model, pixels).view(VIDEOS, FRAMES, -1).mean(1)
    assert torch.equal(text, base_text)
    if family is HF:
        assert torch.equal(video, base_video)
    else:
        # torch's fused MultiheadAttention inference path needs query is key is value, which ASA's separate keys and
        # values cannot be: the two paths agree to float rounding (bitwise on the same path, see the test below).
        torch.testing.assert_close(video, base_video, rtol=0, atol=1e-6)


@FAMILIES
def test_asa_with_zero_offsets_is_the_base_attention_exactly(family):
    """Random LoRM and Proj, zero gamma/delta: the wrapped attention equals the base attention on u = LoRM(x)."""
    model = build(family)
    randomize_adapter(model)
    with torch.no_grad():
        model.base_model.pvrap_patch_offset["default"].zero_()
        model.base_model.pvrap_frame_offset["default"].zero_()
    layer = next(layer for layer in rap_layers(model) if layer.pvrap_tower == "video")
    x = torch.randn(VIDEOS * FRAMES, PATCHES + 1, 32)

    def attend(module, *inputs):
        return module(*inputs)[0] if family is HF else module(*inputs, need_weights=False)[0]

    with torch.no_grad(), rap_condition(paired=torch.randn(VIDEOS, EMBED)):
        u = layer.modulate(x, "default", FRAMES)
        assert not torch.equal(u, x)
        if family is HF:
            out, reference = attend(layer, x), attend(layer.base_layer, u)
        else:
            copy_ = (
                u.clone()
            )  # the base module on bitwise-equal, separate key/value tensors (ASA's code path)
            out, reference = attend(layer, x, x, x), attend(layer.base_layer, u, copy_, copy_)
        assert torch.equal(out, reference)
        model.base_model.pvrap_frame_offset["default"].fill_(0.5)
        moved = attend(layer, x) if family is HF else attend(layer, x, x, x)
        assert not torch.allclose(moved, reference)


@FAMILIES
def test_frame_offsets_make_the_video_embedding_depend_on_frame_order(family):
    model = build(family)
    pixels, _ = family.inputs()
    order = torch.tensor([2, 0, 3, 1])
    permuted = pixels.view(VIDEOS, FRAMES, *pixels.shape[1:])[:, order].reshape_as(pixels)
    condition = torch.randn(VIDEOS, EMBED, generator=torch.Generator().manual_seed(5))

    def video(x):
        with torch.no_grad(), rap_condition(paired=condition):
            return family.encode_frames(model, x).view(VIDEOS, FRAMES, -1).mean(1)

    with torch.no_grad():  # spatial offsets only: every frame is still encoded on its own
        model.base_model.pvrap_patch_offset["default"].copy_(torch.linspace(-3, 3, PATCHES))
    torch.testing.assert_close(video(pixels), video(permuted), rtol=0, atol=1e-6)
    with torch.no_grad():
        model.base_model.pvrap_frame_offset["default"].copy_(torch.tensor([1.0, 1.5, -1.0, -2.0]))
    assert not torch.allclose(video(pixels), video(permuted), atol=1e-4)


# -- training ---------------------------------------------------------------------------------------------------------


@FAMILIES
def test_every_rap_parameter_gets_gradient_within_two_steps(family):
    model = build(family)
    model.train()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    kinds = ["scale_a", "scale_b", "shift_a", "shift_b", "text_scale", "text_shift", "proj", "patch_offset"]
    kinds.append("frame_offset")
    assert all(any(f"pvrap_{kind}" in n for n in trainable) for kind in kinds)
    assert all("pvrap_" in n for n in trainable)
    grads = train_steps(model, contrastive_loss(family), steps=2)
    silent = [n for n in trainable if not any(g.get(n) is not None and g[n].abs().sum() > 0 for g in grads)]
    assert silent == []


def test_hf_gradient_checkpointing_recomputes_rap():
    """RAP sits inside the checkpointed block, so recomputation in backward gives the same gradients."""
    grads, calls = [], []
    for checkpointing in (False, True):
        model = build(HF, text_modulation=False)
        randomize_adapter(model)
        model.train()
        if checkpointing:
            vision = model.base_model.model.vision_model
            getattr(vision, "activation_checkpointing_enable", vision.gradient_checkpointing_enable)()
        calls.append(0)
        rap_layers(model)[0].register_forward_pre_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        pixels = frames().requires_grad_(True)
        with rap_condition(paired=torch.randn(VIDEOS, EMBED, generator=torch.Generator().manual_seed(4))):
            HF.encode_frames(model, pixels).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert calls == [1, 2]  # the checkpointed run recomputed the RAP layer in backward
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_bf16_base_keeps_fp32_adapter_weights():
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip().to(torch.bfloat16), rap())
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    pixels, ids = HF.inputs()
    with torch.no_grad():
        text, video = encode_pair(HF, model, pixels.bfloat16(), ids)
    assert text.dtype == video.dtype == torch.bfloat16 and torch.isfinite(video).all()


@FAMILIES
def test_bf16_autocast_steps_with_asa_are_finite_match_float32_and_change_only_rap(family):
    model = build(family)
    loss_fn = contrastive_loss(family)
    with torch.no_grad():
        reference = loss_fn(model).item()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    for step in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(model)
        assert torch.isfinite(loss)
        if step == 0:
            assert abs(loss.item() - reference) < 2e-2 * max(1.0, abs(reference))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name
        assert (not torch.equal(before[name], p.detach())) == (name in trainable), name


def test_trainable_parameter_count_matches_the_formula():
    trainable, _ = build(HF).get_nb_trainable_parameters()
    dim, rank, vision_blocks, text_blocks = 32, 2, 2, 2
    lorm = vision_blocks * 2 * (FRAMES * rank + rank * dim)
    asa = dim * EMBED + PATCHES + FRAMES  # Proj (no bias), gamma, delta: shared by all layers
    text = text_blocks * 2 * dim
    assert trainable == lorm + asa + text


# -- peft behaviours --------------------------------------------------------------------------------------------------


def trained(family: Family, tmp_path=None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A RAP model after 3 training steps and a copy of its base (also saved under ``tmp_path``, if given)."""
    torch.manual_seed(0)
    base = family.build().eval()
    if tmp_path is not None and family is HF:
        base.save_pretrained(tmp_path / "hf")
    elif tmp_path is not None:
        torch.save(base.state_dict(), tmp_path / "open_clip_base.pt")
    base_copy = copy.deepcopy(base)
    model = get_peft_model(base, rap())
    train_steps(model, contrastive_loss(family), steps=3)
    return model.eval(), base_copy


def test_save_and_reload_in_a_fresh_process_gives_identical_outputs(tmp_path):
    for family in (HF, OPEN_CLIP):
        model, _ = trained(family, tmp_path)
        model.save_pretrained(tmp_path / f"{family.name}_adapter")
        with torch.no_grad():
            torch.save(
                torch.cat(encode_pair(family, model, *family.inputs())), tmp_path / f"{family.name}_out.pt"
            )
    saved = json.loads((tmp_path / "hf_adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "PEFT_VIDEO_RAP" and saved["peft_video_version"] == peft_video.__version__
    weights = load_file(tmp_path / "hf_adapter" / "adapter_model.safetensors")
    assert all("pvrap_" in k for k in weights)
    assert sum(k.startswith("base_model.pvrap_") for k in weights) == 3  # Proj, gamma, delta stored once

    out = run_fresh(f"""
        import torch, peft_video
        from peft import PeftModel
        from transformers import CLIPModel
        from tests.test_rap import HF, OPEN_CLIP, encode_pair
        from tests.tiny_models import tiny_open_clip
        root = r"{tmp_path}"
        open_clip_base = tiny_open_clip()
        open_clip_base.load_state_dict(torch.load(root + "/open_clip_base.pt"))
        bases = {{"hf": CLIPModel.from_pretrained(root + "/hf"), "open_clip": open_clip_base}}
        for family in (HF, OPEN_CLIP):
            model = PeftModel.from_pretrained(bases[family.name].eval(), root + f"/{{family.name}}_adapter").eval()
            with torch.no_grad():
                got = torch.cat(encode_pair(family, model, *family.inputs()))
            expected = torch.load(root + f"/{{family.name}}_out.pt")
            assert torch.equal(got, expected), (family.name, (got - expected).abs().max())
        print("identical")
    """)
    assert "identical" in out


@FAMILIES
def test_two_adapters_switch_disable_and_delete(family):
    model = build(family, init_weights=False)
    model.add_adapter("other", rap(init_weights=False, use_lorm=False, top_k=5, text_modulation=False))
    randomize_adapter(model, "default", seed=1)
    randomize_adapter(model, "other", seed=2)
    pixels, ids = family.inputs()

    def outputs():
        with torch.no_grad():
            return torch.cat(encode_pair(family, model, pixels, ids))

    first = outputs()
    with model.disable_adapter():
        base = outputs()
    model.set_adapter("other")
    other = outputs()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".other" in n for n in trainable)
    model.set_adapter("default")
    assert torch.equal(outputs(), first)
    assert (
        not torch.allclose(first, other)
        and not torch.allclose(first, base)
        and not torch.allclose(other, base)
    )
    assert sorted(get_model_status(model).available_adapters) == ["default", "other"]

    model.delete_adapter("other")
    assert all(".other" not in key for key in model.state_dict())
    assert "other" not in model.base_model.pvrap_proj and model.active_adapters == ["default"]
    assert torch.equal(outputs(), first)


def test_load_adapter_and_low_cpu_mem_usage_loading(tmp_path):
    model, base = trained(HF)
    model.save_pretrained(tmp_path / "adapter")
    pixels, ids = HF.inputs()
    with torch.no_grad():
        expected = torch.cat(encode_pair(HF, model, pixels, ids))
    reloaded = get_peft_model(copy.deepcopy(base), rap(init_weights=False))
    reloaded.load_adapter(tmp_path / "adapter", adapter_name="loaded")
    reloaded.set_adapter("loaded")
    with torch.no_grad():
        assert torch.equal(torch.cat(encode_pair(HF, reloaded, pixels, ids)), expected)
    # low_cpu_mem_usage: adapter (and shared ASA) weights are created on meta, then loaded
    lazy = PeftModel.from_pretrained(base, tmp_path / "adapter", low_cpu_mem_usage=True)
    with torch.no_grad():
        assert torch.equal(torch.cat(encode_pair(HF, lazy, pixels, ids)), expected)


def test_two_active_adapters_at_once_is_an_error():
    model = build(HF)
    model.add_adapter("other", rap())
    model.base_model.set_adapter(["default", "other"])
    with pytest.raises(ValueError, match="RAP applies one adapter at a time"):
        encode_pair(HF, model, *HF.inputs())


def test_modules_to_save_trains_and_saves_the_head(tmp_path):
    model = build(HF, modules_to_save=["visual_projection"])
    train_steps(model, contrastive_loss(HF), steps=2)
    model.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert any("visual_projection" in k for k in keys) and any("pvrap_" in k for k in keys)


@FAMILIES
def test_unload_restores_the_base_modules_and_merge_is_refused(family):
    base = family.build().eval()
    model = get_peft_model(copy.deepcopy(base), rap(init_weights=False))
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    unloaded = model.unload()
    assert not rap_layers(unloaded)
    pixels, ids = family.inputs()
    with torch.no_grad():
        assert torch.equal(family.encode_frames(unloaded, pixels), family.encode_frames(base, pixels))


def test_inject_adapter_in_model_is_refused_because_of_shared_state():
    with pytest.raises(ValueError, match="shared state"):
        inject_adapter_in_model(rap(), tiny_clip())


# -- conditioning and bad input ---------------------------------------------------------------------------------------


@FAMILIES
def test_forward_without_condition_is_an_error_unless_asa_is_off(family):
    pixels, _ = family.inputs()
    with pytest.raises(RuntimeError, match=r"outside `peft_video.rap_condition\(...\)`"):
        family.encode_frames(build(family), pixels)
    lorm_only = build(family, use_asa=False)
    assert len(lorm_only.base_model.pvrap_proj) == 0
    family.encode_frames(lorm_only, pixels)  # no condition needed


@FAMILIES
def test_bad_video_input_errors_name_the_argument(family):
    model = build(family)
    pixels, _ = family.inputs()
    with pytest.raises(ValueError, match="`num_frames`=4 does not divide the frame batch of size 7"):
        with rap_condition(paired=torch.randn(1, EMBED)):
            family.encode_frames(model, pixels[:7])
    with pytest.raises(ValueError, match="`paired` has 3 sentence embeddings but the batch holds 2 videos"):
        with rap_condition(paired=torch.randn(3, EMBED)):
            family.encode_frames(model, pixels)
    with pytest.raises(ValueError, match="`paired` has sentence embeddings of width 8"):
        with rap_condition(paired=torch.randn(VIDEOS, 8)):
            family.encode_frames(model, pixels)
    with pytest.raises(ValueError, match="`num_frames`=2 is in force"):
        with use_num_frames(2), rap_condition(paired=torch.randn(VIDEOS, EMBED)):
            family.encode_frames(model, pixels)


@FAMILIES
def test_candidates_condition_each_video_on_its_best_sentence(family):
    model = build(family)
    randomize_adapter(model)
    pixels, _ = family.inputs()
    sentence = torch.randn(1, EMBED)
    with torch.no_grad():
        with rap_condition(candidates=sentence):
            picked = family.encode_frames(model, pixels)
        with rap_condition(paired=sentence.expand(VIDEOS, -1)):
            paired = family.encode_frames(model, pixels)
        with rap_condition(candidates=torch.cat([sentence, torch.randn(5, EMBED)])):
            gallery = family.encode_frames(model, pixels)
    assert torch.equal(picked, paired)
    assert gallery.shape == paired.shape
