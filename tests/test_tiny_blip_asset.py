"""The shipped tiny BLIP captioner: it loads offline with its processor, captions held-out still frames, and its
recipe is deterministic."""

from __future__ import annotations

import json

import pytest
import torch

from peft_video.data.collate import VideoTextCollator
from peft_video.data.synthetic import make_frame_dataset
from peft_video.tasks.captioning import VideoBlipForCaptioning
from peft_video.tasks.captioning.assets import load_captioner, tiny_blip_path
from tests.helpers import run_fresh


def test_the_asset_is_small_and_records_its_pretraining():
    path = tiny_blip_path()
    assert sum(f.stat().st_size for f in path.iterdir()) < 3_000_000
    record = json.loads((path / "pretraining.json").read_text())
    assert record["recipe"] == "recipes/pretrain_tiny_blip.py"
    assert record["zero_shot"]["test_still_exact_match"] > 0.9


def test_the_asset_captions_held_out_still_frames():
    captioner = load_captioner()
    assert (
        isinstance(captioner.model, VideoBlipForCaptioning)
        and captioner.model.config.model_type == "video_blip_caption"
    )
    assert captioner.image_size == 32 and captioner.max_text_length == 32
    stills = make_frame_dataset("test", 16, seed=3, image_size=32)[:]
    collator = VideoTextCollator(captioner.tokenizer, captioner.image_mean, captioner.image_std, 32)
    with torch.no_grad():
        ids = captioner.model.eval().generate(
            pixel_values=collator.pixel_values(stills["frames"]), num_beams=3
        )
    generated = captioner.tokenizer.batch_decode(ids, skip_special_tokens=True)
    exact = sum(g.split() == r.split() for g, r in zip(generated, stills["caption"], strict=True))
    assert exact >= 13, list(zip(generated, stills["caption"], strict=True))


@pytest.mark.slow
def test_the_recipe_is_deterministic(tmp_path):
    out = run_fresh(
        f"""
        import sys
        sys.path.insert(0, "recipes")
        import pretrain_tiny_blip as recipe
        for name in ("a", "b"):
            recipe.main(["--output", {str(tmp_path)!r} + "/" + name, "--steps", "3", "--num-images", "64",
                         "--eval-images", "4", "--batch-size", "16"])
        """
    )
    assert "saved to" in out
    a, b = ((tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b"))
    assert a == b
