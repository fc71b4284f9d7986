"""The shipped tiny BLIP captioner (pretrained on the synthetic world's still frames) and captioner loading."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, BlipImageProcessor, BlipProcessor

from ...data.synthetic import vocabulary
from ...data.tiny_clip import IMAGE_MEAN, IMAGE_STD
from ...data.tokenizer import BOS, EOS, PAD, build_word_tokenizer
from .modeling import VideoBlipCaptionConfig, VideoBlipForCaptioning

IMAGE_SIZE = 32
PATCH_SIZE = 8
MAX_TEXT_LENGTH = 32
TINY = "tiny"


def tiny_blip_path() -> Path:
    """Directory of the shipped tiny BLIP captioner (``VideoBlipForCaptioning.from_pretrained`` and
    ``AutoProcessor.from_pretrained`` read it)."""
    path = Path(str(resources.files("peft_video") / "assets" / "tiny_blip"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the tiny BLIP captioner is missing at {path}; rebuild it with `python recipes/pretrain_tiny_blip.py`"
        )
    return path


def build_tiny_blip_processor() -> BlipProcessor:
    """The tiny captioner's processor: a word-level tokenizer over the synthetic world's vocabulary (pad 0, unk 1,
    start 2, end 3) and 32x32 images normalised with CLIP's constants (BLIP's own)."""
    tokenizer = build_word_tokenizer(vocabulary(), model_max_length=MAX_TEXT_LENGTH)
    image_processor = BlipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_blip_config(
    processor: BlipProcessor | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_frames: int = 8,
) -> VideoBlipCaptionConfig:
    """BLIP's captioning architecture in miniature: a ViT of ``num_layers`` blocks on 32x32 images in 8x8 patches
    (17 tokens per frame) and a BERT decoder of ``num_layers`` layers with cross-attention, both ``hidden_size``
    wide; the decoder's start token is the tokenizer's start token and generation ends at its end token.

    The vision ``initializer_range`` is 0.02: BLIP's vision config defaults to 1e-10 (weights that only ever get
    loaded from a checkpoint), which leaves a model built from scratch with all-zero frame tokens."""
    tokenizer = (processor or build_tiny_blip_processor()).tokenizer
    pad, bos, eos = tokenizer.convert_tokens_to_ids([PAD, BOS, EOS])
    common = {
        "hidden_size": hidden_size,
        "intermediate_size": 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "initializer_range": 0.02,
    }
    return VideoBlipCaptionConfig(
        num_frames=num_frames,
        vision_config={**common, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        text_config={
            **common,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": MAX_TEXT_LENGTH,
            "pad_token_id": pad,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "sep_token_id": eos,
        },
    )


@dataclass
class Captioner:
    """A loaded captioner: the model, its tokenizer and the pixel settings its frames need."""

    model: VideoBlipForCaptioning
    tokenizer: Any
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    name: str

    @property
    def max_text_length(self) -> int:
        """The decoder's position limit: the longest caption it can read (tokens, start and end included)."""
        return int(self.model.config.text_config.max_position_embeddings)


def load_captioner(backbone: str | Path | None = None, num_frames: int | None = None) -> Captioner:
    """The shipped tiny captioner (``None`` or ``"tiny"``), or any BLIP caption checkpoint: a local directory or a
    Hub id in the local cache (``Salesforce/blip-image-captioning-base``), with its processor. ``num_frames`` sets
    the config's default T."""
    name = TINY if backbone in (None, TINY) else str(backbone)
    source = tiny_blip_path() if name == TINY else name
    if name != TINY and _looks_local(name) and not Path(name).exists():
        raise FileNotFoundError(
            f"`backbone` {name!r}: no such directory (a local path or a Hub id is expected)"
        )
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = VideoBlipForCaptioning.from_pretrained(source)
    except OSError as error:
        raise OSError(
            f"`backbone` {name!r} cannot be loaded as a BLIP caption checkpoint ({' '.join(str(error).split())}); "
            "offline, point --backbone at a local copy (save_pretrained of the model and its processor)"
        ) from error
    if num_frames is not None:
        model.config.num_frames = num_frames
    image_processor = processor.image_processor
    size = image_processor.size
    return Captioner(
        model=model,
        tokenizer=processor.tokenizer,
        image_size=int(size.get("height") or size.get("shortest_edge")),
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        name=name,
    )


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).suffix != ""
