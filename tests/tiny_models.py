"""Tiny models of every supported architecture, built from configs in code (no downloads), plus inputs for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

NUM_FRAMES = 4
VIDEOS = 2
IMAGE = 32


def tiny_clip() -> nn.Module:
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=99,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE,
        patch_size=8,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def tiny_clip_vision() -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE,
            patch_size=8,
        )
    )


def tiny_blip_vision() -> nn.Module:
    from transformers import BlipVisionConfig, BlipVisionModel

    return BlipVisionModel(
        BlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE,
            patch_size=8,
            initializer_range=0.02,
        )
    )


def tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    return ViTModel(
        ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE,
            patch_size=8,
        )
    )


def tiny_bart() -> nn.Module:
    from transformers import BartConfig, BartModel

    return BartModel(
        BartConfig(
            vocab_size=99,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=32,
        )
    )


def tiny_mbart() -> nn.Module:
    from transformers import MBartConfig, MBartModel

    return MBartModel(
        MBartConfig(
            vocab_size=99,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=32,
        )
    )


def tiny_t5() -> nn.Module:
    from transformers import T5Config, T5Model

    return T5Model(
        T5Config(
            vocab_size=99, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0
        )
    )


def tiny_open_clip() -> nn.Module:
    import open_clip

    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"width": 32, "layers": 2, "head_width": 16, "image_size": IMAGE, "patch_size": 8},
        text_cfg={"context_length": 16, "vocab_size": 99, "width": 32, "heads": 2, "layers": 2},
    )


def frames(seed: int = 0, videos: int = VIDEOS, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """A (videos*num_frames, 3, IMAGE, IMAGE) frame batch, video-major."""
    return torch.randn(videos * num_frames, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def tokens(seed: int = 0, batch: int = VIDEOS, length: int = 12) -> torch.Tensor:
    return torch.randint(2, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class Case:
    """A tiny architecture, how to run it, and the READ axis it is tested with."""

    name: str
    build: Callable[[], nn.Module]
    run: Callable[[nn.Module], torch.Tensor]
    axis: str


def _vision_out(model: nn.Module) -> torch.Tensor:
    return model(pixel_values=frames()).last_hidden_state


def _seq2seq_out(model: nn.Module) -> torch.Tensor:
    return model(input_ids=tokens(), decoder_input_ids=tokens(1, length=6)).last_hidden_state


def _clip_image(model: nn.Module) -> torch.Tensor:
    return model.get_image_features(pixel_values=frames()).pooler_output


def _clip_text(model: nn.Module) -> torch.Tensor:
    return model.get_text_features(input_ids=tokens()).pooler_output


def _open_clip_image(model: nn.Module) -> torch.Tensor:
    return model.encode_image(frames())


def _open_clip_text(model: nn.Module) -> torch.Tensor:
    return model.encode_text(tokens(length=16))


CASES = [
    Case("clip-frames", tiny_clip, _clip_image, "frames"),
    Case("clip-tokens", tiny_clip, _clip_text, "tokens"),
    Case("clip-vision-frames", tiny_clip_vision, _vision_out, "frames"),
    Case("clip-vision-tokens", tiny_clip_vision, _vision_out, "tokens"),
    Case("blip-vision-frames", tiny_blip_vision, _vision_out, "frames"),
    Case("blip-vision-tokens", tiny_blip_vision, _vision_out, "tokens"),
    Case("vit-frames", tiny_vit, _vision_out, "frames"),
    Case("vit-tokens", tiny_vit, _vision_out, "tokens"),
    Case("bart-tokens", tiny_bart, _seq2seq_out, "tokens"),
    Case("mbart-tokens", tiny_mbart, _seq2seq_out, "tokens"),
    Case("t5-tokens", tiny_t5, _seq2seq_out, "tokens"),
    Case("open-clip-frames", tiny_open_clip, _open_clip_image, "frames"),
    Case("open-clip-tokens", tiny_open_clip, _open_clip_text, "tokens"),
]
