"""attach_pvla: hooks capture the right representations, add weight * PVLA in training forwards only, and go away."""

from __future__ import annotations

import pytest
import torch

from peft_video.alignment import PVLALoss, SingleStream, TwoTower, attach_pvla

from .pvla_models import bert_batch, clip_batch, hook_ids, tiny_bert_mlm, tiny_clip

CLIP_BLOCKS = TwoTower(
    video_modules=r"vision_model\.encoder\.layers\.\d+",
    text_modules=r"text_model\.encoder\.layers\.\d+",
    text_mask="attention_mask",
)


def _clip_reference(model, batch, loss_fn):
    """Task loss and PVLA computed by hand from output_hidden_states (hidden_states[i + 1] is block i's output)."""
    out = model(**batch, return_loss=True, output_hidden_states=True)
    video = list(out.vision_model_output.hidden_states[1:])
    text = list(out.text_model_output.hidden_states[1:])
    return out.loss, loss_fn(video, text, None, batch["attention_mask"])


def test_two_tower_adds_weighted_pvla_to_the_training_loss() -> None:
    model, batch, loss_fn = tiny_clip(), clip_batch(), PVLALoss()
    model.train()
    base, pvla = _clip_reference(model, batch, loss_fn)
    before = hook_ids(model)
    with attach_pvla(model, loss_fn, CLIP_BLOCKS, weight=0.3) as att:
        assert att.module_names["video"] == ["vision_model.encoder.layers.0", "vision_model.encoder.layers.1"]
        out = model(**batch, return_loss=True)
        torch.testing.assert_close(att.term, pvla)
        torch.testing.assert_close(out.loss, base + 0.3 * pvla)
        torch.testing.assert_close(out["loss"], out.loss)
        out.loss.backward()  # the term carries gradient into both towers
        assert model.vision_model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
        assert att.pop_mean() == pytest.approx(pvla.item()) and att.pop_mean() is None
    assert hook_ids(model) == before and not att.attached


def test_nothing_is_added_in_eval_or_without_grad() -> None:
    model, batch = tiny_clip(), clip_batch()
    with attach_pvla(model, PVLALoss(), CLIP_BLOCKS) as att:
        model.eval()
        plain = model(**batch, return_loss=True).loss
        model.train()
        with torch.no_grad():
            no_grad = model(**batch, return_loss=True).loss
        assert att.term is None and att.pop_mean() is None
    model.eval()
    torch.testing.assert_close(plain, model(**batch, return_loss=True).loss)
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(no_grad, model(**batch, return_loss=True).loss)


def test_projection_brings_different_widths_together() -> None:
    model, batch = tiny_clip(vision_width=32, text_width=24), clip_batch()
    model.train()
    with (
        attach_pvla(model, PVLALoss(), CLIP_BLOCKS),
        pytest.raises(ValueError, match="feature dim 32 != text feature dim 24"),
    ):
        model(**batch, return_loss=True)
    source = TwoTower(
        video_modules=CLIP_BLOCKS.video_modules,
        text_modules=CLIP_BLOCKS.text_modules,
        video_projection="visual_projection",
        text_projection="text_projection",
    )
    with attach_pvla(model, PVLALoss(), source) as att:
        model(**batch, return_loss=True)
    out = model(**batch, return_loss=True, output_hidden_states=True)
    video = [model.visual_projection(h) for h in out.vision_model_output.hidden_states[1:]]
    text = [model.text_projection(h) for h in out.text_model_output.hidden_states[1:]]
    torch.testing.assert_close(att.term, PVLALoss()(video, text, None, batch["attention_mask"]))


def test_video_transform_turns_frame_batches_into_frame_sequences() -> None:
    """A frame-wise tower sees B*T frames; the transform takes each frame's CLS token and regroups per video."""
    videos, frames = 2, 3
    model, batch = tiny_clip(), clip_batch(batch=videos, images=videos * frames)
    model.train()
    source = TwoTower(
        video_modules=CLIP_BLOCKS.video_modules,
        text_modules=CLIP_BLOCKS.text_modules,
        video_transform=lambda h: h[:, 0].reshape(-1, frames, h.shape[-1]),
    )
    with attach_pvla(model, PVLALoss(), source, add_to_loss=False) as att:
        out = model(**batch)
        assert out.loss is None  # nothing added: the term waits in att.term
    vis = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True).hidden_states[1:]
    txt = model.text_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
    ).hidden_states[1:]
    video = [h[:, 0].reshape(videos, frames, -1) for h in vis]
    torch.testing.assert_close(att.term, PVLALoss()(video, list(txt), None, batch["attention_mask"]))


