"""The shipped tiny CLIP loads like a Hub checkpoint, tokenizes the world's captions, and retrieves zero-shot."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, CLIPImageProcessor, CLIPModel, CLIPProcessor

from peft_video.data import (
    VideoTextCollator,
    build_tiny_clip_processor,
    make_frame_dataset,
    make_video_dataset,
    tiny_clip_config,
    tiny_clip_path,
    vocabulary,
)
from peft_video.tasks.retrieval.metrics import retrieval_at_1

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> CLIPModel:
    loaded, info = CLIPModel.from_pretrained(tiny_clip_path(), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return loaded.eval()


@pytest.fixture(scope="module")
def processor() -> CLIPProcessor:
    return CLIPProcessor.from_pretrained(tiny_clip_path())


def test_asset_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in tiny_clip_path().iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert sum(files.values()) < 5 * 2**20


def test_pyproject_ships_every_asset_file():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["peft_video"]
    package = ROOT / "peft_video"
    for path in tiny_clip_path().iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_tokenizer_loads_through_auto_classes_and_knows_every_word(model, processor):
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_path())
    assert isinstance(AutoProcessor.from_pretrained(tiny_clip_path()), CLIPProcessor)
    assert len(tokenizer) == model.config.text_config.vocab_size
    text = model.config.text_config
    assert tokenizer.eos_token_id == text.eos_token_id != 2  # 2 would switch CLIP to legacy arg-max pooling
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id) == (text.pad_token_id, text.bos_token_id)
    ids = tokenizer(" ".join(vocabulary()))["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids and len(ids) == len(vocabulary()) + 2
    assert tokenizer("A Red  circle")["input_ids"] == tokenizer("a red circle")["input_ids"]
    # the shipped tokenizer is the one the library builds
    assert (
        build_tiny_clip_processor().tokenizer(vocabulary())["input_ids"]
        == tokenizer(vocabulary())["input_ids"]
    )


def test_text_pooling_reads_the_end_token_despite_padding(model, processor):
    batch = processor.tokenizer(
        ["a red circle", "a small red circle moves left to right"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = model.text_model(**batch)
        alone = model.text_model(**processor.tokenizer(["a red circle"], return_tensors="pt"))
    eos = (batch["input_ids"] == processor.tokenizer.eos_token_id).int().argmax(dim=1)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(2), eos])
    torch.testing.assert_close(out.pooler_output[0], alone.pooler_output[0], atol=1e-5, rtol=1e-5)


def test_collator_matches_the_clip_image_processor(processor):
    frames = make_frame_dataset("test", 4)[:]["frames"]  # (4, 1, 32, 32, 3)
    collator = VideoTextCollator.from_processor(processor)
    ours = collator.pixel_values(frames)[:, 0]
    assert isinstance(processor.image_processor, CLIPImageProcessor)
    theirs = processor.image_processor([Image.fromarray(f[0]) for f in frames], return_tensors="pt")[
        "pixel_values"
    ]
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)


def test_zero_shot_frame_retrieval_beats_chance_widely(model, processor):
    stills = make_frame_dataset("test", 200, seed=11)[:]
    captions = stills["caption"]
    unique = list(dict.fromkeys(captions))
    collator = VideoTextCollator.from_processor(processor)
    with torch.no_grad():
        images = model.get_image_features(
            pixel_values=collator.pixel_values(stills["frames"])[:, 0]
        ).pooler_output
        texts = model.get_text_features(
            **processor.tokenizer(unique, padding=True, return_tensors="pt")
        ).pooler_output
    similarity = (
        torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).T
    )
    assert 1 / len(unique) < 0.02
    assert retrieval_at_1(similarity, captions, unique) > 0.6


def test_processor_output_runs_the_model_like_a_hub_checkpoint(model, processor):
    inputs = processor(
        text=["a red circle", "a blue square"],
        images=[Image.new("RGB", (48, 40))] * 3,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (3, 2)


def test_pretraining_is_deterministic_and_matches_the_shipped_config(model):
    sys.path.insert(0, str(ROOT))
    try:
        from recipes.pretrain_tiny_clip import parse_args, train
    finally:
        sys.path.remove(str(ROOT))
    args = parse_args(["--steps", "2", "--num-images", "16", "--batch-size", "8"])
    threads = torch.get_num_threads()
    try:
        first, _ = train(args)
        second, _ = train(args)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    built = tiny_clip_config(build_tiny_clip_processor(), args.hidden_size, args.num_layers, args.num_heads)
    for tower in ("text_config", "vision_config"):
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "vocab_size",
            "image_size",
            "patch_size",
            "eos_token_id",
            "pad_token_id",
            "max_position_embeddings",
        ):
            ours, shipped = getattr(built, tower), getattr(model.config, tower)
            assert getattr(shipped, key, None) == getattr(ours, key, None), (tower, key)
    assert np.isfinite(model.logit_scale.item())


def test_collator_truncates_without_losing_the_end_token_and_passes_columns(processor):
    rows = make_video_dataset("train", 2)
    collator = VideoTextCollator.from_processor(
        processor, max_length=5, keep_columns=("order_pair_id", "video_id")
    )
    batch = collator([rows[0], rows[1]])
    assert batch["pixel_values"].shape == (2, 8, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == (2, 5)
    assert (batch["input_ids"][:, -1] == processor.tokenizer.eos_token_id).all()
    assert batch["order_pair_id"].tolist() == [0, 0] and batch["video_id"] == [
        rows[0]["video_id"],
        rows[1]["video_id"],
    ]
    with pytest.raises(ValueError, match="columns"):
        collator([{"frames": rows[0]["frames"]}])
