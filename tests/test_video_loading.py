"""Real-data loader: decode video files PyAV wrote here and frame folders, sample uniformly, same columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peft_video.data import (
    COLUMNS,
    VideoTextCollator,
    build_tiny_clip_processor,
    load_video_text_dataset,
    make_video_dataset,
    uniform_indices,
)

NUM_SOURCE_FRAMES = 20
# distinct, saturated colours survive lossy yuv420p coding well
PALETTE = np.array(
    [[(37 * i) % 256, (91 * i + 60) % 256, (151 * i + 120) % 256] for i in range(NUM_SOURCE_FRAMES)],
    dtype=np.uint8,
)


def write_video(path: Path, codec: str = "mpeg4", width: int = 64, height: int = 48) -> None:
    """A clip whose frame i is one solid colour, PALETTE[i]."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for colour in PALETTE:
            image = np.broadcast_to(colour, (height, width, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frame_folder(folder: Path, width: int = 40, height: int = 30) -> None:
    """frame_1.png ... frame_20.png (unpadded numbers: the loader must sort them naturally)."""
    folder.mkdir(parents=True)
    for i, colour in enumerate(PALETTE):
        Image.fromarray(np.broadcast_to(colour, (height, width, 3)).copy()).save(
            folder / f"frame_{i + 1}.png"
        )


def assert_colours(frames: np.ndarray, num_frames: int, tolerance: float) -> None:
    expected = PALETTE[uniform_indices(NUM_SOURCE_FRAMES, num_frames)].astype(np.float32)
    observed = frames.reshape(num_frames, -1, 3).astype(np.float32).mean(axis=1)
    np.testing.assert_allclose(observed, expected, atol=tolerance)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "clip_mp4.mp4")
    write_video(root / "clip_mkv.mkv")
    write_frame_folder(root / "clip_frames")
    return root


@pytest.mark.parametrize("name", ["clip_mp4.mp4", "clip_mkv.mkv"])
def test_decodes_video_files_with_uniform_sampling(media, name):
    annotations = [{"video": str(media / name), "caption": "a clip of colours"}]
    dataset = load_video_text_dataset(annotations, num_frames=5, image_size=32)
    row = dataset[0]
    assert row["frames"].shape == (5, 32, 32, 3) and row["frames"].dtype == np.uint8
    assert row["video_id"] == Path(name).stem and row["caption"] == "a clip of colours"
    assert_colours(row["frames"], 5, tolerance=12)


def test_frame_folder_is_sorted_naturally_and_sampled_uniformly(media):
    dataset = load_video_text_dataset(
        [{"video": str(media / "clip_frames"), "caption": "x"}], num_frames=7, image_size=24
    )
    assert dataset[0]["frames"].shape == (7, 24, 24, 3)
    assert_colours(dataset[0]["frames"], 7, tolerance=0.5)


def test_columns_and_features_match_the_synthetic_world(media):
    dataset = load_video_text_dataset(
        [{"video": str(media / "clip_mp4.mp4"), "caption": "x"}], num_frames=8, image_size=32, split="test"
    )
    synthetic = make_video_dataset("test", 2, num_frames=8, image_size=32)
    assert dataset.column_names == synthetic.column_names == list(COLUMNS)
    assert dataset.features == synthetic.features
    assert dataset[0]["order_pair_id"] == -1 and dataset[0]["split"] == "test"


def test_annotation_formats_resolve_videos_by_id(media):
    msrvtt = media / "msrvtt.json"
    msrvtt.write_text(
        json.dumps(
            {
                "videos": [],
                "sentences": [
                    {"video_id": "clip_mp4", "caption": "first caption", "sen_id": 0},
                    {"video_id": "clip_frames", "caption": "second caption", "sen_id": 1},
                ],
            }
        )
    )
    table = media / "pairs.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video_id", "sentence"])
        writer.writeheader()
        writer.writerow({"video_id": "clip_mkv", "sentence": "third caption"})
    lines = media / "pairs.jsonl"
    lines.write_text(json.dumps({"video": "clip_frames", "caption": "fourth caption"}) + "\n")

    from_json = load_video_text_dataset(msrvtt, num_frames=4, image_size=16)
    assert from_json["caption"][:] == ["first caption", "second caption"]
    assert from_json["video_id"][:] == ["clip_mp4", "clip_frames"]
    from_csv = load_video_text_dataset(table, video_root=media, num_frames=4, image_size=16)
    assert from_csv["caption"][:] == ["third caption"]
    from_jsonl = load_video_text_dataset(
        lines, num_frames=4, image_size=16
    )  # relative to the annotation file
    assert_colours(from_jsonl[0]["frames"], 4, tolerance=0.5)


def test_lazy_decoding_gives_the_same_rows(media):
    annotations = [
        {"video": str(media / "clip_mp4.mp4"), "caption": "a"},
        {"video": str(media / "clip_frames"), "caption": "b"},
    ]
    eager = load_video_text_dataset(annotations, num_frames=6, image_size=32)
    lazy = load_video_text_dataset(annotations, num_frames=6, image_size=32, lazy=True)
    for i in range(2):
        a, b = eager[i], lazy[i]
        assert set(b) == set(COLUMNS)
        np.testing.assert_array_equal(np.asarray(b["frames"]), a["frames"])
        assert (a["caption"], a["video_id"]) == (b["caption"], b["video_id"])


def test_collator_batches_real_frames(media):
    dataset = load_video_text_dataset(
        [{"video": str(media / "clip_mp4.mp4"), "caption": "a red circle"}] * 2, num_frames=4, image_size=48
    )
    collator = VideoTextCollator.from_processor(build_tiny_clip_processor())
    batch = collator([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)  # resized to the model's 32x32
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 2


def test_missing_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        load_video_text_dataset([{"video": str(tmp_path / "nowhere.mp4"), "caption": "x"}])
    with pytest.raises(ValueError, match="text field"):
        load_video_text_dataset([{"video": "x.mp4"}])
    with pytest.raises(ValueError, match="`num_frames`"):
        load_video_text_dataset([{"video": "x.mp4", "caption": "x"}], num_frames=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_video_text_dataset([{"video": str(tmp_path / "empty"), "caption": "x"}])
    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="json, .jsonl or .csv"):
        load_video_text_dataset(bad)


@given(st.integers(1, 500), st.integers(1, 64))
def test_uniform_indices_are_in_range_sorted_and_centred(available, wanted):
    indices = uniform_indices(available, wanted)
    assert len(indices) == wanted
    assert all(0 <= i < available for i in indices)
    assert indices == sorted(indices)
    if available >= wanted:
        assert len(set(indices)) == wanted  # no repeats when there are enough frames
    for i, index in enumerate(indices):  # each index sits in the middle of its equal segment
        assert abs(index - min(available - 1, (i + 0.5) * available / wanted)) < 1
