"""The method registry on the retrieval task: what each method trains, what it saves, and its parameter count in
closed form from the model's own dimensions; every save reloads in a fresh process to the same outputs."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from peft_video.tasks import FRAME_WISE, METHODS, prepare_model, trainable_parameters
from peft_video.tasks.methods import (
    SELECTIVE_METHODS,
    MethodTargets,
    load_trainable,
    method_targets,
    save_trainable,
    selected_parameters,
)
from peft_video.tasks.retrieval import VideoTextRetrievalModel
from tests.helpers import run_fresh
from tests.tiny_models import tiny_clip, tiny_open_clip

FRAMES = 4
APPLICABLE = tuple(m for m in METHODS if m != "prompt")


def retrieval_model(seed: int = 0) -> VideoTextRetrievalModel:
    torch.manual_seed(seed)
    return VideoTextRetrievalModel(tiny_clip())


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_the_papers_baselines_and_ours():
    assert METHODS == (
        "frozen", "full", "bitfit", "partial", "proj", "lora", "ia3", "adapter", "prompt", "read", "rap", "token_mix"
    )  # fmt: skip
    assert set(SELECTIVE_METHODS) < set(METHODS) and set(FRAME_WISE) < set(METHODS)
    assert not {"read", "rap", "token_mix"} & set(FRAME_WISE)


def test_selective_methods_train_exactly_their_parameters_in_closed_form():
    clip = retrieval_model().backbone
    vision, text = clip.vision_model.encoder.layers, clip.text_model.encoder.layers
    biases = sum(p.numel() for n, p in clip.named_parameters() if n.endswith("bias"))
    expected = {
        "frozen": 0,
        "full": numel(clip),
        "bitfit": biases,
        "partial": numel(vision[-1]) + numel(text[-1]),
        "proj": numel(clip.visual_projection) + numel(clip.text_projection),
    }
    for method, count in expected.items():
        model = prepare_model(retrieval_model(), method, FRAMES)
        assert trainable_parameters(model) == count, method
        assert not isinstance(model, PeftModel)
    names = trainable_names(prepare_model(retrieval_model(), "partial", FRAMES))
    assert all(".layers.1." in n for n in names) and any("vision_model" in n for n in names)
    names = trainable_names(prepare_model(retrieval_model(), "bitfit", FRAMES))
    assert names and all(n.endswith("bias") for n in names)
    two = prepare_model(retrieval_model(), "partial", FRAMES, partial_blocks=2)
    assert trainable_parameters(two) == numel(vision) + numel(text)


def test_peft_methods_train_their_adapter_in_closed_form():
    clip = retrieval_model().backbone
    layers = clip.vision_model.encoder.layers
    d, inner, depth = (
        clip.config.vision_config.hidden_size,
        clip.config.vision_config.intermediate_size,
        len(layers),
    )
    r = 8
    lora = depth * (4 * r * (d + d) + r * (d + inner) + r * (inner + d))  # q, k, v, out; fc1; fc2
    ia3 = depth * (d + d + inner)  # k and v outputs, fc2's input
    adapter = depth * (2 * d * r + d + r)  # Houlsby: W_down, W_up with biases
    read = adapter + depth * (2 * r * r + 2 * r)  # plus one RNN cell
    expected = {"lora": lora, "ia3": ia3, "adapter": adapter, "read": read}
    for method, count in expected.items():
        model = prepare_model(retrieval_model(), method, FRAMES)
        assert isinstance(model, PeftModel) and trainable_parameters(model) == count, method
        assert all("vision_model" in n for n in trainable_names(model)), method


def test_methods_that_do_not_apply_say_why():
    with pytest.raises(
        ValueError, match="'prompt' does not apply to VideoTextRetrievalModel: peft's prompt tuning"
    ):
        prepare_model(retrieval_model(), "prompt", FRAMES)
    with pytest.raises(ValueError, match="`method` must be one of"):
        prepare_model(retrieval_model(), "prefix", FRAMES)
    with pytest.raises(ValueError, match="`partial_blocks`=3 exceeds the 2 blocks"):
        prepare_model(retrieval_model(), "partial", FRAMES, partial_blocks=3)
    with pytest.raises(ValueError, match="`partial_blocks` only applies to method 'partial'"):
        prepare_model(retrieval_model(), "lora", FRAMES, partial_blocks=2)
    with pytest.raises(ValueError, match="does not describe itself to the method registry"):
        prepare_model(torch.nn.Linear(2, 2), "bitfit")


def test_new_modules_train_under_every_method_and_frozen_keeps_also_train_frozen():
    class WithHead(VideoTextRetrievalModel):
        def __init__(self) -> None:
            super().__init__(tiny_clip())
            self.head = torch.nn.Linear(16, 16)

        def method_targets(self) -> MethodTargets:
            targets = super().method_targets()
            return MethodTargets(**{**targets.__dict__, "new_modules": ("head",)})

    for method in APPLICABLE:
        model = prepare_model(WithHead(), method, FRAMES, also_train=["token_embedding"])
        names = trainable_names(model)
        assert any(".head." in f".{n}" for n in names), method
        assert any("token_embedding" in n for n in names) == (method != "frozen"), method


@pytest.mark.parametrize("method", ["bitfit", "partial", "proj", "full"])
def test_selective_round_trip_saves_only_the_trainable_tensors(tmp_path, method):
    model = prepare_model(retrieval_model(), method, FRAMES)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    save_trainable(model, tmp_path, method=method)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "trainable_model.safetensors"))
    assert set(saved) == set(trainable_names(model))
    assert json.loads((tmp_path / "trainable_config.json").read_text())["method"] == method
    fresh = load_trainable(retrieval_model(), tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="tensors that VideoTextRetrievalModel lacks"):
        load_trainable(VideoTextRetrievalModel(tiny_open_clip()), tmp_path)


@pytest.mark.parametrize(
    "method", [*SELECTIVE_METHODS[1:], "lora", "ia3", "adapter", "read", "rap", "token_mix"]
)
def test_every_method_reloads_in_a_fresh_process_to_the_same_outputs(tmp_path, method):
    """Train-like perturbation, save, reload from disk in a new interpreter onto a freshly built base model."""
    model = prepare_model(retrieval_model(), method, FRAMES)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    pixels = torch.randn(2, FRAMES, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(2, 90, (2, 6), generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels, input_ids=ids).logits_per_text
    torch.save({"pixels": pixels, "ids": ids, "expected": expected}, tmp_path / "io.pt")
    if method in SELECTIVE_METHODS:
        save_trainable(model, tmp_path / "saved", method=method)
        load = "model = load_trainable(base, save)"
    else:
        model.save_pretrained(str(tmp_path / "saved"))
        load = "model = PeftModel.from_pretrained(base, save)"
    out = run_fresh(
        f"""
        import torch, peft_video
        from peft import PeftModel
        from peft_video.tasks.methods import load_trainable
        from peft_video.tasks.retrieval import VideoTextRetrievalModel
        from tests.tiny_models import tiny_clip
        torch.manual_seed(0)
        base = VideoTextRetrievalModel(tiny_clip())
        save = {str(tmp_path / "saved")!r}
        {load}
        model.eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            got = model(pixel_values=io["pixels"], input_ids=io["ids"]).logits_per_text
        print(float((got - io["expected"]).abs().max()))
        """
    )
    assert float(out.strip().splitlines()[-1]) < 1e-5


def test_open_clip_targets_cover_both_towers():
    model = VideoTextRetrievalModel(tiny_open_clip())
    targets = method_targets(model)
    assert targets.blocks == ("backbone.visual.transformer.resblocks", "backbone.transformer.resblocks")
    proj = selected_parameters(model, "proj")
    assert proj == {"backbone.visual.proj", "backbone.text_projection"}
    for method in ("lora", "ia3", "adapter", "read", "partial", "bitfit"):
        prepared = prepare_model(VideoTextRetrievalModel(tiny_open_clip()), method, FRAMES)
        assert trainable_parameters(prepared) > 0, method
