"""TokenMix: mixing math against a float64 reference, peft behaviours on tiny HF CLIP / BLIP / ViT and open_clip."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn

import peft_video
from peft_video import TokenMixConfig, use_num_frames
from peft_video.tuners.token_mix import (
    TokenMixingAttention,
    TokenMixLayer,
    apply_token_mixing,
    token_mixing_attention,
)
from peft_video.tuners.token_mix.mixing import mixed_key_index

from .helpers import run_fresh
from .tiny_models import frames as tiny_frames
from .tiny_models import tiny_blip_vision, tiny_clip, tiny_clip_vision, tiny_open_clip, tiny_vit

T = 3  # frames per video in the model tests (never the paper's 8: nothing may assume it)


# --------------------------------------------------------------------------- tiny models

FACTORIES = {
    "clip": tiny_clip,
    "clip_vision": tiny_clip_vision,
    "blip_vision": tiny_blip_vision,
    "vit": tiny_vit,
    "open_clip": tiny_open_clip,
}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FACTORIES[name]().eval()


def encode(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Per-frame token features of a (peft-wrapped or plain) model for (B*T, 3, 32, 32) frames."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    if hasattr(model, "encode_image"):  # open_clip: per-frame embeddings
        return model.encode_image(frames)
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):
        return model.vision_model(pixel_values=frames).last_hidden_state
    return model(pixel_values=frames).last_hidden_state


def video(videos: int = 2, num_frames: int = T, seed: int = 1) -> torch.Tensor:
    return tiny_frames(seed, videos=videos, num_frames=num_frames)


def perturb_adapter(model: nn.Module, scale: float = 0.05) -> None:
    """Move every trainable copy away from the base weights, as training would."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "pvtmix_copy" in name and param.requires_grad:
                param.add_(scale * torch.randn_like(param))


# --------------------------------------------------------------------------- mixing math


def reference_mixing(q, k, v, num_frames, strategy, scale, weight, prefix):
    """Eq. 8 written from its definition, one query at a time (float64)."""
    frames, heads, tokens, _ = q.shape
    if strategy == "uniform":
        keys = [(s % num_frames, s) for s in range(tokens)]
    else:
        keys = [(t, p) for t in range(num_frames) for p in range(prefix)]
        keys += [((s - prefix) % num_frames, s) for s in range(prefix, tokens)]
    out = torch.zeros_like(q)
    for b in range(frames // num_frames):
        for t in range(num_frames):
            for h in range(heads):
                for s in range(tokens):
                    query = q[b * num_frames + t, h, s]
                    logits = torch.stack(
                        [
                            scale * query @ k[b * num_frames + tk, h, sk]
                            + (math.log(weight) if tk != t and sk >= prefix else 0.0)
                            for tk, sk in keys
                        ]
                    )
                    probs = logits.softmax(0)
                    out[b * num_frames + t, h, s] = sum(
                        p * v[b * num_frames + tk, h, sk] for p, (tk, sk) in zip(probs, keys, strict=True)
                    )
    return out


@settings(max_examples=25, deadline=None)
@given(
    num_frames=st.integers(1, 4),
    videos=st.integers(1, 2),
    tokens=st.integers(2, 9),
    prefix=st.integers(0, 2),
    heads=st.integers(1, 2),
    strategy=st.sampled_from(["uniform_cls", "uniform"]),
    weight=st.sampled_from([1.0, 0.5, 3.0]),
    seed=st.integers(0, 2**16),
)
def test_mixing_matches_float64_reference(num_frames, videos, tokens, prefix, heads, strategy, weight, seed):
    prefix = min(prefix, tokens)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(videos * num_frames, heads, tokens, 4, generator=gen, dtype=torch.float64)
        for _ in range(3)
    )
    got = token_mixing_attention(
        q, k, v, num_frames, strategy=strategy, scale=0.5, cross_frame_weight=weight, num_prefix_tokens=prefix
    )
    want = reference_mixing(q, k, v, num_frames, strategy, 0.5, weight, prefix)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_key_sets_follow_public_code_and_paper_text():
    frames, positions = mixed_key_index("uniform_cls", 3, 8, 1)  # CLS + 7 patches, T = 3
    assert frames.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert positions.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    frames, positions = mixed_key_index("uniform", 3, 8, 1)  # |K| = S, position s from frame s mod T
    assert frames.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert positions.tolist() == list(range(8))


