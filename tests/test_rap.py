"""RAP as a peft tuner on tiny HF CLIP and open_clip models: identities, gradients, peft behaviours, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from peft_video import RapConfig, rap_condition, retrieval_scores, use_num_frames
from peft_video.tuners.rap import RapLayer

FRAMES, VIDEOS, PATCHES = 4, 2, 16  # tiny towers: image 32, patch 8 -> 16 patches
REPO = Path(__file__).resolve().parents[1]


def tiny_hf_clip(vision_layers: int = 2) -> CLIPModel:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            vocab_size=100,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def tiny_open_clip(vision_layers: int = 2) -> open_clip.CLIP:
    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg={
            "width": 32,
            "layers": vision_layers,
            "head_width": 16,
            "image_size": 32,
            "patch_size": 8,
        },
        text_cfg={"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2},
    ).eval()


@dataclass(frozen=True)
class Family:
    """How to build and run one backbone family."""

    name: str
    build: Callable[..., torch.nn.Module]
    text_length: int
    vision_attention: str  # a vision block's attention module name, for block index {i}

    def encode_text(self, model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        if self.name == "hf":
            return model.get_text_features(input_ids=ids).pooler_output
        return model.encode_text(ids)

    def encode_frames(self, model: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
        if self.name == "hf":
            return model.get_image_features(pixel_values=frames).pooler_output
        return model.encode_image(frames)

    def inputs(self, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        frames = torch.randn(VIDEOS * FRAMES, 3, 32, 32, generator=generator)
        ids = torch.randint(3, 100, (VIDEOS, self.text_length), generator=generator)
        return frames, ids


HF = Family("hf", tiny_hf_clip, 8, "vision_model.encoder.layers.{i}.self_attn")
OPEN_CLIP = Family("open_clip", tiny_open_clip, 16, "visual.transformer.resblocks.{i}.attn")
FAMILIES = pytest.mark.parametrize("family", [HF, OPEN_CLIP], ids=lambda f: f.name)


def rap(**kwargs) -> RapConfig:
    return RapConfig(**{"num_frames": FRAMES, "rank": 2, "top_k": 3, **kwargs})


def encode_pair(family: Family, model, frames, ids, *, condition: str = "paired"):
    """(text embeds, mean-pooled video embeds) with the video conditioned on its own caption (or the candidates)."""
    text = family.encode_text(model, ids)
    with rap_condition(**{condition: text}):
        video = family.encode_frames(model, frames)
    return text, video.view(VIDEOS, FRAMES, -1).mean(1)


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
        get_peft_model(family.build(), rap(top_k=17))


@FAMILIES
def test_default_targets_cover_vision_and_text_blocks(family):
    model = get_peft_model(family.build(vision_layers=6), rap(blocks="light"))
    vision = sorted(k for k in model.base_model.targeted_module_names if k.startswith(("vision", "visual")))
    text = sorted(set(model.base_model.targeted_module_names) - set(vision))
    assert vision == [family.vision_attention.format(i=i) for i in (2, 3, 4, 5)]  # RAP_light: the last 4
    assert len(text) == 2 and all("text" in k or k.startswith("transformer.") for k in text)

    no_text = get_peft_model(family.build(), rap(blocks=[-1], text_modulation=False))
    assert no_text.base_model.targeted_module_names == [family.vision_attention.format(i=1)]


def test_vision_only_models_get_no_text_targets():
    vision_hf = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        )
    )
    model = get_peft_model(vision_hf, rap())
    assert sorted(model.base_model.targeted_module_names) == [
        f"encoder.layers.{i}.self_attn" for i in range(2)
    ]
    assert model.base_model.pvrap_proj["default"].weight.shape == (16, 32)
    visual = get_peft_model(tiny_open_clip().visual, rap())
    assert sorted(visual.base_model.targeted_module_names) == [
        f"transformer.resblocks.{i}.attn" for i in range(2)
    ]


def test_blocks_conflicting_with_explicit_targets_is_an_error():
    with pytest.raises(ValueError, match=r"`blocks`=\[0\] selects vision blocks \[0\]"):
        get_peft_model(
            tiny_hf_clip(), rap(blocks=[0], target_modules=r"vision_model\.encoder\.layers\.1\.self_attn")
        )


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="RAP supports frame-wise CLIP video encoders"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), rap(target_modules=["0"]))


# -- identities --------------------------------------------------------------------------------------------------------


@FAMILIES
def test_output_unchanged_at_init(family):
    model = get_peft_model(family.build(), rap())
    frames, ids = family.inputs()
    with torch.no_grad():
        text, video = encode_pair(family, model, frames, ids)
        with model.disable_adapter():
            base_text = family.encode_text(model, ids)
            base_video = family.encode_frames(model, frames).view(VIDEOS, FRAMES, -1).mean(1)
    assert torch.equal(text, base_text)
    if family is HF:
        assert torch.equal(video, base_video)
    else:
        # torch's fused MultiheadAttention inference path needs query is key is value, which ASA's separate keys and
        # values cannot be: the two paths agree to float rounding (bitwise in training mode, see the test below).
        torch.testing.assert_close(video, base_video, rtol=0, atol=1e-6)


@FAMILIES
def test_asa_with_zero_offsets_is_the_base_attention_exactly(family):
    """Random LoRM and Proj, zero gamma/delta: the wrapped attention equals the base attention on u = LoRM(x)."""
    model = get_peft_model(family.build(), rap())
    randomize_adapter(model)
    with torch.no_grad():
        model.base_model.pvrap_patch_offset["default"].zero_()
        model.base_model.pvrap_frame_offset["default"].zero_()
    layer = next(layer for layer in rap_layers(model) if layer.pvrap_tower == "video")
    layer.train()
    x = torch.randn(VIDEOS * FRAMES, PATCHES + 1, 32)
    condition = torch.randn(VIDEOS, 16)
    with torch.no_grad(), rap_condition(paired=condition):
        u = layer.modulate(x, "default", FRAMES)
        assert not torch.equal(u, x)
        if family is HF:
            out, reference = layer(x)[0], layer.base_layer(u)[0]
        else:
            copy = u.clone()  # same code path as ASA's separate key/value tensors
            out = layer(x, x, x, need_weights=False)[0]
            reference = layer.base_layer(u, copy, copy, need_weights=False)[0]
        assert torch.equal(out, reference)
        model.base_model.pvrap_frame_offset["default"].fill_(0.5)
        moved = layer(x)[0] if family is HF else layer(x, x, x, need_weights=False)[0]
        assert not torch.allclose(moved, reference)


@FAMILIES
def test_frame_offsets_make_the_video_embedding_depend_on_frame_order(family):
    model = get_peft_model(family.build(), rap())
    frames, ids = family.inputs()
    order = torch.tensor([2, 0, 3, 1])
    permuted = frames.view(VIDEOS, FRAMES, 3, 32, 32)[:, order].reshape_as(frames)
    condition = torch.randn(VIDEOS, 16, generator=torch.Generator().manual_seed(5))

    def video(pixels):
        with torch.no_grad(), rap_condition(paired=condition):
            return family.encode_frames(model, pixels).view(VIDEOS, FRAMES, -1).mean(1)

    with torch.no_grad():  # spatial offsets only: every frame is still encoded on its own
        model.base_model.pvrap_patch_offset["default"].copy_(torch.linspace(-3, 3, PATCHES))
    torch.testing.assert_close(video(frames), video(permuted), rtol=0, atol=1e-6)
    with torch.no_grad():
        model.base_model.pvrap_frame_offset["default"].copy_(torch.tensor([1.0, 1.5, -1.0, -2.0]))
    assert not torch.allclose(video(frames), video(permuted), atol=1e-4)


# -- training ---------------------------------------------------------------------------------------------------------


@FAMILIES
def test_every_rap_parameter_gets_gradient_within_two_steps(family):
    model = get_peft_model(family.build(), rap())
    model.train()
    frames, ids = family.inputs()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    kinds = {
        "scale_a",
        "scale_b",
        "shift_a",
        "shift_b",
        "text_scale",
        "text_shift",
        "proj",
        "patch_offset",
        "frame_offset",
    }
    assert {k for k in kinds if any(f"pvrap_{k}" in n for n in trainable)} == kinds
    optimizer = torch.optim.Adam(trainable.values(), lr=1e-2)
    got_gradient = dict.fromkeys(trainable, False)
    for _ in range(2):
        optimizer.zero_grad()
        text, video = encode_pair(family, model, frames, ids)
        logits = 10 * F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T
        labels = torch.arange(VIDEOS)
        loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
        loss.backward()
        for name, parameter in trainable.items():
            got_gradient[name] |= parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        optimizer.step()
    assert [name for name, ok in got_gradient.items() if not ok] == []


def test_hf_gradient_checkpointing_recomputes_rap():
    """RAP sits inside the checkpointed block, so recomputation in backward gives the same gradients."""
    grads, calls = [], []
    for checkpointing in (False, True):
        model = get_peft_model(tiny_hf_clip(), rap(text_modulation=False))
        randomize_adapter(model)
        model.train()
        if checkpointing:
            vision = model.base_model.model.vision_model
            getattr(vision, "activation_checkpointing_enable", vision.gradient_checkpointing_enable)()
        count = [0]
        rap_layers(model)[0].register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        frames, _ = HF.inputs()
        with rap_condition(paired=torch.randn(VIDEOS, 16, generator=torch.Generator().manual_seed(4))):
            HF.encode_frames(model, frames.requires_grad_(True)).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        calls.append(count[0])
    assert calls == [1, 2]  # the checkpointed run recomputed the RAP layer in backward
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_bf16_base_keeps_fp32_adapter_weights():
    model = get_peft_model(tiny_hf_clip().to(torch.bfloat16), rap())
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}
    frames, ids = HF.inputs()
    with torch.no_grad():
        text, video = encode_pair(HF, model, frames.bfloat16(), ids)
    assert text.dtype == video.dtype == torch.bfloat16 and torch.isfinite(video).all()


# -- peft behaviours --------------------------------------------------------------------------------------------------


def test_trainable_parameter_count_matches_the_formula():
    model = get_peft_model(tiny_hf_clip(), rap())
    trainable, _ = model.get_nb_trainable_parameters()
    dim, rank, embed, vision_blocks, text_blocks = 32, 2, 16, 2, 2
    lorm = vision_blocks * 2 * (FRAMES * rank + rank * dim)
    asa = dim * embed + PATCHES + FRAMES
    text = text_blocks * 2 * dim
    assert trainable == lorm + asa + text


def test_save_and_reload_in_a_fresh_process_gives_identical_outputs(tmp_path):
    frames, ids = HF.inputs()
    expected = {}
    for family in (HF, OPEN_CLIP):
        base = family.build()
        if family is HF:
            base.save_pretrained(tmp_path / "hf_base")
        else:
            torch.save(base.state_dict(), tmp_path / "open_clip_base.pt")
        model = get_peft_model(base, rap(init_weights=False))
        randomize_adapter(model)
        model.save_pretrained(tmp_path / f"{family.name}_adapter")
        family_frames, family_ids = family.inputs()
        with torch.no_grad():
            expected[family.name] = torch.cat(encode_pair(family, model, family_frames, family_ids))
            with model.disable_adapter():
                assert not torch.allclose(
                    expected[family.name], torch.cat(encode_pair(family, model, family_frames, family_ids))
                )
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        import peft_video  # registers RAP with peft
        from peft import PeftModel
        from transformers import CLIPModel
        from test_rap import HF, OPEN_CLIP, encode_pair, tiny_open_clip
        root = {str(tmp_path)!r}
        expected = torch.load(root + "/expected.pt")
        hf = PeftModel.from_pretrained(CLIPModel.from_pretrained(root + "/hf_base").eval(), root + "/hf_adapter")
        base = tiny_open_clip(); base.load_state_dict(torch.load(root + "/open_clip_base.pt"))
        oc = PeftModel.from_pretrained(base, root + "/open_clip_adapter")
        for family, model in ((HF, hf), (OPEN_CLIP, oc)):
            frames, ids = family.inputs()
            with torch.no_grad():
                got = torch.cat(encode_pair(family, model, frames, ids))
            assert torch.equal(got, expected[family.name]), family.name
        print("RELOAD-OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert "RELOAD-OK" in result.stdout, result.stderr[-3000:]


@FAMILIES
def test_multiple_adapters_switch_disable_and_delete(family):
    model = get_peft_model(family.build(), rap(init_weights=False))
    model.add_adapter("other", rap(init_weights=False, use_lorm=False, top_k=5, text_modulation=False))
    randomize_adapter(model, "default", seed=1)
    randomize_adapter(model, "other", seed=2)
    frames, ids = family.inputs()

    def outputs():
        with torch.no_grad():
            return torch.cat(encode_pair(family, model, frames, ids))

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

    model.delete_adapter("other")
    assert all(".other" not in key for key in model.state_dict())
    assert "other" not in model.base_model.pvrap_proj and model.active_adapters == ["default"]
    assert torch.equal(outputs(), first)
    model.delete_adapter("default")
    assert not any("pvrap_" in key for key in model.state_dict() if "base_layer" not in key)


def test_two_active_adapters_at_once_is_an_error():
    model = get_peft_model(tiny_hf_clip(), rap())
    model.add_adapter("other", rap())
    model.base_model.set_adapter(["default", "other"])
    frames, ids = HF.inputs()
    with pytest.raises(ValueError, match="RAP applies one adapter at a time"):
        encode_pair(HF, model, frames, ids)


# -- conditioning and bad input ---------------------------------------------------------------------------------------


@FAMILIES
def test_forward_without_condition_is_an_error_unless_asa_is_off(family):
    frames, ids = family.inputs()
    model = get_peft_model(family.build(), rap())
    with pytest.raises(RuntimeError, match=r"outside `peft_video.rap_condition\(...\)`"):
        family.encode_frames(model, frames)
    lorm_only = get_peft_model(family.build(), rap(use_asa=False))
    assert len(lorm_only.base_model.pvrap_proj) == 0
    family.encode_frames(lorm_only, frames)  # no condition needed


@FAMILIES
def test_bad_video_input_errors_name_the_argument(family):
    model = get_peft_model(family.build(), rap())
    frames, ids = family.inputs()
    condition = torch.randn(VIDEOS, 16)
    with pytest.raises(ValueError, match="`num_frames`=4 does not divide the frame batch of size 7"):
        with rap_condition(paired=torch.randn(1, 16)):
            family.encode_frames(model, frames[:7])
    with pytest.raises(ValueError, match="`paired` has 3 sentence embeddings but the batch holds 2 videos"):
        with rap_condition(paired=torch.randn(3, 16)):
            family.encode_frames(model, frames)
    with pytest.raises(ValueError, match="`paired` has sentence embeddings of width 8"):
        with rap_condition(paired=torch.randn(VIDEOS, 8)):
            family.encode_frames(model, frames)
    with pytest.raises(ValueError, match="`num_frames`=2 is in force"):
        with use_num_frames(2), rap_condition(paired=condition):
            family.encode_frames(model, frames)


@FAMILIES
def test_candidates_condition_each_video_on_its_best_sentence(family):
    model = get_peft_model(family.build(), rap())
    randomize_adapter(model)
    frames, ids = family.inputs()
    sentence = torch.randn(1, 16)
    with torch.no_grad():
        with rap_condition(candidates=sentence):
            picked = family.encode_frames(model, frames)
        with rap_condition(paired=sentence.expand(VIDEOS, -1)):
            paired = family.encode_frames(model, frames)
        with rap_condition(candidates=torch.cat([sentence, torch.randn(5, 16)])):
            gallery = family.encode_frames(model, frames)
    assert torch.equal(picked, paired)
    assert gallery.shape == paired.shape


def test_retrieval_scores_and_dual_softmax_against_a_float64_reference():
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    frame_embeds = torch.randn(3 * FRAMES, 8, generator=generator, dtype=torch.float64)
    video = frame_embeds.view(3, FRAMES, 8).mean(1)
    cosine = torch.tensor(
        [[float(t @ v / (t.norm() * v.norm())) for v in video] for t in text], dtype=torch.float64
    )
    torch.testing.assert_close(retrieval_scores(text, frame_embeds, num_frames=FRAMES), cosine)
    prior = torch.exp(cosine / 0.05) / torch.exp(cosine / 0.05).sum(dim=0, keepdim=True)  # over the queries
    torch.testing.assert_close(
        retrieval_scores(text, video, dual_softmax=True, temperature=0.05), cosine * prior
    )
    with pytest.raises(ValueError, match="`candidate_embeds` have width 7"):
        retrieval_scores(text, torch.randn(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="`temperature` must be positive"):
        retrieval_scores(text, video, temperature=0.0)
