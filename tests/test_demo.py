"""The demo's claim, on a reduced run: frame-wise methods are at chance on order-only pairs, the temporal ones
(READ, RAP, TokenMix) clearly above. Slow (about 2.5 minutes on 2 CPU cores): CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

FRAME_WISE = ("frozen", "full", "lora")
TEMPORAL = ("read", "rap", "token_mix")
CHANCE_BAND = 0.02  # mean pooling makes a clip and its reversal identical: exactly 50% up to rounding
MARGIN = 0.08  # "clearly above": every temporal method beats the best frame-wise one by this much


@pytest.mark.slow
def test_quick_demo_separates_temporal_from_frame_wise_methods(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/demo.py",
            "--quick",
            "--tasks",
            "retrieval",
            "--output-dir",
            str(tmp_path),
            "--methods",
            *FRAME_WISE,
            *TEMPORAL,
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "retrieval"
    rows = {row["method"]: row for row in json.loads((out / "results.json").read_text())["summary"]}
    assert set(FRAME_WISE + TEMPORAL) <= set(rows), sorted(rows)
    assert (out / "scores_vs_params.png").is_file() and "| method |" in (out / "results.md").read_text()
    for method in FRAME_WISE:
        assert abs(rows[method]["order_v2t"] - 0.5) <= CHANCE_BAND, (method, rows[method]["order_v2t"])
    best_frame_wise = max(rows[m]["order_v2t"] for m in FRAME_WISE)
    for method in TEMPORAL:
        assert rows[method]["order_v2t"] >= best_frame_wise + MARGIN, (method, rows[method]["order_v2t"])
    for method in ("full", "lora", *TEMPORAL):  # training helps retrieval too
        assert rows[method]["t2v_R@1"] > rows["frozen"]["t2v_R@1"], method


def _demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "recipes/demo.py", "--quick", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )


def test_tasks_run_side_by_side_in_child_processes(tmp_path):
    """--jobs 2 runs each task's part in its own process; both write their results and the runner sums up."""
    proc = _demo("--tasks", "grounding", "captioning", "--jobs", "2", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for task in ("grounding", "captioning"):
        assert (tmp_path / task / "results.json").is_file(), task
        assert f"results, table and plot in {tmp_path / task}/" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("peft-video demo: grounding, captioning in ")


def test_a_failing_part_fails_the_demo_naming_the_task(tmp_path):
    """A child that fails (here: its output folder cannot be made, a file is in the way) ends the demo with exit
    code 2 and one line naming each failed task, after the child's own error line."""
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    proc = _demo("--tasks", "grounding", "captioning", "--output-dir", str(blocked))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "demo.py: error: demo part(s) failed: grounding (exit code 2), captioning (exit code 2)"
    )
    assert sum(line.startswith("demo.py: error: ") for line in lines) == 3, lines
    assert "Traceback" not in proc.stderr


def test_methods_no_task_runs_are_an_error_before_anything_trains(tmp_path):
    proc = _demo("--tasks", "grounding", "captioning", "--methods", "rap", "--output-dir", str(tmp_path))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("demo.py: error: `--methods` got ['rap'], which no chosen")
    )
    assert not any(tmp_path.iterdir())