@pytest.mark.parametrize("strategy", ["uniform_cls", "uniform"])
def test_one_frame_is_plain_self_attention(strategy):
    q, k, v = torch.randn(3, 4, 2, 7, 8, dtype=torch.float64).unbind(0)
    got = token_mixing_attention(q, k, v, 1, strategy=strategy, scale=8**-0.5)
    torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_mixing_is_order_aware():
    q, k, v = torch.randn(3, 4, 2, 7, 8, dtype=torch.float64).unbind(0)  # one video of T = 4 frames
    perm = torch.tensor([2, 0, 3, 1])
    mixed = token_mixing_attention(q, k, v, 4)
    permuted = token_mixing_attention(q[perm], k[perm], v[perm], 4)
    assert not torch.allclose(permuted, mixed[perm])


# --------------------------------------------------------------------------- peft behaviours on every architecture


@pytest.mark.parametrize("arch", list(FACTORIES))
def test_identities_mixing_and_order(arch):
    base = build(arch)
    frames = video()
    with torch.no_grad():
        reference = encode(base, frames)
        perm = torch.tensor([2, 0, 1, 5, 3, 4])  # permute frames inside each video of T = 3
        torch.testing.assert_close(
            encode(base, frames[perm]), reference[perm]
        )  # frame-wise base: order-blind

        model = get_peft_model(base, TokenMixConfig(num_frames=T))
        mixed = encode(model, frames)
        assert not torch.allclose(mixed, reference, atol=1e-4)  # the last block mixes frames
        assert not torch.allclose(encode(model, frames[perm]), mixed[perm], atol=1e-4)  # and is order-aware
        with use_num_frames(1):  # T = 1: exactly the base model
            assert torch.equal(encode(model, frames), reference)
        with model.disable_adapter():
            assert torch.equal(encode(model, frames), reference)

        perturb_adapter(model)
        tuned = encode(model, frames)
        merged = model.merge_and_unload()
        assert not any(isinstance(m, TokenMixLayer) for m in merged.modules())
        assert sum(isinstance(m, TokenMixingAttention) for m in merged.modules()) == 1
        torch.testing.assert_close(encode(merged, frames), tuned, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["clip_vision", "open_clip"])
def test_strategy_none_is_partial_finetuning_without_mixing(arch):
    base = build(arch)
    frames = video()
    with torch.no_grad():
        reference = encode(base, frames)
        model = get_peft_model(base, TokenMixConfig(num_frames=T, strategy="none"))
        assert torch.equal(encode(model, frames), reference)
        perm = torch.tensor([1, 2, 0, 4, 5, 3])
        perturb_adapter(model)
        tuned = encode(model, frames)
        torch.testing.assert_close(encode(model, frames[perm]), tuned[perm])  # no cross-frame interaction


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("finetune", "parts"),
    [
        ("block", ["self_attn", "layer_norm1", "layer_norm2", "mlp"]),
        ("attention", ["self_attn", "layer_norm1"]),
        ("ffn", ["layer_norm2", "mlp"]),
        ("none", []),
    ],
)
def test_only_chosen_parts_train(finetune, parts):
    base = build("clip_vision")
    block = base.encoder.layers[0]
    expected = sum(_param_count(getattr(block, p)) for p in parts)
    model = get_peft_model(base, TokenMixConfig(num_frames=T, blocks=[0], finetune=finetune))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == expected
    assert all(".layers.0." in n and ".pvtmix_copy.default." in n for n in trainable)

    frames = video()
    if finetune == "none":
        assert not trainable
        return
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(trainable.values(), lr=0.1)
    encode(model, frames).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(trainable)


def test_vit_b16_block_sizes_match_table_4(tmp_path):
    from transformers import BlipVisionConfig, BlipVisionModel

    torch.manual_seed(0)  # BLIP ViT-B/16 width; one block and a tiny image keep it fast
    config = BlipVisionConfig(num_hidden_layers=1, image_size=32, patch_size=16)
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (768, 3072, 12)
    sizes = {}
    for finetune in ("block", "attention", "ffn"):
        model = get_peft_model(BlipVisionModel(config), TokenMixConfig(num_frames=2, finetune=finetune))
        model.save_pretrained(tmp_path / finetune)
        saved = load_file(tmp_path / finetune / "adapter_model.safetensors")
        assert all(".pvtmix_copy." in key for key in saved)
        sizes[finetune] = sum(t.numel() for t in saved.values())
        assert sizes[finetune] == model.get_nb_trainable_parameters()[0]
    assert sizes == {"block": 7_087_872, "attention": 2_363_904, "ffn": 4_723_968}


