"""Load a CLIP backbone for video-text tasks: the shipped tiny CLIP, a HF CLIP (Hub id or local path), or open_clip.

What a video-text task needs beside the model is how to feed it: the tokenizer (a callable returning
``input_ids`` / ``attention_mask`` like a HF tokenizer) and the image size and normalisation of its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPEN_CLIP_PREFIX = "open_clip:"


@dataclass
class ClipBackbone:
    """A CLIP model and how to feed it frames and text."""

    model: nn.Module
    tokenizer: Any  # HF tokenizer, or OpenClipTokenizer: tokenizer(texts, padding=True, return_tensors="pt")
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    name: str


class OpenClipTokenizer:
    """An open_clip tokenizer behind the HF call signature the collators use (``input_ids`` and a padding mask).

    open_clip pads to its fixed context length with id 0 and its text tower pools at the end token itself, so the
    mask only serves code that wants one (PVLA's text side).
    """

    def __init__(self, tokenize: Any, context_length: int) -> None:
        self.tokenize = tokenize
        self.model_max_length = context_length

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        if return_tensors != "pt":
            raise ValueError(
                f"`return_tensors` must be 'pt' for open_clip tokenizers, got {return_tensors!r}"
            )
        ids = self.tokenize([texts] if isinstance(texts, str) else list(texts))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def load_clip_backbone(spec: str | Path | None = None, *, pretrained: str | None = None) -> ClipBackbone:
    """The backbone named by ``spec``: None for the shipped tiny CLIP, a HF CLIP Hub id or local directory, or
    ``"open_clip:<model name>"`` (random weights unless ``pretrained`` names open_clip weights or a checkpoint file).
    """
    if spec is None:
        from ..data.tiny_clip import tiny_clip_path

        spec = tiny_clip_path()
    if isinstance(spec, str) and spec.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_backbone(spec[len(OPEN_CLIP_PREFIX) :], pretrained)
    if pretrained is not None:
        raise ValueError(
            f"`pretrained`={pretrained!r} only applies to open_clip backbones ('open_clip:<name>'); a HF backbone "
            f"{str(spec)!r} is loaded with its own weights"
        )
    return _hf_clip_backbone(str(spec))


def _hf_clip_backbone(spec: str) -> ClipBackbone:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(spec)
    processor = CLIPProcessor.from_pretrained(spec)
    image_processor = processor.image_processor
    crop = getattr(image_processor, "crop_size", None) or image_processor.size
    size = crop["height"] if "height" in crop else crop["shortest_edge"]
    return ClipBackbone(
        model=model,
        tokenizer=processor.tokenizer,
        image_size=int(size),
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        name=spec,
    )


def _open_clip_backbone(name: str, pretrained: str | None) -> ClipBackbone:
    import open_clip

    if not name:
        raise ValueError("`spec` 'open_clip:' needs a model name, e.g. 'open_clip:ViT-B-32'")
    model = open_clip.create_model(name, pretrained=pretrained)
    tokenizer = open_clip.get_tokenizer(name)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    return ClipBackbone(
        model=model,
        tokenizer=OpenClipTokenizer(tokenizer, tokenizer.context_length),
        image_size=int(size if isinstance(size, int) else size[0]),
        image_mean=tuple(cfg["mean"]),
        image_std=tuple(cfg["std"]),
        name=f"{OPEN_CLIP_PREFIX}{name}",
    )
