"""The video captioner: video forward and generate, the registry's methods on it, identities, save / load."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from peft_video.tasks.captioning import (
    PAPER_ALSO_TRAINED,
    VideoBlipCaptionConfig,
    VideoBlipForCaptioning,
    encoder_updated_parameters,
)
from peft_video.tasks.captioning.training import CAPTION_METHODS, prepare_captioner
from peft_video.tasks.methods import trainable_parameters
from tests.helpers import run_fresh

T = 4


def tiny_config() -> VideoBlipCaptionConfig:
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    return VideoBlipCaptionConfig(
        num_frames=T,
        vision_config={**common, "image_size": 32, "patch_size": 8, "initializer_range": 0.02},
        text_config={
            **common,
            "vocab_size": 40,
            "max_position_embeddings": 24,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "sep_token_id": 3,
            "pad_token_id": 0,
        },
    )


def tiny_model(seed: int = 0) -> VideoBlipForCaptioning:
    torch.manual_seed(seed)
    return VideoBlipForCaptioning(tiny_config()).eval()


def videos(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


CAPTIONS = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
MASK = (CAPTIONS != 0).long()


def loss_of(model: torch.nn.Module, pixels: torch.Tensor | None = None) -> torch.Tensor:
    return model(
        pixel_values=videos() if pixels is None else pixels, input_ids=CAPTIONS, attention_mask=MASK
    ).loss


def test_video_tokens_are_the_frames_tokens_flattened():
    model = tiny_model()
    pixels = videos()
    tokens = model.encode_video(pixels)
    per_frame = model.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state  # (B*T, N, D)
    assert tokens.shape == (2, T * per_frame.shape[1], 32)
    torch.testing.assert_close(tokens, per_frame.reshape(2, -1, 32))


def test_loss_equals_the_decoders_cross_entropy_on_the_flattened_tokens():
    model = tiny_model()
    pixels = videos()
    logits = model(pixel_values=pixels, input_ids=CAPTIONS, attention_mask=MASK).logits
    targets = CAPTIONS[:, 1:].masked_fill(MASK[:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 40), targets.reshape(-1))
    torch.testing.assert_close(loss_of(model, pixels), expected)


def _frames_reversed(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T*N, D) tokens with their T frame blocks in reverse order."""
    return tokens.reshape(tokens.shape[0], T, -1, tokens.shape[-1]).flip(1).reshape(tokens.shape)


def test_frame_wise_model_cannot_tell_a_video_from_its_reversal_and_token_mix_can():
    pixels = videos()
    base = tiny_model()
    # frame-wise: the reversal's tokens are the same tokens in another order, which cross-attention cannot see
    torch.testing.assert_close(base.encode_video(pixels.flip(1)), _frames_reversed(base.encode_video(pixels)))
    torch.testing.assert_close(loss_of(base, pixels), loss_of(base, pixels.flip(1)))
    mixed = prepare_captioner(tiny_model(), "token_mix").base_model.model
    difference = mixed.encode_video(pixels.flip(1)) - _frames_reversed(mixed.encode_video(pixels))
    assert difference.abs().max() > 1e-2


def test_generate_on_videos_with_beam_search_and_lengths():
    model = tiny_model()
    ids = model.generate(pixel_values=videos(batch=3), num_beams=3, max_length=9, min_length=6)
    assert ids.shape[0] == 3 and ids.shape[1] <= 9
    assert (ids[:, 0] == 2).all()  # starts with the decoder's BOS
    for row in ids:
        ended = (row == 3).nonzero()
        assert (
            len(ended) == 0 or int(ended[0]) >= 5
        )  # min_length 6 counts BOS: no end token before position 5


def test_images_are_one_frame_videos():
    model = tiny_model()
    image = videos(batch=2)[:, 0]
    torch.testing.assert_close(model.encode_video(image), model.encode_video(image[:, None]))


@pytest.mark.parametrize("method", ["lora", "adapter", "read", "partial"])
def test_methods_start_at_the_pretrained_function(method):
    expected = loss_of(tiny_model())
    torch.testing.assert_close(loss_of(prepare_captioner(tiny_model(), method)), expected)


def test_token_mix_on_one_frame_is_the_pretrained_function():
    pixels = videos()[:, :1]
    expected = loss_of(tiny_model(), pixels)
    torch.testing.assert_close(loss_of(prepare_captioner(tiny_model(), "token_mix"), pixels), expected)


BLOCK = "vision_model.encoder.layers.1."