def test_saved_keys_and_reload_in_fresh_process(tmp_path):
    base = build("clip_vision")
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(base, TokenMixConfig(num_frames=T, blocks=[0, -1], finetune="ffn"))
    perturb_adapter(model)
    model.save_pretrained(tmp_path / "adapter")
    frames = video()
    torch.save(frames, tmp_path / "frames.pt")
    with torch.no_grad():
        expected = encode(model, frames)

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    expected_keys = {
        f"base_model.model.encoder.layers.{i}.{part}.pvtmix_copy.{param}"
        for i in (0, 1)
        for part, param in [
            ("mlp", "fc1.weight"),
            ("mlp", "fc1.bias"),
            ("mlp", "fc2.weight"),
            ("mlp", "fc2.bias"),
            ("layer_norm2", "weight"),
            ("layer_norm2", "bias"),
        ]
    }
    assert set(saved) == expected_keys

    out = run_fresh(f"""
        import torch, peft_video
        from peft import PeftModel
        from transformers import CLIPVisionModel
        base = CLIPVisionModel.from_pretrained(r"{tmp_path / "base"}").eval()
        model = PeftModel.from_pretrained(base, r"{tmp_path / "adapter"}")
        frames = torch.load(r"{tmp_path / "frames.pt"}")
        with torch.no_grad():
            torch.save(model(pixel_values=frames).last_hidden_state, r"{tmp_path / "out.pt"}")
        print(type(model.peft_config["default"]).__name__)
    """)
    assert out.strip() == "TokenMixConfig"
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_load_under_another_adapter_name(tmp_path):
    model = get_peft_model(build("open_clip"), TokenMixConfig(num_frames=T))
    perturb_adapter(model)
    model.save_pretrained(tmp_path)
    frames = video()
    with torch.no_grad():
        expected = encode(model, frames)
        other = PeftModel.from_pretrained(build("open_clip"), tmp_path, adapter_name="other")
        assert torch.equal(encode(other, frames), expected)


def test_multiple_adapters_set_and_delete():
    frames = video()
    config_a = TokenMixConfig(num_frames=T)  # last block, whole block
    config_b = TokenMixConfig(
        num_frames=T, blocks=[0, 1], finetune="ffn", strategy="uniform", cross_frame_weight=0.5
    )
    with torch.no_grad():
        alone = {}
        for name, config in (("a", config_a), ("b", config_b)):
            single = get_peft_model(build("blip_vision"), config, adapter_name=name)
            torch.manual_seed(5)
            perturb_adapter(single)
            alone[name] = encode(single, frames)

        model = get_peft_model(build("blip_vision"), config_a, adapter_name="a")
        torch.manual_seed(5)
        perturb_adapter(model)
        model.add_adapter("b", config_b)
        model.set_adapter("b")
        torch.manual_seed(5)
        perturb_adapter(model)
        assert torch.equal(encode(model, frames), alone["b"])
        model.set_adapter("a")
        assert torch.equal(encode(model, frames), alone["a"])
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            n for n, _ in model.named_parameters() if ".pvtmix_copy.a." in n
        }

        model.base_model.set_adapter(["a", "b"])  # both answer in block 1's attention: refused
        with pytest.raises(ValueError, match="one adapter per module"):
            encode(model, frames)

        model.set_adapter("b")
        model.delete_adapter("a")
        assert not any(".a." in n for n, _ in model.named_parameters())
        assert torch.equal(encode(model, frames), alone["b"])


def test_merge_adapter_unmerge_and_unload():
    base = build("clip")
    frames = video()
    with torch.no_grad():
        reference = encode(base, frames)
        model = get_peft_model(base, TokenMixConfig(num_frames=T, blocks=[0, 1], finetune="attention"))
        perturb_adapter(model)
        tuned = encode(model, frames)
        model.merge_adapter()
        assert torch.equal(encode(model, frames), tuned)
        with model.disable_adapter():  # disabling a merged adapter unmerges it, as peft's LoRA does
            assert torch.equal(encode(model, frames), reference)
        model.merge_adapter()
        model.unmerge_adapter()
        assert torch.equal(encode(model, frames), tuned)
        unloaded = model.unload()
        assert not any(isinstance(m, (TokenMixLayer, TokenMixingAttention)) for m in unloaded.modules())
        assert torch.equal(encode(unloaded, frames), reference)


def test_merged_state_dict_is_the_plain_architectures():
    frames = video()
    model = get_peft_model(build("vit"), TokenMixConfig(num_frames=T, blocks=[0]))
    perturb_adapter(model)
    with torch.no_grad():
        tuned = encode(model, frames)
        merged = model.merge_and_unload()
        plain = build("vit", seed=1)
        assert plain.state_dict().keys() == merged.state_dict().keys()
        plain.load_state_dict(merged.state_dict(), strict=True)
        assert not torch.allclose(encode(plain, frames), tuned, atol=1e-4)  # weights alone: no mixing
        apply_token_mixing(plain, num_frames=T, blocks=[0])
        assert torch.equal(encode(plain, frames), tuned)


