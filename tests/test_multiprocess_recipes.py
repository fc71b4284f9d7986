"""The Trainer recipes under ``accelerate launch`` with two gloo processes on CPU: one data-parallel run, written once.

Each process trains the same replica (DDP averages the gradients), every process scores, and only the main process
writes metrics, predictions, the saved model and the report, and prints the result lines.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT

LAUNCH = [
    *("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
    *("--mixed_precision", "no", "--dynamo_backend", "no"),
]

RECIPES = {
    "captioning": [
        "recipes/video_captioning.py",
        *("--method", "lora", "--max-steps", "4", "--eval-every", "2", "--batch-size", "2"),
        *(
            "--train-videos",
            "8",
            "--val-videos",
            "4",
            "--eval-videos",
            "6",
            "--num-frames",
            "4",
            "--no-meteor",
        ),
    ],
    "summarization": [
        "recipes/video_summarization.py",
        *("--method", "lora", "--max-steps", "4", "--eval-steps", "2", "--batch-size", "2"),
        *("--train-size", "8", "--validation-size", "4", "--eval-size", "6"),
    ],
    "grounding": [
        "recipes/temporal_grounding.py",
        *("--method", "lora", "--domains", "approach", "--max-steps", "4", "--eval-steps", "2"),
        *("--batch-size", "2", "--train-videos", "3", "--val-videos", "2", "--eval-videos", "2"),
    ],
}
RESULT_LINE = {
    "captioning": "captioning lora",
    "summarization": "results and summaries in",
    "grounding": "grounding approach",
}


def free_port() -> int:
    """A port no other launch holds (the default, 29500, may still be closing after the previous launch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(task: str, output_dir: Path) -> subprocess.CompletedProcess:
    port = ("--main_process_port", str(free_port()))
    command = [
        sys.executable,
        *LAUNCH,
        *port,
        *RECIPES[task],
        "--output-dir",
        str(output_dir),
        "--save",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def run_files(task: str, output_dir: Path) -> tuple[dict, Path, int | None]:
    """The run's metrics, its predictions file and how many predictions the eval split must have."""
    if task == "captioning":
        run = output_dir / "seed0" / "lora"
        return json.loads((run / "metrics.json").read_text()), run / "captions.json", 6
    if task == "summarization":
        metrics = json.loads((output_dir / "results.json").read_text())["runs"][0]
        return metrics, output_dir / "seed0" / "summaries.jsonl", 6
    run = output_dir / "approach" / "seed0" / "lora"
    return json.loads((run / "metrics.json").read_text()), run / "predictions.jsonl", None


def count_predictions(path: Path) -> list[str]:
    """The ids of the written predictions, in order."""
    if path.suffix == ".json":
        return [str(row["image_id"]) for row in json.loads(path.read_text())]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [str(row.get("id", row.get("qid"))) for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(RECIPES))
def test_two_processes_train_one_data_parallel_run_and_write_once(task, tmp_path):
    proc = launch(task, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(RESULT_LINE[task]) == 1, (
        proc.stdout
    )  # the main process reports, the other is silent
    metrics, predictions, expected = run_files(task, tmp_path)
    assert metrics["processes"] == 2 and metrics["steps"] == 4
    ids = count_predictions(predictions)
    assert len(ids) == len(set(ids)) and (
        expected is None or len(ids) == expected
    )  # gathered once, none repeated
    saved = list((predictions.parent / "model").rglob("*.safetensors"))
    assert saved, f"no saved model under {predictions.parent / 'model'}"


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_gathered_generations_hold_the_dataset_first_then_the_padding(processes, batch_size):
    """What :func:`dataset_rows` relies on: Accelerate deals evaluation batches round robin and pads only the last
    ones (with the dataset's first samples), so concatenating each round's batches in process order gives the
    dataset, in order, before any repeated sample."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from peft_video.tasks.summarization.training import dataset_rows

    for size in range(1, 40):
        batches = BatchSampler(SequentialSampler(range(size)), batch_size, drop_last=False)
        shards = [
            list(BatchSamplerShard(batches, processes, rank, split_batches=False, even_batches=True))
            for rank in range(processes)
        ]
        assert len({len(shard) for shard in shards}) == 1  # every process runs the same number of steps
        gathered = [index for step in zip(*shards, strict=True) for batch in step for index in batch]
        assert list(dataset_rows(np.array(gathered), size)) == list(range(size)), (size, gathered)