def test_single_stream_split_by_token_types_and_padding() -> None:
    model, batch = tiny_bert_mlm(), bert_batch()
    model.train()
    source = SingleStream(
        modules=r"bert\.encoder\.layer\.\d+", video_tokens=lambda inp: inp["token_type_ids"] == 0
    )
    with attach_pvla(model, PVLALoss(), source, weight=2.0) as att:
        out = model(**batch)
    ref = model(**batch, output_hidden_states=True)
    loss_fn = PVLALoss()
    layers = ref.hidden_states[1:]
    per_sample = []
    for i in range(3):
        real = batch["attention_mask"][i].bool()
        is_video = batch["token_type_ids"][i] == 0
        v = [h[i : i + 1, is_video & real] for h in layers]
        t = [h[i : i + 1, ~is_video & real] for h in layers]
        per_sample.append(loss_fn(v, t))
    torch.testing.assert_close(att.term, torch.stack(per_sample).mean())
    torch.testing.assert_close(out.loss, ref.loss + 2.0 * att.term)


def test_single_stream_with_a_fixed_video_prefix() -> None:
    model, batch = tiny_bert_mlm(), bert_batch()
    batch["attention_mask"][:] = 1
    model.train()
    with attach_pvla(
        model, PVLALoss(), SingleStream(modules=["bert.encoder.layer.1"], video_tokens=6)
    ) as att:
        model(**batch)
    h = model(**batch, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(att.term, PVLALoss()(h[:, :6], h[:, 6:]))


# peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` inside get_peft_model.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_peft_wrapped_model_and_gradient_checkpointing() -> None:
    """Names without peft's prefix resolve; modules re-run by checkpoint recomputation are not captured again."""
    from peft import LoraConfig, get_peft_model

    batch = clip_batch()
    base = tiny_clip()
    base.train()
    names = {"video": "vision_model.encoder.layers.0.mlp.fc1", "text": "text_model.encoder.layers.0.mlp.fc1"}
    seen = {}
    probes = [
        base.get_submodule(n).register_forward_hook(
            lambda m, a, o, side=side: seen.setdefault(side, []).append(o)
        )
        for side, n in names.items()
    ]
    base(**batch, return_loss=True)
    expected = PVLALoss()(seen["video"][0], seen["text"][0], None, batch["attention_mask"])
    seen.clear()

    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.base_model.model.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False}
    )
    model.train()
    before = hook_ids(model)
    with attach_pvla(
        model, PVLALoss(), TwoTower(video_modules=[names["video"]], text_modules=[names["text"]])
    ) as att:
        assert att.module_names["video"] == ["base_model.model." + names["video"]]
        out = model(**batch, return_loss=True)
        out.loss.backward()
        assert len(seen["video"]) == 2  # the hooked module ran again during backward (recomputation)...
        assert all(t is None for slots in att._captured.values() for t in slots)  # ...and nothing was kept
        torch.testing.assert_close(att.term, expected)  # LoRA B starts at zero: the base model's function
        assert att.pop_mean() == pytest.approx(expected.item()) and att.pop_mean() is None
        lora_grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
        assert lora_grads and all(g is not None and torch.isfinite(g).all() for g in lora_grads)
    assert hook_ids(model) == before
    for probe in probes:
        probe.remove()


def test_errors_name_what_is_wrong() -> None:
    model = tiny_clip()
    with pytest.raises(ValueError, match=r"`video_modules`: no module of CLIPModel matches 'visual"):
        attach_pvla(model, PVLALoss(), TwoTower(video_modules=r"visual\.blocks", text_modules="text_model"))
    with pytest.raises(ValueError, match=r"`video_modules` matched 2 modules but `text_modules` 1"):
        attach_pvla(
            model,
            PVLALoss(),
            TwoTower(video_modules=CLIP_BLOCKS.video_modules, text_modules=["text_model.encoder.layers.0"]),
        )
    with pytest.raises(ValueError, match=r"`weight` must be a finite number >= 0.*-1"):
        attach_pvla(model, PVLALoss(), CLIP_BLOCKS, weight=-1)
    with pytest.raises(ValueError, match=r"`video_tokens` must be an int > 0 or a callable"):
        attach_pvla(model, PVLALoss(), SingleStream(modules="text_model", video_tokens=0))
    model.train()
    before = hook_ids(model)
    with (
        attach_pvla(model, PVLALoss(), CLIP_BLOCKS),
        pytest.raises(RuntimeError, match="without a `loss` tensor"),
    ):
        model(**clip_batch())  # return_loss not set: nothing to add the term to
    assert hook_ids(model) == before
