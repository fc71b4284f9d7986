"""Where each supported architecture keeps its towers and blocks, block anatomies, and block-index resolution."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from torch import nn

from peft_video.architectures import (
    BLOCK_ANATOMIES,
    TEXT,
    VISION,
    block_anatomy,
    block_regex,
    find_block_list,
    linear_members,
    resolve_blocks,
    text_blocks_path,
    tower_block_lists,
    validate_blocks,
    vision_blocks_path,
)

from .tiny_models import tiny_bart, tiny_blip_vision, tiny_clip, tiny_clip_vision, tiny_open_clip, tiny_vit


def tiny_clip_vision_with_projection() -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return CLIPVisionModelWithProjection(config)


def tiny_clip_text() -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    )


class Wrapper(nn.Module):
    """A task model holding its backbone as ``backbone`` (and a head of its own)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)


# (builder, {tower: expected path}) for every architecture with a known layout
LAYOUTS = {
    "clip": (tiny_clip, {VISION: "vision_model.encoder.layers", TEXT: "text_model.encoder.layers"}),
    "clip_vision": (tiny_clip_vision, {VISION: "encoder.layers"}),
    "clip_vision_projection": (tiny_clip_vision_with_projection, {VISION: "vision_model.encoder.layers"}),
    "clip_text": (tiny_clip_text, {TEXT: "encoder.layers"}),
    "blip_vision": (tiny_blip_vision, {VISION: "encoder.layers"}),
    "vit": (tiny_vit, {VISION: "layers"}),
    "open_clip": (tiny_open_clip, {VISION: "visual.transformer.resblocks", TEXT: "transformer.resblocks"}),
    "open_clip_visual": (lambda: tiny_open_clip().visual, {VISION: "transformer.resblocks"}),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "in-wrapper"])
def test_towers_are_found_where_each_architecture_keeps_them(name, wrapped):
    build, expected = LAYOUTS[name]
    model = Wrapper(build()) if wrapped else build()
    prefix = "backbone." if wrapped else ""
    towers = tower_block_lists(model)
    assert {tower: found.path for tower, found in towers.items()} == {
        t: prefix + p for t, p in expected.items()
    }
    for tower, found in towers.items():
        assert found.blocks is model.get_submodule(found.path) and found.depth == 2
        assert find_block_list(model, tower).path == found.path
    if VISION in expected:
        assert vision_blocks_path(model) == prefix + expected[VISION]
    if TEXT in expected:
        assert text_blocks_path(model) == prefix + expected[TEXT]
    else:
        with pytest.raises(ValueError, match="text blocks"):
            text_blocks_path(model)


def test_towers_are_found_under_peft_and_peft_wrappers_do_not_hide_blocks():
    model = get_peft_model(Wrapper(tiny_clip()), LoraConfig(r=2, target_modules=["q_proj"]))
    assert vision_blocks_path(model) == "base_model.model.backbone.vision_model.encoder.layers"
    anatomy = find_block_list(model).anatomy
    assert anatomy.attention == "self_attn"  # the LoRA-wrapped q_proj inside does not change the layout
    assert linear_members(find_block_list(model).blocks[0])[:4] == tuple(
        f"self_attn.{p}_proj" for p in ("k", "v", "q", "out")
    )


def test_unknown_layouts_and_ambiguous_paths_are_clear_errors():
    assert tower_block_lists(tiny_bart()) == {}
    with pytest.raises(
        ValueError,
        match=r"does not know where the vision blocks of BartModel \(architecture 'bart'\).*; my hint",
    ):
        find_block_list(tiny_bart(), hint="my hint")
    two = nn.ModuleDict({"a": tiny_clip_vision(), "b": tiny_clip_vision()})
    with pytest.raises(
        ValueError, match=r"matches several ModuleLists \['a.encoder.layers', 'b.encoder.layers'\]"
    ):
        find_block_list(two)
    assert (
        find_block_list(two, block_list="b.encoder.layers").path == "b.encoder.layers"
    )  # by hand: unambiguous
    with pytest.raises(ValueError, match="no non-empty ModuleList of vision blocks at \\['nowhere'\\]"):
        find_block_list(tiny_clip(), block_list="nowhere")
    with pytest.raises(ValueError, match="`tower` must be one of"):
        find_block_list(tiny_clip(), "audio")


@pytest.mark.parametrize("name", LAYOUTS)
def test_block_regex_matches_exactly_the_tower_blocks_and_members(name):
    build, expected = LAYOUTS[name]
    model = Wrapper(build())
    keys = [key for key, _ in model.named_modules()]
    for tower, path in expected.items():
        whole = block_regex(model, tower)
        assert [k for k in keys if re.fullmatch(whole, k)] == [f"backbone.{path}.{i}" for i in range(2)]
        last = block_regex(model, tower, blocks=[-1], members="mlp")
        assert [k for k in keys if re.fullmatch(last, k)] == [f"backbone.{path}.1.mlp"]
        first = block_regex(model, tower, blocks="light", members=["mlp", "nothing.here"])
        assert [k for k in keys if re.fullmatch(first, k)] == [f"backbone.{path}.{i}.mlp" for i in range(2)]


def test_open_clip_text_regex_never_matches_the_vision_tower():
    model = tiny_open_clip()
    keys = [key for key, _ in model.named_modules()]
    text = [k for k in keys if re.fullmatch(block_regex(model, TEXT, members="attn"), k)]
    assert text == ["transformer.resblocks.0.attn", "transformer.resblocks.1.attn"]