@pytest.mark.parametrize("method", CAPTION_METHODS)
def test_each_method_trains_only_its_parameters(method):
    model = prepare_captioner(tiny_model(), method)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if method == "frozen":
        assert names == []
        return
    extras = [n for n in names if any(f"{m}." in n for m in PAPER_ALSO_TRAINED)]
    assert extras, "the paper's projection and language head train with every method"
    vision = [n for n in names if "vision_model.encoder" in n]
    if method == "full":
        assert trainable_parameters(model) == sum(p.numel() for p in tiny_model().parameters())
    elif method in ("partial", "token_mix"):
        assert vision and all(BLOCK in n and "pvtmix_copy" in n for n in vision)
    elif method == "lora":
        assert vision and all("lora_" in n for n in vision)
    elif method in ("adapter", "read"):
        assert vision and all("read_" in n or "pvread" in n or "adapter" in n for n in vision), vision[:3]
    elif method == "bitfit":
        assert vision and all(n.endswith("bias") for n in vision)
    elif method == "proj":
        assert vision == []
    text_layers = [n for n in names if "text_decoder.bert.encoder" in n]
    assert text_layers == [] or method == "full"  # the decoder's layers stay frozen (the authors' code)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss_of(model.train()).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= set(names)


def test_partial_and_token_mix_update_the_same_block_parameters():
    counts = {
        m: encoder_updated_parameters(prepare_captioner(tiny_model(), m)) for m in ("partial", "token_mix")
    }
    block = sum(p.numel() for n, p in tiny_model().named_parameters() if n.startswith(BLOCK))
    assert counts == {"partial": block, "token_mix": block}


def test_blocks_option_moves_the_mixing():
    model = prepare_captioner(tiny_model(), "token_mix", blocks=[0])
    vision = [n for n, p in model.named_parameters() if p.requires_grad and "vision_model.encoder" in n]
    assert vision and all("layers.0." in n for n in vision)
    with pytest.raises(ValueError, match="blocks"):
        prepare_captioner(tiny_model(), "lora", blocks=[0])


def test_save_and_load_in_a_fresh_process(tmp_path):
    base = tiny_model()
    base.save_pretrained(tmp_path / "base")
    model = prepare_captioner(tiny_model(), "token_mix")
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "adapter")
    pixels = videos()
    torch.save(pixels, tmp_path / "pixels.pt")
    expected = model.generate(pixel_values=pixels, num_beams=2, max_length=8)
    out = run_fresh(
        f"""
        import torch
        import peft_video
        from peft import PeftModel
        from peft_video.tasks.captioning import VideoBlipForCaptioning
        from transformers import AutoConfig
        assert AutoConfig.from_pretrained({str(tmp_path / "base")!r}).model_type == "video_blip_caption"
        base = VideoBlipForCaptioning.from_pretrained({str(tmp_path / "base")!r}).eval()
        assert base.config.num_frames == {T}
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
        pixels = torch.load({str(tmp_path / "pixels.pt")!r})
        print(model.generate(pixel_values=pixels, num_beams=2, max_length=8).tolist())
        """
    )
    assert out.strip().splitlines()[-1] == str(expected.tolist())
    assert isinstance(model, PeftModel)


def test_the_registrys_own_partial_tunes_the_same_block():
    from peft_video.tasks.methods import prepare_model

    plain = prepare_model(tiny_model(), "partial", also_train=list(PAPER_ALSO_TRAINED))
    vision = {n for n, p in plain.named_parameters() if p.requires_grad and "vision_model.encoder" in n}
    assert vision and all(n.startswith(BLOCK) for n in vision)
    assert encoder_updated_parameters(plain) == encoder_updated_parameters(
        prepare_captioner(tiny_model(), "partial")
    )


def test_read_recurs_over_frames_and_sees_their_order():
    model = prepare_captioner(tiny_model(), "read")
    assert model.peft_config["default"].recurrence_axis == "frames"
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and "vision_model.encoder" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    inner = model.base_model.model
    pixels = videos()
    difference = inner.encode_video(pixels.flip(1)) - _frames_reversed(inner.encode_video(pixels))
    assert difference.abs().max() > 1e-3


def test_a_plain_blip_caption_checkpoint_loads_with_its_weights(tmp_path):
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = tiny_config().to_dict()
    config.pop("model_type", None)
    config.pop("num_frames", None)
    torch.manual_seed(0)
    blip = BlipForConditionalGeneration(BlipConfig(**config)).eval()
    blip.save_pretrained(tmp_path)
    model = VideoBlipForCaptioning.from_pretrained(tmp_path).eval()
    for name, tensor in blip.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    image = videos()[:, 0]
    expected = blip(pixel_values=image, input_ids=CAPTIONS, attention_mask=MASK).logits
    torch.testing.assert_close(
        model(pixel_values=image, input_ids=CAPTIONS, attention_mask=MASK).logits, expected
    )
