"""The shipped tiny image-text CLIP: where it lives, and the config/processor it was built from."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPProcessor

from .synthetic import vocabulary
from .tokenizer import BOS, EOS, PAD, build_word_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
MAX_TEXT_LENGTH = 32
# OpenAI CLIP's normalisation constants, so the same pixel pipeline serves the tiny model and real CLIPs.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_path() -> Path:
    """Directory of the shipped tiny CLIP (load with ``CLIPModel.from_pretrained`` / ``CLIPProcessor``)."""
    path = Path(str(resources.files("peft_video") / "assets" / "tiny_clip"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the tiny CLIP asset is missing at {path}; rebuild it with `python recipes/pretrain_tiny_clip.py`"
        )
    return path


def build_tiny_clip_processor() -> CLIPProcessor:
    """The CLIPProcessor of the tiny CLIP: a word-level tokenizer over the synthetic world's vocabulary, 32x32 images."""
    tokenizer = build_word_tokenizer(vocabulary(), model_max_length=MAX_TEXT_LENGTH)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_clip_config(
    processor: CLIPProcessor | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    projection_dim: int = 64,
) -> CLIPConfig:
    """A CLIPConfig for 32x32 images in 8x8 patches whose text tower matches ``processor``'s tokenizer."""
    tokenizer = (processor or build_tiny_clip_processor()).tokenizer
    ids = tokenizer.convert_tokens_to_ids([PAD, BOS, EOS])
    common = {
        "hidden_size": hidden_size,
        "intermediate_size": 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "projection_dim": projection_dim,
    }
    text = {
        **common,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": MAX_TEXT_LENGTH,
        "pad_token_id": ids[0],
        "bos_token_id": ids[1],
        "eos_token_id": ids[2],
    }
    vision = {**common, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "num_channels": 3}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
