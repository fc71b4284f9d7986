"""The fusion trains at the text model's scale: T5 draws Linear layers it does not know at std 1.0, which made the
VG-T5 fusion's output hundreds of times T5's encoder output after a few steps (ROUGE-L 22.6 with the fusion alone)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peft_video.tasks import methods
from peft_video.tasks.summarization.modeling import _ZeroLinear
from peft_video.tasks.summarization.training import FUSION_LEARNING_RATE

from .test_summarization_model import VIDEO_DIM, VOCAB, small


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_fusion_layers_do_not_amplify_their_input(kind):
    """Each of the fusion's Linear layers keeps the scale of its input (std * sqrt(fan_in) about 1 or less), so the
    fused states stay at the size of the text encoder's output; the zero output layer starts the model at the
    text model."""
    model = small(kind)
    linears = [
        m for m in model.fusion.modules() if isinstance(m, nn.Linear) and not isinstance(m, _ZeroLinear)
    ]
    assert linears
    for module in linears:
        gain = module.weight.std().item() * module.in_features**0.5
        assert gain < 1.5, (module, gain)
    assert model.fusion.output.weight.abs().max().item() == 0.0


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_training_the_fusion_alone_lowers_the_loss(kind):
    """Twenty AdamW steps on one batch at the fusion's learning rate, only the fusion training (``frozen``): the
    loss stays finite and does not end above where it started, and the fused states stay near the text states' scale."""
    model = (
        small(kind, fusion_dropout=0.0, dropout_rate=0.0) if kind == "t5" else small(kind, fusion_dropout=0.0)
    )
    prepared = methods.prepare_model(model, "frozen")
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(3, VOCAB, (8, 10), generator=generator),
        "attention_mask": torch.ones(8, 10, dtype=torch.long),
        "labels": torch.randint(3, VOCAB, (8, 6), generator=generator),
        "video_features": torch.randn(8, 5, VIDEO_DIM, generator=generator),
    }
    trainable = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=FUSION_LEARNING_RATE, weight_decay=0.0)
    losses = []
    for _ in range(20):
        loss = prepared(**batch).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prepared.eval()
    with torch.no_grad():
        final = prepared(**batch).loss.item()
        text = model.text_encoder(input_ids=batch["input_ids"]).last_hidden_state
        fused = model.fuse(text, batch["video_features"], None)
    assert bool(torch.isfinite(torch.tensor([*losses, final])).all())
    assert final < losses[0], (losses[0], final)
    scale = (fused - text).pow(2).mean().sqrt() / text.pow(2).mean().sqrt()
    assert scale < 30, scale.item()
