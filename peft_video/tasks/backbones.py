"""Load a CLIP backbone for video-text tasks: the shipped tiny CLIP, a HF CLIP (Hub id or local path), or open_clip.

What a video-text task needs beside the model is how to feed it: the tokenizer (a callable returning
``input_ids`` / ``attention_mask`` like a HF tokenizer) and the image size and normalisation of its pixels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPEN_CLIP_PREFIX = "open_clip:"
HUB_PROBE_TIMEOUT = 5.0
"""Seconds to wait for the Hub before saying it is unreachable (instead of a minute of download retries)."""
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_pretrained(spec: str | Path, argument: str = "backbone") -> str:
    """``spec`` checked as a source of pretrained weights: an existing local directory or file, or a Hub id that is
    in the local cache or reachable now. Otherwise a clear error that names ``argument``: a local-looking path
    (absolute, ``./``, ``../``, ``~``, more than one ``/``) that does not exist is a missing path, not a Hub id; a Hub
    id that is neither cached nor reachable says so and how to point at a local copy."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    looks_local = text.startswith(("/", "./", "../", "~", ".\\")) or text.count("/") > 1 or "\\" in text
    if looks_local or not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"`{argument}` {text!r}: no such file or directory")
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        snapshot_download(text, local_files_only=True)
        return text
    except Exception:  # noqa: BLE001 - any cache miss means "not cached"; we probe the Hub next
        pass
    fix = f"download it where there is a network (`hf download {text} --local-dir DIR`) and pass DIR as `{argument}`"
    if constants.HF_HUB_OFFLINE:
        raise OSError(
            f"`{argument}` {text!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {fix}"
        )
    try:
        HfApi().model_info(text, timeout=HUB_PROBE_TIMEOUT)
    except RepositoryNotFoundError as error:
        raise OSError(f"`{argument}` {text!r} is not a local path and no such model is on the Hub") from error
    except Exception as error:  # noqa: BLE001 - connection errors of every transport
        raise OSError(
            f"`{argument}` {text!r} is not in the local Hugging Face cache and the Hub is unreachable "
            f"({type(error).__name__}); {fix}"
        ) from error
    return text


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
    return _hf_clip_backbone(resolve_pretrained(spec))


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
    model.name_or_path = f"{OPEN_CLIP_PREFIX}{name}" + (f" ({pretrained})" if pretrained else "")
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
