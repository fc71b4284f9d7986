"""recipes/video_captioning.py end to end on tiny budgets: outputs, real-format data, one-line errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from peft_video.tasks.cli import run_recipe as run_main
from tests.helpers import ROOT

RECIPE = "recipes/video_captioning.py"
TINY = ["--max-steps", "4", "--eval-every", "2", "--batch-size", "4", "--no-meteor", "--quiet"]


def run_recipe(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, RECIPE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )


def test_synthetic_run_writes_captions_metrics_and_the_report(tmp_path):
    sizes = ["--train-videos", "16", "--val-videos", "4", "--eval-videos", "8", "--num-frames", "4"]
    proc = run_recipe("--method", "frozen", "token_mix", *sizes, *TINY, "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = {row["method"]: row for row in json.loads((tmp_path / "results.json").read_text())["summary"]}
    assert set(summary) == {"frozen", "token_mix"}
    assert (tmp_path / "scores_vs_params.png").is_file() and "| token_mix |" in (
        tmp_path / "results.md"
    ).read_text()
    for method in ("frozen", "token_mix"):
        captions = json.loads((tmp_path / "seed0" / method / "captions.json").read_text())
        assert len(captions) == 8 and set(captions[0]) == {"image_id", "caption"}
        metrics = json.loads((tmp_path / "seed0" / method / "metrics.json").read_text())
        assert {"Bleu_4", "ROUGE_L", "CIDEr", "temporal_fact_accuracy", "encoder_updated_params"} <= set(
            metrics
        )
    frozen = summary["frozen"]
    assert frozen["trainable_params"] == 0 and frozen["steps"] == 0
    # frame-wise: a clip and its reversal get the same caption, so no order-only pair is fully right
    assert frozen["temporal_pair_accuracy"] == 0.0 and frozen["temporal_fact_accuracy"] <= 50.0
    pairs = json.loads((tmp_path / "seed0" / "frozen" / "captions.json").read_text())
    assert all(pairs[i]["caption"] == pairs[i + 1]["caption"] for i in range(0, 8, 2))
    mixed = json.loads((tmp_path / "seed0" / "token_mix" / "metrics.json").read_text())
    assert mixed["steps"] == 4 and mixed["selected_step"] in (2, 4)
    assert [h["step"] for h in mixed["validation"]] == [2, 4]


def make_real_data(root, broken: bool = False):
    videos = root / "videos"
    for index in range(3):
        folder = videos / f"v{index}"
        folder.mkdir(parents=True)
        for k in range(5):
            pixel = np.full((40, 48, 3), 40 * index + 10 * k, np.uint8)
            Image.fromarray(pixel).save(folder / f"{k}.jpg")
    if broken:
        (videos / "bad.mp4").write_bytes(b"garbage")
    train = [{"video": f"v{i}", "caption": "a red circle moves up", "video_id": f"v{i}"} for i in range(3)]
    if broken:
        train.append({"video": "bad.mp4", "caption": "a thing", "video_id": "bad7"})
    test = [{"video": "v0", "caption": ["a red circle moves up", "a circle rises"], "video_id": "v0"}]
    (root / "train.json").write_text(json.dumps(train))
    (root / "test.json").write_text(json.dumps(test))
    return videos


@pytest.mark.slow
def test_real_format_data_and_save(tmp_path):
    videos = make_real_data(tmp_path, broken=True)
    args = [
        "--train-annotations",
        str(tmp_path / "train.json"),
        "--eval-annotations",
        str(tmp_path / "test.json"),
    ]
    args += ["--video-root", str(videos), "--num-frames", "3", "--method", "lora", *TINY]
    proc = run_recipe(*args, "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and "bad7" in proc.stderr and "--skip-bad-videos" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_recipe(*args, "--skip-bad-videos", "--save", "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    captions = json.loads((tmp_path / "out" / "seed0" / "lora" / "captions.json").read_text())
    assert [c["image_id"] for c in captions] == ["v0"]
    assert (tmp_path / "out" / "seed0" / "lora" / "model" / "adapter_model.safetensors").is_file()
    metrics = json.loads((tmp_path / "out" / "seed0" / "lora" / "metrics.json").read_text())
    assert (
        metrics["selected_step"] == 4 and metrics["validation"] is None
    )  # no validation split: the last step
    assert "temporal_fact_accuracy" not in metrics  # real data: caption metrics only
    gt = {
        "images": [{"id": "v0"}],
        "annotations": [{"image_id": "v0", "id": 1, "caption": "zebras sleeping quietly"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    proc = run_recipe(
        *args,
        "--skip-bad-videos",
        "--eval-gt",
        str(tmp_path / "gt.json"),
        "--output-dir",
        str(tmp_path / "gt"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with_gt = json.loads((tmp_path / "gt" / "seed0" / "lora" / "metrics.json").read_text())
    assert metrics["Bleu_1"] > 1.0 and with_gt["Bleu_1"] < 1e-9  # scored against the ground truth's words


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lora", "--blocks", "0"], "--blocks"),
        (["--min-length", "9", "--max-length", "5"], "--min-length"),
        (["--train-annotations", "train.json"], "go together"),
        (["--train-annotations", "nope.json", "--eval-annotations", "nope.json"], "no such file"),
        (["--backbone", "./missing_dir"], "no such directory"),
        (["--num-frames", "0"], "--num-frames"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, args, message, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))
    recipe = importlib.import_module("video_captioning")
    with pytest.raises(SystemExit) as exit_info:
        run_main(recipe.main, [*args, "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_demo_part_returns_runs_columns_and_series(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))
    recipe = importlib.import_module("video_captioning")
    part = recipe.demo(
        seeds=[0], quick=True, quiet=True, threads=1, output_dir=tmp_path, methods=["frozen"], max_steps=2
    )
    assert [run["method"] for run in part["runs"]] == ["frozen"]
    assert part["columns"] == recipe.CAPTION_COLUMNS and "CIDEr" in part["keys"]
    assert (tmp_path / "seed0" / "frozen" / "captions.json").is_file()
    assert "captioning" in importlib.import_module("demo").TASK_RECIPES
