"""VG-BART / VG-T5: fusion identities, generate() with video, text-only, save / load, every registry method."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

import peft_video
import peft_video.tasks.summarization
from peft_video.tasks import methods
from peft_video.tasks.summarization import (
    VisionGuidedBart,
    VisionGuidedBartConfig,
    VisionGuidedT5,
    VisionGuidedT5Config,
)

from .helpers import run_fresh

VIDEO_DIM = 12
VOCAB = 40


def small(kind: str, **overrides) -> VisionGuidedBart | VisionGuidedT5:
    torch.manual_seed(0)
    if kind == "bart":
        config = VisionGuidedBartConfig(
            vocab_size=VOCAB,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=48,
            decoder_ffn_dim=48,
            max_position_embeddings=64,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
            video_feature_dim=VIDEO_DIM,
            **overrides,
        )
        return VisionGuidedBart(config)
    config = VisionGuidedT5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        video_feature_dim=VIDEO_DIM,
        **overrides,
    )
    return VisionGuidedT5(config)


def batch(with_labels: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    video_mask = torch.ones(3, 5, dtype=torch.bool)
    video_mask[1, 3:] = False
    out = {
        "input_ids": ids,
        "attention_mask": mask,
        "video_features": torch.randn(3, 5, VIDEO_DIM, generator=generator),
        "video_mask": video_mask,
    }
    if with_labels:
        out["labels"] = torch.randint(3, VOCAB, (3, 4), generator=generator)
    return out


def perturb_fusion(model) -> None:
    """Move the fusion off its zero-initialised output, so the video changes what the model computes."""
    with torch.no_grad():
        torch.manual_seed(5)
        for p in model.fusion.parameters():
            p.add_(torch.randn_like(p) * 0.5)


KINDS = ("bart", "t5")


@pytest.mark.parametrize("kind", KINDS)
def test_the_untrained_fusion_is_the_text_model(kind):
    """Zero-initialised fusion output: VG model == text-only model with the same text weights, for any video."""
    vg = small(kind).eval()
    text = small(kind, text_only=True).eval()
    missing = text.load_state_dict(vg.state_dict(), strict=False)
    assert not missing.missing_keys and all(k.startswith("fusion.") for k in missing.unexpected_keys)
    inputs = batch()
    with torch.no_grad():
        expected = text(**{k: v for k, v in inputs.items() if not k.startswith("video")}).logits
        torch.testing.assert_close(vg(**inputs).logits, expected)
        inputs["video_features"] = inputs["video_features"] * 3 + 1
        torch.testing.assert_close(vg(**inputs).logits, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_generate_reads_the_video_with_beams_and_length_limits(kind):
    model = small(kind).eval()
    perturb_fusion(model)
    inputs = batch(with_labels=False)
    settings = {"num_beams": 3, "max_new_tokens": 6, "min_new_tokens": 2, "no_repeat_ngram_size": 2}
    with torch.no_grad():
        first = model.generate(**inputs, **settings)
        again = model.generate(**inputs, **settings)
        other = dict(inputs, video_features=torch.flip(inputs["video_features"], dims=[1]) * -2)
        flipped = model.generate(**other, **settings)
        logits = model(**inputs, decoder_input_ids=first[:, :3]).logits
        logits_other = model(**other, decoder_input_ids=first[:, :3]).logits
    assert first.shape[0] == 3 and 3 <= first.shape[1] <= 7
    assert torch.equal(first, again)
    assert not torch.allclose(logits, logits_other)  # the video reaches the decoder
    assert flipped.shape[0] == 3
    eos = model.config.eos_token_id
    for row in first.tolist():  # no_repeat_ngram_size=2: no bigram twice (up to the end of the summary)
        row = row[1 : row.index(eos, 1) + 1] if eos in row[1:] else row[1:]
        bigrams = list(zip(row, row[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))


@pytest.mark.parametrize("kind", KINDS)
def test_video_time_order_reaches_the_output(kind):
    """Sinusoidal time positions: reversing the frames changes the fused states (order is visible to the model)."""
    model = small(kind, video_layers=0).eval()
    perturb_fusion(model)
    inputs = batch(with_labels=False)
    encoder = model.get_encoder()
    with torch.no_grad():
        forward = encoder(**inputs).last_hidden_state
        reverse = encoder(**dict(inputs, video_features=inputs["video_features"].flip(1))).last_hidden_state
    assert not torch.allclose(forward[0], reverse[0])


@pytest.mark.parametrize("kind", KINDS)
def test_text_only_needs_no_video_and_has_no_fusion(kind):
    model = small(kind, text_only=True).eval()
    assert not hasattr(model, "fusion")
    inputs = batch(with_labels=False)
    with torch.no_grad():
        plain = model.generate(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=4
        )
        ignored = model.generate(**inputs, max_new_tokens=4)
    assert torch.equal(plain, ignored)
    with pytest.raises(ValueError, match="text-only model has no video"):
        model.pvla_source()
    vg = small(kind)
    with pytest.raises(ValueError, match="needs `video_features`"):
        vg(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match=f"are 7 wide but the model reads {VIDEO_DIM}"):
        vg(input_ids=inputs["input_ids"], video_features=torch.zeros(3, 2, 7))


def test_a_video_without_frames_gets_no_video():
    model = small("bart").eval()
    perturb_fusion(model)
    inputs = batch(with_labels=False)
    inputs["video_mask"][0] = False
    text = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with torch.no_grad():
        fused = model.get_encoder()(**inputs).last_hidden_state
    assert torch.isfinite(fused).all()
    gated = model.fusion.output(
        torch.cat([text.last_hidden_state[0], torch.zeros_like(text.last_hidden_state[0])], -1)
    )
    torch.testing.assert_close(fused[0], text.last_hidden_state[0] + gated)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_in_a_fresh_process(kind, tmp_path):
    model = small(kind).eval()
    perturb_fusion(model)
    model.save_pretrained(tmp_path)
    inputs = batch(with_labels=False)
    torch.save(inputs, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model.generate(**inputs, num_beams=2, max_new_tokens=5)
    torch.save(expected, tmp_path / "expected.pt")
    out = run_fresh(
        f"""
        import torch
        from transformers import AutoModelForSeq2SeqLM
        import peft_video.tasks.summarization  # registers the model types
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path)!r}).eval()
        inputs = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            got = model.generate(**inputs, num_beams=2, max_new_tokens=5)
        assert torch.equal(got, torch.load({str(tmp_path / "expected.pt")!r}))
        print(type(model).__name__)
        """
    )
    assert out.split() == [type(model).__name__]


def test_from_text_model_keeps_the_text_weights_and_adds_the_fusion(tmp_path):
    from transformers import BartConfig, BartForConditionalGeneration

    fields = small("bart", text_only=True).config.to_dict()
    plain = {
        k: v
        for k, v in fields.items()
        if k != "model_type" and k not in peft_video.tasks.summarization.VIDEO_FIELDS
    }
    text = BartForConditionalGeneration(BartConfig(**plain))
    text.save_pretrained(tmp_path)
    vg = VisionGuidedBart.from_text_model(str(tmp_path), video_feature_dim=VIDEO_DIM)
    assert vg.config.model_type == "peft_video_vg_bart" and hasattr(vg, "fusion")
    for name, tensor in text.state_dict().items():
        torch.testing.assert_close(vg.state_dict()[name], tensor)
    assert torch.count_nonzero(vg.fusion.output.weight) == 0


# ------------------------------------------------------------------------------------------------------ methods

SELECTED = ("frozen", "full", "bitfit", "partial", "proj")
PEFT_OWN = {
    "lora": "lora_",
    "ia3": "ia3_",
    "adapter": "pvread_",
    "read": "pvread_",
    "prompt": "prompt_encoder",
}


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", [*SELECTED, *PEFT_OWN])
def test_every_method_trains_the_fusion_and_only_its_own_parameters(kind, method, tmp_path):
    model = small(kind)
    prepared = methods.prepare_model(model, method)
    trainable = _trainable(prepared)
    fusion = {n for n in trainable if ".fusion." in f".{n}"}
    assert fusion, "the fusion is new: every method trains it"
    own = trainable - fusion
    if method == "frozen":
        assert not own
    elif method == "bitfit":
        assert all(n.endswith("bias") for n in own) and (own or kind == "t5")  # T5 has no biases
    elif method == "partial":
        assert own and all(".layers.1." in n or ".block.1." in n for n in own)
    elif method == "proj":
        assert own and all("lm_head" in n or "shared" in n or "embed_tokens" in n for n in own)
    elif method in PEFT_OWN:
        assert own and all(PEFT_OWN[method] in n for n in own), sorted(own)[:5]
    if method in ("read", "adapter"):
        assert not any("decoder" in n for n in own), "READ adapts the encoder only"
    inputs = batch()
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        prepared(**inputs).loss.backward()
        optimizer.step()
    changed = {n for n, p in prepared.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any(".fusion." in f".{n}" for n in changed)
    if method in SELECTED:
        methods.save_trainable(prepared, tmp_path, method)
        from safetensors.torch import load_file

        saved = set(load_file(tmp_path / methods.TRAINABLE_WEIGHTS))
        assert saved and saved <= trainable
    else:
        prepared.save_pretrained(tmp_path)
        from safetensors.torch import load_file

        saved = set(load_file(tmp_path / "adapter_model.safetensors"))
        assert any("fusion" in n for n in saved)
        marker = "prompt_embeddings" if method == "prompt" else PEFT_OWN[method].rstrip("_")
        own_saved = {n for n in saved if "fusion" not in n}
        assert own_saved and all(marker in n for n in own_saved), sorted(own_saved)[:5]
        with torch.no_grad():
            prepared.eval()
            generated = prepared.generate(**batch(with_labels=False), num_beams=2, max_new_tokens=4)
        assert generated.shape[0] == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rnn_type", ["rnn", "none"])
def test_zero_initialised_read_and_adapter_leave_the_outputs_unchanged(kind, rnn_type):
    base = small(kind).eval()
    perturb_fusion(base)
    inputs = batch()
    with torch.no_grad():
        expected = base(**inputs).logits
    model = small(kind).eval()
    model.load_state_dict(base.state_dict())
    peft_model = get_peft_model(
        model, peft_video.ReadConfig(target_modules=base.method_targets().read, rnn_type=rnn_type)
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_read_generates_the_same_with_and_without_the_cache(kind):
    """READ (encoder FFNs) with trained, non-zero weights: cached incremental decoding == full recomputation."""
    model = small(kind)
    perturb_fusion(model)
    prepared = methods.prepare_model(model, "read").eval()
    with torch.no_grad():
        for name, p in prepared.named_parameters():
            if "pvread_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    inputs = batch(with_labels=False)
    settings = {"num_beams": 3, "max_new_tokens": 6}
    with torch.no_grad():
        cached = prepared.generate(**inputs, **settings, use_cache=True)
        full = prepared.generate(**inputs, **settings, use_cache=False)
    assert torch.equal(cached, full)
    targets = [
        n for n, _ in prepared.named_modules() if n.endswith(("fc2", "DenseReluDense")) and "pvread" not in n
    ]
    adapted = [n for n, m in prepared.named_modules() if hasattr(m, "pvread_down")]
    assert adapted and all("decoder" not in n for n in adapted) and len(adapted) < len(targets)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forcing_is_causal_with_read(kind):
    """Changing a later summary token leaves the logits of earlier positions unchanged."""
    prepared = methods.prepare_model(small(kind), "read").eval()
    with torch.no_grad():
        for name, p in prepared.named_parameters():
            if "pvread_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    inputs = batch(with_labels=False)
    decoder = torch.randint(3, VOCAB, (3, 6), generator=torch.Generator().manual_seed(3))
    changed = decoder.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % VOCAB
    with torch.no_grad():
        a = prepared(**inputs, decoder_input_ids=decoder).logits
        b = prepared(**inputs, decoder_input_ids=changed).logits
    torch.testing.assert_close(a[:, :4], b[:, :4])


@pytest.mark.parametrize("kind", KINDS)
def test_pvla_at_the_fusion_adds_to_the_training_loss(kind):
    from peft_video.alignment import PVLALoss, attach_pvla

    model = small(kind)
    perturb_fusion(model)
    prepared = methods.prepare_model(model, "read").train()
    inputs = batch()
    with torch.no_grad():
        torch.manual_seed(0)
        plain = prepared(**inputs).loss
    with attach_pvla(prepared, PVLALoss(max_iter=50), model.pvla_source(), weight=1.0) as pvla:
        torch.manual_seed(0)
        with_term = prepared(**inputs).loss
        assert pvla.term is not None and float(pvla.term) > 0
        torch.testing.assert_close(with_term.detach(), plain + pvla.term.detach())
        with_term.backward()
    grads = [p.grad for n, p in prepared.named_parameters() if "video_encoder" in n and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