def test_bf16_base_copies_upcast_and_merge_back():
    base = build("clip_vision").to(torch.bfloat16)
    frames = video().to(torch.bfloat16)
    model = get_peft_model(base, TokenMixConfig(num_frames=T))
    copies = [p for n, p in model.named_parameters() if "pvtmix_copy" in n]
    assert copies and all(p.dtype == torch.float32 for p in copies)  # peft's adapter autocast
    out = encode(model, frames)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in copies)
    with torch.no_grad():
        merged = model.merge_and_unload()
        assert all(p.dtype == torch.bfloat16 for p in merged.parameters())
        torch.testing.assert_close(encode(merged, frames), out.detach(), rtol=0.05, atol=0.05)

    kept = get_peft_model(
        build("clip_vision").to(torch.bfloat16), TokenMixConfig(num_frames=T), autocast_adapter_dtype=False
    )
    assert all(p.dtype == torch.bfloat16 for n, p in kept.named_parameters() if "pvtmix_copy" in n)


def test_hidden_states_output_still_reports_every_block():
    base = build("clip_vision")
    frames = video()
    with torch.no_grad():
        plain = base(pixel_values=frames, output_hidden_states=True).hidden_states
        model = get_peft_model(base, TokenMixConfig(num_frames=T))
        mixed = model(pixel_values=frames, output_hidden_states=True).hidden_states
    assert len(mixed) == len(plain)
    assert torch.equal(mixed[-2], plain[-2]) and not torch.allclose(mixed[-1], plain[-1], atol=1e-4)


# --------------------------------------------------------------------------- bad input


def test_frame_batch_not_divisible_by_num_frames():
    model = get_peft_model(build("clip_vision"), TokenMixConfig(num_frames=4))
    with pytest.raises(ValueError, match="`num_frames`=4 does not divide the frame batch of size 6"):
        encode(model, video())


def test_num_frames_missing_at_run_time():
    model = get_peft_model(build("open_clip"), TokenMixConfig())
    with pytest.raises(ValueError, match="`num_frames` is not set"):
        encode(model, video())
    with use_num_frames(2), torch.no_grad():
        assert encode(model, video(3, 2)).shape == (6, 16)


@pytest.mark.parametrize(
    ("blocks", "match"), [([2], "entry 2 is out of range"), ([-3], "entry -3"), ([1, -1], "same block")]
)
def test_bad_block_indices(blocks, match):
    with pytest.raises(ValueError, match=match):
        get_peft_model(build("clip_vision"), TokenMixConfig(num_frames=T, blocks=blocks))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "random"}, "`strategy` must be one of"),
        ({"finetune": "bias"}, "`finetune` must be one of"),
        ({"cross_frame_weight": 0.0}, "`cross_frame_weight` must be a finite number > 0"),
        ({"num_frames": 0}, "`num_frames` must be a positive integer"),
        ({"blocks": []}, "`blocks` must be a non-empty list"),
        ({"blocks": [1.5]}, "`blocks` must be a non-empty list"),
        ({"num_prefix_tokens": -1}, "`num_prefix_tokens` must be a non-negative integer"),
        ({"strategy": "none", "finetune": "none"}, "adapts nothing"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenMixConfig(**kwargs)


def test_unknown_architecture_needs_block_list():
    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = tiny_clip_vision().encoder.layers

        def forward(self, x):
            for block in self.blocks:
                x = block(x, None)
            return x

    with pytest.raises(ValueError, match="pass `block_list`"):
        get_peft_model(Tower(), TokenMixConfig(num_frames=T))
    model = get_peft_model(Tower(), TokenMixConfig(num_frames=T, block_list="blocks"))
    tokens = torch.randn(2 * T, 5, 32)
    assert model(tokens).shape == tokens.shape


def test_blocks_found_inside_a_task_wrapper():
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build("open_clip")
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.backbone.encode_image(x))

    model = get_peft_model(Classifier(), TokenMixConfig(num_frames=T, modules_to_save=["head"]))
    assert sorted(model.peft_config["default"].target_modules) == [
        f"backbone.visual.transformer.resblocks.1.{part}" for part in ("attn", "ln_1", "ln_2", "mlp")
    ]
    assert model(video()).shape == (2 * T, 3)


def test_registered_with_peft():
    from peft.mapping import (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PEFT_TYPE_TO_PREFIX_MAPPING,
        PEFT_TYPE_TO_TUNER_MAPPING,
    )
    from peft.utils import PeftType

    peft_type = PeftType("PEFT_VIDEO_TOKEN_MIX")
    assert TokenMixConfig().peft_type is peft_type
    assert PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] is peft_video.TokenMixConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[peft_type] is peft_video.TokenMixModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] == "pvtmix_"
