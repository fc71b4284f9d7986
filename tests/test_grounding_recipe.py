"""The temporal grounding recipe end to end: the synthetic world under ``accelerate launch``, predictions in the official
QVHighlights submission format that the scorer reads back to the reported numbers, real data in Moment-DETR's layout
with feature widths the backbone does not have, validation carved from whole training videos, and bad input ending in
one line and exit code 2."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peft_video.tasks.grounding import GroundingModel, tiny_grounding_path
from peft_video.tasks.grounding.metrics import SUBMISSION_FIELDS, qvhighlights_scores, read_submission
from tests.helpers import ROOT
from tests.test_grounding_data import QV_ROW, _highlight_layout, write_qv_layout

sys.path.insert(0, str(ROOT / "recipes"))
import temporal_grounding as recipe  # noqa: E402

TINY_WORLD = [
    *("--max-steps", "4", "--eval-steps", "2", "--batch-size", "8"),
    *("--train-videos", "3", "--val-videos", "2", "--eval-videos", "2"),
]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def world_run(tmp_path_factory) -> Path:
    """One tiny run of three methods on two synthetic domains under ``accelerate launch`` (one CPU process)."""
    out = tmp_path_factory.mktemp("grounding_world")
    command = [
        sys.executable,
        *("-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--cpu"),
        "recipes/temporal_grounding.py",
        *("--method", "frozen", "read+pvla", "lora", "--domains", "approach", "colours"),
        *TINY_WORLD,
        *("--output-dir", str(out), "--save", "--quiet"),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_world_run_writes_tables_plots_and_per_run_files(world_run):
    for folder in (world_run, world_run / "approach", world_run / "colours"):
        assert (folder / "scores_vs_params.png").stat().st_size > 0
        table = (folder / "results.md").read_text()
        assert "| method | trainable params | R1@0.5 |" in table and "read+pvla" in table
    summary = {row["method"]: row for row in json.loads((world_run / "results.json").read_text())["summary"]}
    assert set(summary) == {"frozen", "read+pvla", "lora"}
    assert summary["frozen"]["trainable_params"] == 0 < summary["read+pvla"]["trainable_params"]
    run = json.loads((world_run / "approach" / "seed0" / "read+pvla" / "metrics.json").read_text())
    assert run["pvla_weight"] == 0.1 and run["steps"] == 4 and run["best_step"] in (2, 4)
    assert run["validation_metric"] == "MR-full-mAP" and [s for s, _ in run["validation_history"]] == [2, 4]
    assert (world_run / "approach" / "seed0" / "read+pvla" / "model" / "adapter_model.safetensors").is_file()
    assert not (
        world_run / "approach" / "seed0" / "frozen" / "model"
    ).exists()  # nothing trained, nothing saved


def test_predictions_are_the_official_submission_format_and_rescore_to_the_reported_metrics(world_run):
    from peft_video.tasks.grounding import build_split

    run = world_run / "colours" / "seed0" / "lora"
    rows = read_submission(run / "predictions.jsonl")
    for line in (run / "predictions.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == set(SUBMISSION_FIELDS)
    test = build_split("colours", "test", 2, seed=0)
    assert [r["qid"] for r in rows] == [r.qid for r in test.records]
    for row, record in zip(rows, test.records, strict=True):
        assert row["vid"] == record.vid and row["query"] == record.query
        windows = row["pred_relevant_windows"]
        assert len(windows) == 10 and all(0 <= s < e <= record.duration for s, e, _ in windows)
        assert [w[2] for w in windows] == sorted((w[2] for w in windows), reverse=True)
        assert len(row["pred_saliency_scores"]) == round(record.duration / 2.0)
    scores = qvhighlights_scores(rows, [r.as_annotation() for r in test.records], decimals=None)
    reported = json.loads((run / "metrics.json").read_text())
    for key in ("MR-full-mAP", "MR-full-R1@0.5", "HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"):
        assert math.isclose(scores[key], reported[key], abs_tol=1e-9), key


# --------------------------------------------------------------------------------------------------- real data


def real_layout(root: Path, videos: int = 6) -> tuple[Path, list[Path], Path]:
    rows = [{**QV_ROW, "qid": i, "vid": f"video{i}"} for i in range(videos)]
    annotations, dirs, query_dir, _ = write_qv_layout(root, rows, clips=10, dims=(6, 4), text_dim=5)
    return annotations, dirs, query_dir


def real_args(root: Path, annotations: Path, dirs: list[Path], query_dir: Path, *extra: str) -> list[str]:
    return [
        *("--train-annotations", str(annotations), "--eval-annotations", str(annotations)),
        *("--video-feature-dirs", *map(str, dirs), "--text-feature-dir", str(query_dir)),
        *("--max-steps", "2", "--eval-steps", "1", "--batch-size", "4", "--quiet"),
        *("--output-dir", str(root / "out")),
        *extra,
    ]


def test_real_features_of_other_widths_rebuild_the_projections_which_every_method_trains(tmp_path, caplog):
    annotations, dirs, query_dir = real_layout(tmp_path)
    with caplog.at_level(logging.WARNING, logger="peft_video.tasks.grounding.modeling"):
        runs = recipe.main(real_args(tmp_path, annotations, dirs, query_dir, "--method", "frozen", "read"))
    rebuilt = [r for r in caplog.records if "rebuilt" in r.getMessage()]
    assert len(rebuilt) == 2 and "video_projection (64 -> 10 features)" in rebuilt[0].getMessage()
    tiny = GroundingModel.from_pretrained(tiny_grounding_path())
    rebuilt = GroundingModel.from_pretrained(tiny_grounding_path(), video_feature_dim=10, text_feature_dim=5)
    projections = sum(
        p.numel()
        for name in ("video_projection", "text_projection")
        for p in getattr(rebuilt, name).parameters()
    )
    by_method = {row["method"]: row for row in runs}
    assert by_method["frozen"]["trainable_params"] == projections  # frozen trains only the new projections
    assert by_method["read"]["trainable_params"] > projections
    assert by_method["frozen"]["rebuilt_modules"] == ["video_projection", "text_projection"]
    assert tiny.config.video_feature_dim == 64  # the shipped model itself is untouched
    assert (
        by_method["read"]["domain"] == "data" and by_method["read"]["train_queries"] == 5
    )  # 1 of 6 held out
    assert (tmp_path / "out" / "data" / "seed0" / "read" / "predictions.jsonl").is_file()
    (tmp_path / "out" / "data" / "seed0" / "read" / "predictions.jsonl").unlink()
    args = real_args(tmp_path, annotations, dirs, query_dir, "--method", "frozen", "read", "--resume")
    again = {row["method"]: row for row in recipe.main(args)}  # read back, not run again
    assert again["read"]["MR-full-mAP"] == by_method["read"]["MR-full-mAP"]
    assert not (tmp_path / "out" / "data" / "seed0" / "read" / "predictions.jsonl").exists()


def test_youtube_highlights_files_train_one_model_per_domain_scored_by_umt_map(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {"vid": f"{domain}{i}", "query": domain, "duration": 8.0, "domain": domain, "label": label}
        for domain in ("dog", "gym")
        for i in range(4)
        for label in [[[int(v)] for v in rng.integers(0, 2, size=8)]]
    ]
    annotations, video_dir, query_dir = _highlight_layout(tmp_path, rows)
    argv = [
        *(
            "--format",
            "youtube",
            "--train-annotations",
            str(annotations),
            "--eval-annotations",
            str(annotations),
        ),
        *(
            "--video-feature-dirs",
            str(video_dir),
            "--text-feature-dir",
            str(query_dir),
            "--val-fraction",
            "0.25",
        ),
        *("--method", "adapter", "--max-steps", "2", "--eval-steps", "1", "--batch-size", "2", "--quiet"),
        *("--output-dir", str(tmp_path / "out")),
    ]
    runs = recipe.main(argv)
    assert [r["domain"] for r in runs] == ["dog", "gym"] and all(r["train_queries"] == 3 for r in runs)
    for run in runs:
        assert run["validation_metric"] == "UMT-mAP" and 0 <= run["UMT-mAP"] <= 100
        assert "MR-full-mAP" not in run and "HL-min-VeryGood-mAP" not in run
    table = (tmp_path / "out" / "results.md").read_text()
    assert "highlight mAP (UMT)" in table and "R1@0.5" not in table


def test_validation_is_carved_from_whole_training_videos_with_a_fixed_draw(tmp_path):
    rows = [{**QV_ROW, "qid": i, "vid": f"video{i // 2}"} for i in range(20)]  # two queries per video
    annotations, dirs, query_dir, _ = write_qv_layout(tmp_path, rows, dims=(6,), text_dim=5)
    from peft_video.tasks.grounding import load_qvhighlights

    data = load_qvhighlights(annotations, dirs, query_dir)
    train, validation = recipe.carve_validation(data, 0.2)
    again, _ = recipe.carve_validation(data, 0.2)
    train_vids, val_vids = {r.vid for r in train.records}, {r.vid for r in validation.records}
    assert len(val_vids) == 2 and not train_vids & val_vids and len(train) + len(validation) == 20
    assert [r.qid for r in again.records] == [r.qid for r in train.records]


# --------------------------------------------------------------------------------------------------- bad input


def one_line_error(capsys, argv: list[str]) -> str:
    from peft_video.tasks.cli import run_recipe

    with pytest.raises(SystemExit) as exit_info:
        run_recipe(recipe.main, argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--method", "prompt"], "'prompt' does not apply to the grounding model (it reads pre-extracted"),
        (["--method", "rap+pvla"], "does not apply"),
        (["--method", "nonsense"], "unknown method"),
        (["--method", "read", "read"], "lists 'read' twice"),
        (["--max-steps", "0"], "`--max-steps` must be a positive integer, got 0"),
        (["--pvla", "-1"], "`--pvla` must be a weight >= 0"),
        (["--clip-length", "1"], "does not apply to the synthetic world"),
        (["--backbone", "no/such/dir"], "`--backbone` 'no/such/dir' is neither"),
        (["--train-annotations", "x.jsonl"], "real data needs ['--eval-annotations'"),
        (["--domains", "dog"], "`--domains` ['dog']: the synthetic world's target domains are"),
        (["--format", "tvsum"], "`--format` 'tvsum' describes annotation files"),
    ],
)
def test_bad_arguments_fail_before_loading_in_one_line(capsys, argv, fragment):
    assert fragment in one_line_error(capsys, argv)


def test_bad_records_and_features_are_named_with_their_qid(tmp_path, capsys):
    annotations, dirs, query_dir = real_layout(tmp_path)
    args = real_args(tmp_path, annotations, dirs, query_dir, "--method", "frozen")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**QV_ROW, "qid": 3, "relevant_windows": [[2, 30]]}) + "\n")
    message = one_line_error(capsys, [*args, "--val-annotations", str(bad)])
    assert "qid=3" in message and "0 <= start < end <= duration" in message
    (dirs[1] / "video4.npz").unlink()
    message = one_line_error(capsys, args)
    assert "qid=4 (vid='video4')" in message and "video1/video4.npz" in message and "not exist" in message
    np.savez(dirs[1] / "video4.npz", features=np.full((10, 4), np.nan, dtype=np.float32))
    message = one_line_error(capsys, args)
    assert "qid=4" in message and "NaN" in message


def test_a_subprocess_run_with_bad_input_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "recipes/temporal_grounding.py", "--method", "token_mix"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment(),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("temporal_grounding.py: error:")
    ]


@pytest.mark.slow  # a fresh interpreter and six short runs: about 35 s on one busy core
def test_quick_demo_part_runs_every_demo_method_through_the_demo_runner(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/demo.py",
            "--quick",
            "--tasks",
            "grounding",
            "--output-dir",
            str(tmp_path),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "grounding"
    rows = {row["method"]: row for row in json.loads((out / "results.json").read_text())["summary"]}
    assert list(rows) == list(recipe.DEMO_METHODS)
    params = [rows[m]["trainable_params"] for m in ("frozen", "adapter", "read", "lora", "full")]
    assert params == sorted(params) and params[0] == 0 and rows["read+pvla"]["trainable_params"] == params[2]
    for method, row in rows.items():
        assert 0 <= row["MR-full-mAP"] <= 100 and 0 <= row["HL-min-VeryGood-mAP"] <= 100, method
        assert (out / recipe.DEMO_DOMAIN / "seed0" / method / "predictions.jsonl").is_file()
    assert (out / "scores_vs_params.png").is_file() and "| read+pvla |" in (out / "results.md").read_text()


def test_validation_selection_restores_the_weights_of_the_best_scored_step(tmp_path):
    import torch
    from transformers import TrainingArguments

    from peft_video.tasks import prepare_model
    from peft_video.tasks.grounding import (
        GroundingTrainer,
        ValidationSelection,
        build_split,
        evaluate_grounding,
        load_grounding_backbone,
    )

    torch.manual_seed(0)
    train, validation = build_split("colours", "train", 3), build_split("colours", "validation", 2)
    model = prepare_model(load_grounding_backbone("tiny"), "lora")
    selection = ValidationSelection(validation, every=2)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=6,
        learning_rate=0.1,  # too large on purpose: training overshoots after the first steps
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    GroundingTrainer(model=model, args=args, train_dataset=train, callbacks=[selection]).train()
    assert [step for step, _ in selection.history] == [2, 4, 6]
    assert selection.best_step < 6  # the last step's weights were not the best: they were replaced
    assert selection.best_score == max(score for _, score in selection.history)
    assert evaluate_grounding(model, validation)[1]["MR-full-mAP"] == selection.best_score
    assert selection.seconds > 0
