"""Bad input to the retrieval recipe ends in one clear line on stderr and exit code 2, never a traceback; the library
calls underneath raise errors that name the argument or record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_video.data import VideoTextCollator, build_tiny_clip_processor, load_video_text_dataset
from tests.helpers import ROOT
from tests.test_video_loading import write_video

RECIPE = "recipes/text_video_retrieval.py"


def run_recipe(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    for name, value in list(environment.items()):
        if value is None:
            del environment[name]
    return subprocess.run(
        [sys.executable, RECIPE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe_media")
    write_video(root / "good_a.mp4")
    write_video(root / "good_b.mp4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


def annotations(path: Path, records: list[dict]) -> str:
    path.write_text(json.dumps(records))
    return str(path)


def test_missing_local_backbone_is_a_missing_path_not_a_hub_id():
    proc = run_recipe("--backbone", "/nonexistent/clip", "--max-steps", "1")
    assert_one_line_error(proc, "`backbone` '/nonexistent/clip': no such file or directory")


@pytest.mark.parametrize("offline", ["1", None])
def test_uncached_hub_id_says_so_and_how_to_use_a_local_copy(offline):
    # a closed port stands in for "no network": the recipe must say so at once instead of retrying for a minute
    env = {
        "HF_HUB_OFFLINE": offline,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": "/tmp/peft-video-empty-hf",
    }
    proc = run_recipe("--backbone", "someone/clip-not-cached", "--max-steps", "1", env=env)
    line = assert_one_line_error(
        proc, "'someone/clip-not-cached' is not in the local Hugging Face cache", "--local-dir"
    )
    assert ("HF_HUB_OFFLINE" in line) == (offline == "1")


def test_arguments_are_checked_before_anything_loads():
    # the frame count is refused although the backbone does not exist either: nothing was loaded first
    proc = run_recipe("--num-frames", "0", "--backbone", "/nonexistent/clip")
    assert_one_line_error(proc, "`--num-frames` must be a positive integer, got 0")
    assert_one_line_error(run_recipe("--batch-size", "3"), "`--batch-size` must be even")
    assert_one_line_error(
        run_recipe("--data", "/nope.json", "--eval-data", "/nope.json"), "`--data` '/nope.json'"
    )


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("", ".json", "is empty: expected JSON records"),
        ("[", ".json", "is not valid JSON"),
        ("[]", ".json", "holds no records"),
        ("video,caption\n", ".csv", "holds no records"),
    ],
)
def test_empty_or_broken_annotation_files_name_the_file(tmp_path, content, suffix, message):
    path = tmp_path / f"annotations{suffix}"
    path.write_text(content)
    proc = run_recipe("--data", str(path), "--eval-data", str(path), "--method", "frozen")
    assert_one_line_error(proc, str(path), message)


def test_corrupt_video_is_named_and_can_be_skipped_with_a_count(tmp_path, media):
    records = [
        {"video": str(media / "good_a.mp4"), "caption": "a red circle grows", "video_id": "a"},
        {"video": str(media / "broken.mp4"), "caption": "a blue square shrinks", "video_id": "broken"},
        {"video": str(media / "good_b.mp4"), "caption": "a green cross appears", "video_id": "b"},
    ]
    data = annotations(tmp_path / "data.json", records)
    common = (
        "--data",
        data,
        "--eval-data",
        data,
        "--method",
        "frozen",
        "--quiet",
        "--output-dir",
        str(tmp_path),
    )
    assert_one_line_error(run_recipe(*common), "broken.mp4", "video_id 'broken'", "skip_bad_videos")
    proc = run_recipe(*common, "--skip-bad-videos")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 of 3 records" in proc.stderr and "['broken']" in proc.stderr
    assert json.loads((tmp_path / "results.json").read_text())[0]["eval_videos"] == 2


@pytest.mark.parametrize("caption", ["", "   ", None])
def test_empty_captions_are_rejected_with_the_record(tmp_path, media, caption):
    records = [{"video": str(media / "good_a.mp4"), "caption": caption, "video_id": "clip7"}]
    with pytest.raises(ValueError, match=r"annotation 0 \(video_id 'clip7'\).*non-empty text"):
        load_video_text_dataset(records, num_frames=2, image_size=16)
    data = annotations(tmp_path / "data.json", records)
    proc = run_recipe("--data", data, "--eval-data", data, "--method", "frozen")
    assert_one_line_error(proc, "video_id 'clip7'", "non-empty text")
    collate = VideoTextCollator.from_processor(build_tiny_clip_processor())
    import numpy as np

    row = {"frames": np.zeros((2, 16, 16, 3), np.uint8), "caption": caption, "video_id": "clip7"}
    with pytest.raises(ValueError, match="record 'clip7': the caption must be non-empty text"):
        collate([row])