@pytest.mark.parametrize(
    ("name", "attention", "ffn", "linears"),
    [
        (
            "clip",
            "self_attn",
            "mlp",
            ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj"),
        ),
        ("blip_vision", "self_attn", "mlp", ("self_attn.qkv", "self_attn.projection")),
        (
            "vit",
            "attention",
            "mlp",
            ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
        ),
        ("open_clip", "attn", "mlp", ("attn",)),
    ],
)
def test_block_anatomy_and_linear_members(name, attention, ffn, linears):
    model = LAYOUTS[name][0]()
    block = find_block_list(model).blocks[0]
    anatomy = block_anatomy(block)
    assert (anatomy.attention, anatomy.ffn) == (attention, ffn)
    members = linear_members(block)
    ffn_linears = ("mlp.c_fc", "mlp.c_proj") if name == "open_clip" else ("mlp.fc1", "mlp.fc2")
    assert members == linears + ffn_linears
    for member in members:
        assert isinstance(block.get_submodule(member), (nn.Linear, nn.MultiheadAttention))
    # the parts partition the block's parameters (TokenMix's fine-tuning parts rely on it)
    parts = (anatomy.attention, *anatomy.attention_parts, *anatomy.ffn_parts)
    covered = sum(
        p.numel() for part in parts if hasattr(block, part) for p in getattr(block, part).parameters()
    )
    assert covered == sum(p.numel() for p in block.parameters())


def test_transformers_4_vit_layout_is_recognised():
    """transformers 4.x ViT blocks: attention, layernorm_before/after, intermediate and output (with .dense)."""

    class Output(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(8, 4)

    block = nn.Module()
    block.attention, block.layernorm_before, block.layernorm_after = (
        nn.Identity(),
        nn.LayerNorm(4),
        nn.LayerNorm(4),
    )
    block.intermediate, block.output = nn.Linear(4, 8), Output()
    anatomy = block_anatomy(block)
    assert anatomy is BLOCK_ANATOMIES[2] and anatomy.ffn == "output.dense"
    with pytest.raises(ValueError, match="does not know the layout of block Linear"):
        block_anatomy(nn.Linear(2, 2))


def test_block_indices_resolve_python_style():
    assert resolve_blocks("all", 3) == (0, 1, 2)
    assert resolve_blocks("light", 6) == (2, 3, 4, 5) and resolve_blocks("light", 2) == (0, 1)
    assert resolve_blocks(-1, 5) == (4,) and resolve_blocks([3, -5, 1], 5) == (0, 1, 3)
    with pytest.raises(
        ValueError, match=r"`blocks` entry 2 is out of range: `x` has 2 blocks \(valid indices -2..1\)"
    ):
        resolve_blocks([2], 2, where="`x`")
    with pytest.raises(ValueError, match="`layers` entries 1 and -1 name the same block 1"):
        resolve_blocks([1, -1], 2, argument="layers")


@pytest.mark.parametrize("bad", ["heavy", [], [1.5], [1, 1], True, [True], None, (0, "1")])
def test_bad_block_selections_name_the_argument(bad):
    with pytest.raises(ValueError, match="`blocks` must be a non-empty list of distinct block indices"):
        validate_blocks(bad)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(depth=st.integers(1, 12), data=st.data())
@example(depth=1, data=None)
def test_resolution_agrees_with_python_list_indexing(depth, data):
    """Any selection of distinct in-range indices resolves to the blocks ``list(range(depth))[i]`` names."""
    if data is None:  # the pinned case: the single block of a one-block tower, named -1
        indices = [-1]
    else:
        indices = data.draw(st.lists(st.integers(-depth, depth - 1), min_size=1, max_size=depth, unique=True))
    python = [list(range(depth))[i] for i in indices]
    if len(set(python)) < len(python):
        with pytest.raises(ValueError, match="name the same block"):
            resolve_blocks(indices, depth)
    else:
        assert resolve_blocks(indices, depth) == tuple(sorted(python))


def test_resolution_is_used_by_the_tuners():
    """RAP and TokenMix accept the same selections and resolve them to the same blocks."""
    import peft_video

    torch.manual_seed(0)
    for blocks in ([-1], "light", 0):
        rap = get_peft_model(
            tiny_clip(), peft_video.RapConfig(num_frames=2, rank=1, blocks=blocks, text_modulation=False)
        )
        mix = get_peft_model(
            tiny_clip(), peft_video.TokenMixConfig(num_frames=2, blocks=blocks, finetune="none")
        )
        rap_blocks = sorted(int(k.split(".")[3]) for k in rap.base_model.targeted_module_names)
        mix_blocks = sorted(int(k.split(".")[3]) for k in mix.base_model.targeted_module_names)
        assert rap_blocks == mix_blocks == list(resolve_blocks(blocks, 2))


@pytest.mark.parametrize(
    ("build", "hand_written"),
    [
        (
            tiny_clip,
            r"(.*\.)?vision_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))",
        ),
        (tiny_open_clip, r"(.*\.)?visual\.transformer\.resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)"),
    ],
    ids=["hf-clip", "open-clip"],
)
def test_lora_targets_from_the_tables_equal_the_hand_written_regexes(build, hand_written):
    """What the task code wrote by hand for LoRA on the vision tower, derived from the tables instead."""
    model = Wrapper(build())
    derived = block_regex(model, VISION, members=linear_members(find_block_list(model).blocks[0]))
    keys = [key for key, _ in model.named_modules()]
    expected = [k for k in keys if re.fullmatch(hand_written, k)]
    assert expected and [k for k in keys if re.fullmatch(derived, k)] == expected
