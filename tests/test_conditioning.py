"""The sentence condition of a vision forward (peft_video.conditioning): scoping, validation, and RAP reading it."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

import peft_video
from peft_video.conditioning import current_sentence_condition, rap_condition, sentence_condition

from .tiny_models import frames, tiny_clip_vision


def test_rap_condition_is_the_generic_sentence_condition():
    assert peft_video.rap_condition is rap_condition is sentence_condition
    assert peft_video.sentence_condition is sentence_condition


def test_the_condition_lives_only_inside_its_block_and_nests():
    outer, inner = torch.randn(2, 4), torch.randn(3, 4)
    assert current_sentence_condition() is None
    with sentence_condition(paired=outer) as condition:
        assert current_sentence_condition() is condition and condition.mode == "paired"
        with sentence_condition(candidates=inner):
            now = current_sentence_condition()
            assert now.mode == "candidates" and now.embeds is inner
        assert current_sentence_condition() is condition
    assert current_sentence_condition() is None
    with pytest.raises(KeyError), sentence_condition(paired=outer):  # an exception inside still restores
        raise KeyError
    assert current_sentence_condition() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "pass exactly one of `paired`"),
        ({"paired": torch.randn(2, 4), "candidates": torch.randn(2, 4)}, "pass exactly one of `paired`"),
        (
            {"paired": torch.randn(4)},
            r"`paired` must be a tensor of shape \(S, E\) with S >= 1, got tensor of shape",
        ),
        ({"candidates": torch.randn(0, 4)}, r"`candidates` must be a tensor of shape \(S, E\)"),
        ({"paired": torch.ones(2, 4, dtype=torch.long)}, "`paired` must be a floating-point tensor"),
    ],
)
def test_bad_conditions_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message), sentence_condition(**kwargs):
        pass


def test_rap_reads_the_generic_condition():
    torch.manual_seed(0)
    model = get_peft_model(tiny_clip_vision(), peft_video.RapConfig(num_frames=4, rank=1)).eval()
    with pytest.raises(RuntimeError, match=r"outside `peft_video.rap_condition\(...\)`"), torch.no_grad():
        model(pixel_values=frames())
    with torch.no_grad(), sentence_condition(paired=torch.randn(2, 512)):
        assert model(pixel_values=frames()).last_hidden_state.shape == (8, 17, 32)
