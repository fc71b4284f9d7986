"""The synthetic summarization world, the shipped tiny BART / T5, and recipes/video_summarization.py end to end."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoConfig, AutoTokenizer

from peft_video.tasks.summarization import load_summarizer, tiny_summarizer_path
from peft_video.tasks.summarization.synthetic import (
    COLOURS,
    SHAPES,
    VIDEO_ONLY_CHANCE,
    VIDEO_ONLY_WORDS,
    build_split,
    make_example,
    order_correct,
    video_only_share,
)

from .helpers import ROOT

# ------------------------------------------------------------------------------------------------ the world


def test_examples_are_deterministic_and_transcripts_never_name_what_only_the_video_shows():
    for index in range(200):
        example = make_example("train", index, seed=3)
        assert example == make_example("train", index, seed=3)
        transcript = set(example.transcript.split())
        assert not transcript & VIDEO_ONLY_WORDS, example.transcript
        assert example.topic in transcript and example.topic in example.summary
        first, second = example.events
        assert (first.colour, first.shape) != (second.colour, second.shape)
        assert example.summary.index(first.phrase) < example.summary.index(second.phrase)
    assert make_example("train", 0, seed=0) != make_example("validation", 0, seed=0)


def test_scores_of_the_world_by_hand():
    example = make_example("test", 5)
    first, second = example.events
    assert video_only_share(example.summary, example) == 1.0 and order_correct(example.summary, example)
    swapped = f"x clip : first {second.phrase} then {first.phrase}"
    assert order_correct(swapped, example) is False
    assert video_only_share(swapped, example) < 1.0
    assert order_correct("x clip : first the thing moves left", example) is None  # objects not named
    wrong_colour = [c for c in COLOURS if c != first.colour][0]
    one_off = example.summary.replace(
        f"the {first.colour} {first.shape}", f"the {wrong_colour} {first.shape}", 1
    )
    assert video_only_share(one_off, example) == pytest.approx(5 / 6)
    assert VIDEO_ONLY_CHANCE == pytest.approx(100 * (1 / 4 + 1 / 3 + 1 / 4) / 3)
    assert set(SHAPES) <= VIDEO_ONLY_WORDS


def test_clip_features_come_from_the_tiny_clip_and_tell_events_apart():
    examples, features = build_split("validation", 6, seed=0)
    again, features_again = build_split("validation", 6, seed=0)
    first = features(examples[0].record())
    assert first.shape == (6, 64)
    np.testing.assert_array_equal(first.numpy(), features_again(again[0].record()).numpy())
    # the three clips of one event differ (the shape moves), and different videos differ
    assert not np.allclose(first[0].numpy(), first[2].numpy())
    assert not np.allclose(first.numpy(), features(examples[1].record()).numpy())


# ---------------------------------------------------------------------------------------------- the assets


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_the_tiny_backbones_load_like_hub_checkpoints(kind, tmp_path, caplog):
    path = tiny_summarizer_path(kind)
    assert AutoConfig.from_pretrained(path).model_type == kind
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 2_000_000, size
    record = json.loads((path / "pretraining.json").read_text())
    assert record["recipe"] == "recipes/pretrain_tiny_summarizers.py"
    tokenizer = AutoTokenizer.from_pretrained(path)
    example = make_example("test", 0)
    ids = tokenizer(example.summary)["input_ids"]
    assert tokenizer.unk_token_id not in ids[:-1] or ":" in example.summary
    assert tokenizer.decode(ids, skip_special_tokens=True).split()[0] == example.topic
    model, tokenizer = load_summarizer(kind, video_feature_dim=64)
    assert hasattr(model, "fusion") and model.config.video_feature_dim == 64
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        wider, _ = load_summarizer(str(tmp_path), video_feature_dim=32)
    assert wider.fusion.video_encoder.projection.in_features == 32
    assert wider.config.reinitialized_modules == ["fusion.video_encoder.projection"]
    assert sum("built anew" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------------- the recipe

TINY = ["--max-steps", "4", "--train-size", "16", "--validation-size", "8", "--eval-size", "8", "--quiet"]


def recipe(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "recipes/video_summarization.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PEFT_VIDEO_TRACEBACK": ""},
    )


def test_recipe_trains_generates_and_reports_on_the_synthetic_world(tmp_path):
    out = tmp_path / "read"
    proc = recipe("--method", "read", "--pvla", "0.1", "--output-dir", str(out), "--seeds", "0", "1", *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [run["seed"] for run in results["runs"]] == [0, 1]
    row = results["summary"][0]
    assert row["method"] == "read+pvla0.1" and row["seeds"] == 2
    for key in ("rouge1", "rouge2", "rougeL", "video_only_words", "both_objects_named"):
        assert 0 <= row[key] <= 100
    assert (out / "scores_vs_params.png").is_file() and "| read+pvla0.1 |" in (out / "results.md").read_text()
    lines = (out / "seed0" / "summaries.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {"id", "summary", "reference"} <= set(json.loads(lines[0]))


@pytest.mark.slow
def test_recipe_on_t5_saves_only_the_adapter_and_the_fusion(tmp_path):
    out = tmp_path / "lora"
    proc = recipe("--method", "lora", "--backbone", "t5", "--output-dir", str(out), "--save", *TINY)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    saved = set(load_file(out / "seed0" / "model" / "adapter_model.safetensors"))
    assert saved and all("lora_" in n or ".fusion." in n for n in saved)
    assert any("lora_" in n for n in saved) and any(".fusion." in n for n in saved)


@pytest.mark.slow
def test_recipe_on_how2_and_jsonl_data(tmp_path):
    examples, features = build_split("train", 12, seed=0)
    feature_dir = tmp_path / "features"
    feature_dir.mkdir()
    for example in examples:
        np.save(feature_dir / f"{example.id}.npy", features(example.record()).numpy())
    for name, part in (("train", examples[:8]), ("test", examples[8:])):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "tran.tok.txt").write_text("".join(f"{e.id} {e.transcript}\n" for e in part))
        (directory / "desc.tok.txt").write_text("".join(f"{e.id} {e.summary}\n" for e in part))
        rows = [{"id": e.id, "transcript": e.transcript, "summary": e.summary} for e in part]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--feature-dir", str(feature_dir), "--max-steps", "2", "--batch-size", "4", "--quiet"]
    how2 = recipe(
        "--method", "frozen", "--train-dir", str(tmp_path / "train"), "--eval-dir", str(tmp_path / "test"),
        "--output-dir", str(tmp_path / "out_how2"), *common,
    )  # fmt: skip
    assert how2.returncode == 0, how2.stdout[-2000:] + how2.stderr[-3000:]
    row = json.loads((tmp_path / "out_how2" / "results.json").read_text())["summary"][0]
    assert (
        "rougeL" in row and "video_only_words" not in row
    )  # synthetic-only scores are not computed on real data
    jsonl = recipe(
        "--method", "bitfit", "--train-file", str(tmp_path / "train.jsonl"), "--eval-file",
        str(tmp_path / "test.jsonl"), "--output-dir", str(tmp_path / "out_jsonl"), *common,
    )  # fmt: skip
    assert jsonl.returncode == 0, jsonl.stdout[-2000:] + jsonl.stderr[-3000:]
    (feature_dir / f"{examples[9].id}.npy").unlink()
    missing = recipe(
        "--method", "frozen", "--train-dir", str(tmp_path / "train"), "--eval-dir", str(tmp_path / "test"),
        "--output-dir", str(tmp_path / "out_missing"), *common,
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"video '{examples[9].id}' has no feature file" in missing.stderr
    assert str(feature_dir / f"{examples[9].id}.npy") in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pvla", "-1"], "`--pvla` must be a weight >= 0"),
        (["--text-only", "--pvla", "0.1"], "`--text-only` has no video"),
        (["--method", "prompt", "--pvla", "0.1"], "not supported"),
        (["--train-dir", "nowhere"], "`--train-dir` and `--eval-dir` go together"),
        (["--max-steps", "0"], "`--max-steps` must be a positive integer"),
        (["--backbone", "./no_such_model_dir"], "backbone './no_such_model_dir'"),
    ],
)
def test_recipe_errors_are_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    """In process (the recipe's ``main`` under ``run_recipe``, as ``__main__`` runs it); the subprocess path is
    exercised by the How2 test's missing feature file."""
    import importlib.util

    from peft_video.tasks.cli import TRACEBACK_ENV, run_recipe

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    spec = importlib.util.spec_from_file_location(
        "video_summarization", ROOT / "recipes" / "video_summarization.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(module.main, [*args, "--output-dir", str(tmp_path), "--quiet"])
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0], error


@pytest.mark.slow
def test_quick_demo_part_shows_the_video_helps(tmp_path):
    """The reduced demo: the text-only model is at chance on the words only the video shows; the vision-guided
    models are above it (about 1.5 minutes on one core)."""
    proc = subprocess.run(
        [
            sys.executable, "recipes/demo.py", "--quick", "--tasks", "summarization", "--output-dir", str(tmp_path),
            "--methods", "text-only full", "frozen", "read", "--quiet",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "summarization"
    rows = {row["method"]: row for row in json.loads((out / "results.json").read_text())["summary"]}
    assert abs(rows["text-only full"]["video_only_words"] - VIDEO_ONLY_CHANCE) <= 8
    best = max(rows[m]["video_only_words"] for m in ("frozen", "read"))
    assert best >= rows["text-only full"]["video_only_words"] + 6
    assert (out / "scores_vs_params.png").is_file()
