"""Tiny models and batches for the PVLA tests, built from configs in code (no downloads)."""

from __future__ import annotations

import torch
from torch import nn

IMAGE, PATCH, VOCAB, TEXT_LEN = 16, 4, 99, 7


def tiny_clip(vision_width: int = 32, text_width: int = 32, layers: int = 2, seed: int = 0) -> nn.Module:
    """A 2-layer HF CLIPModel; widths may differ to exercise the shared projection."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    common = {"intermediate_size": 37, "num_hidden_layers": layers, "num_attention_heads": 4}
    text = {"hidden_size": text_width, "vocab_size": VOCAB, "max_position_embeddings": 16, **common}
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = {"hidden_size": vision_width, "image_size": IMAGE, "patch_size": PATCH, **common}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def clip_batch(batch: int = 4, seed: int = 0, images: int | None = None) -> dict[str, torch.Tensor]:
    """Random images and token ids with right padding (the last sample is the shortest)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, TEXT_LEN), generator=g)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.long)
    mask[-1, 4:] = 0
    ids[mask == 0] = 1
    pixels = torch.randn(images or batch, 3, IMAGE, IMAGE, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def tiny_bert_mlm(seed: int = 0) -> nn.Module:
    """A 2-layer HF BertForMaskedLM: a single-stream encoder whose token_type_ids mark video (0) and text (1)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=32,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForMaskedLM(cfg)


def bert_batch(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sequences of 6 'video' positions (type 0) then 5 text positions (type 1), with varying lengths."""
    g = torch.Generator().manual_seed(seed)
    n = 11
    ids = torch.randint(2, VOCAB, (batch, n), generator=g)
    types = torch.zeros(batch, n, dtype=torch.long)
    types[:, 6:] = 1
    types[1, 4:] = 1  # sample 1 has only 4 video positions
    mask = torch.ones(batch, n, dtype=torch.long)
    mask[2, 9:] = 0  # sample 2 is padded
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": ids.clone()}


def hook_ids(model: nn.Module) -> set[tuple[str, str, int]]:
    """Every forward hook and forward pre-hook on ``model``'s modules (transformers installs some of its own)."""
    out = set()
    for name, mod in model.named_modules():
        out |= {(name, "post", k) for k in mod._forward_hooks}
        out |= {(name, "pre", k) for k in mod._forward_pre_hooks}
    return out
