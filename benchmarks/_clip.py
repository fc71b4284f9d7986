"""The CLIP ViT-B/32 that the benchmarks build from its config (random weights, nothing downloaded)."""

from __future__ import annotations

from transformers import CLIPConfig, CLIPModel


def clip_vit_b32() -> CLIPModel:
    """HF CLIP with ViT-B/32's sizes: 12-layer 768-wide vision tower on 224px / 32px patches, 512-wide text tower."""
    vision = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
    )
    text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=512))
