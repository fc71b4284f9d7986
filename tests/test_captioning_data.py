"""Captioning data: annotation files, frame sampling and padding, bad videos, long captions, temporal facts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from peft_video.data.synthetic import COLOURS, event_captions
from peft_video.data.synthetic import SceneObject as Obj
from peft_video.tasks.captioning.assets import build_tiny_blip_processor
from peft_video.tasks.captioning.data import (
    CaptionCollator,
    CaptionTrainingRows,
    decode_caption_videos,
    read_caption_annotations,
)
from peft_video.tasks.captioning.evaluation import synthetic_caption_videos
from peft_video.tasks.captioning.temporal import temporal_fact, temporal_fact_accuracy


def frame_folder(path, count: int, size: int = 24):
    path.mkdir(parents=True)
    for index in range(count):  # frame k is filled with grey level 10 * (k + 1)
        Image.fromarray(np.full((size, size, 3), 10 * (index + 1), np.uint8)).save(path / f"{index:03d}.png")
    return path


def write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_records_are_merged_per_video_and_resolved_against_the_root(tmp_path):
    path = write(
        tmp_path / "train.json",
        [
            {"video": "v1", "caption": "a  dog runs", "video_id": "1"},
            {"video": "v1", "caption": ["a dog is running"], "video_id": "1"},
            {"video": "v2", "caption": ["a cat"]},
        ],
    )
    records = read_caption_annotations(path, tmp_path / "videos")
    assert [(r.video_id, r.captions) for r in records] == [
        ("1", ("a dog runs", "a dog is running")),
        ("v2", ("a cat",)),
    ]
    assert records[0].video == str(tmp_path / "videos" / "v1")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"video": "v1", "caption": [], "video_id": "x7"}], r"record 0 \(video_id 'x7'\).*non-empty"),
        ([{"video": "v1", "caption": ["ok", " "], "video_id": "x7"}], "non-empty text"),
        ([{"caption": ["a"], "video_id": "x7"}], "no 'video'"),
        ([{"video": "v1", "video_id": "x7"}], "no 'caption'"),
        ({"video": "v1"}, "non-empty JSON list"),
        (
            [
                {"video": "a", "caption": "x", "video_id": "1"},
                {"video": "b", "caption": "y", "video_id": "1"},
            ],
            "two videos",
        ),
    ],
)
def test_bad_records_are_named(tmp_path, records, message):
    with pytest.raises(ValueError, match=message):
        read_caption_annotations(write(tmp_path / "a.json", records))


def test_missing_and_non_json_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_caption_annotations(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="not JSON"):
        read_caption_annotations(tmp_path / "bad.json")


def test_short_videos_repeat_frames_in_order(tmp_path):
    frame_folder(tmp_path / "v", 3)
    records = read_caption_annotations(write(tmp_path / "a.json", [{"video": "v", "caption": "x"}]), tmp_path)
    frames = decode_caption_videos(records, num_frames=8, image_size=16).frames[0]
    assert frames.shape == (8, 16, 16, 3)
    assert [int(f[0, 0, 0]) // 10 - 1 for f in frames] == [0, 0, 0, 1, 1, 2, 2, 2]


def test_a_corrupt_video_is_named_or_skipped_and_counted(tmp_path, caplog):
    frame_folder(tmp_path / "good", 4)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    path = write(
        tmp_path / "a.json",
        [
            {"video": "good", "caption": "x", "video_id": "g"},
            {"video": "broken.mp4", "caption": "y", "video_id": "b9"},
        ],
    )
    records = read_caption_annotations(path, tmp_path)
    with pytest.raises(ValueError, match=r"video_id 'b9'.*broken\.mp4.*--skip-bad-videos"):
        decode_caption_videos(records, 4, 16)
    with caplog.at_level("WARNING"):
        videos = decode_caption_videos(records, 4, 16, skip_bad_videos=True)
    assert videos.video_ids == ["g"] and videos.skipped == ["b9"]
    assert "skipped 1 of 2" in caplog.text


def test_long_captions_are_truncated_with_one_warning():
    processor = build_tiny_blip_processor()
    collator = CaptionCollator(processor.tokenizer, (0.5,) * 3, (0.5,) * 3, 32, max_length=8)
    long = "a small red circle moves left to right and then a large blue square appears"
    rows = [{"frames": np.zeros((2, 32, 32, 3), np.uint8), "caption": long, "video_id": "long1"}] * 2
    with pytest.warns(UserWarning, match=r"video_id 'long1' has 17 tokens.*limit of 8: truncated") as caught:
        batch = collator(rows)
    assert len(caught) == 1 and batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, -1] == processor.tokenizer.eos_token_id  # the end token survives truncation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collator(rows)  # warned once


def test_training_rows_pair_each_video_with_each_caption(tmp_path):
    frame_folder(tmp_path / "v", 2)
    path = write(tmp_path / "a.json", [{"video": "v", "caption": ["one", "two"], "video_id": "v"}])
    rows = CaptionTrainingRows(decode_caption_videos(read_caption_annotations(path, tmp_path), 2, 16))
    assert [row["caption"] for row in rows] == ["one", "two"]


def test_temporal_facts_of_every_event_and_its_reversal():
    a, b = Obj("circle", "red", "small"), Obj("square", "blue", "large")
    facts = set()
    for family in ("horizontal", "vertical", "size", "visibility", "approach", "sequence"):
        forward, backward = event_captions(family, a, b)
        assert temporal_fact(forward) is not None and temporal_fact(forward) != temporal_fact(backward)
        facts |= {temporal_fact(forward), temporal_fact(backward)}
    assert len(facts) == 12
    assert temporal_fact("a small red circle appears and then a large blue square appears") == (
        "appears and then",
        "red",
    )
    assert temporal_fact("a red circle") is None
    assert "red" in COLOURS


def test_temporal_fact_accuracy_and_pairs():
    refs = ["a red circle moves up", "a red circle moves down", "a red circle grows", "a red circle shrinks"]
    same = ["a blue circle moves up", "a red circle moves up", "a red circle grows", "a red circle grows"]
    scores = temporal_fact_accuracy(same, refs, order_pair_ids=[0, 0, 1, 1])
    assert scores == {"temporal_fact_accuracy": 0.5, "direction_accuracy": 0.5, "temporal_pair_accuracy": 0.0}
    wrong_event = ["a red circle grows", "a red circle appears", "a red circle grows", "a red circle shrinks"]
    scores = temporal_fact_accuracy(wrong_event, refs, order_pair_ids=[0, 0, 1, 1])
    assert (
        scores["direction_accuracy"] == 1.0 and scores["temporal_pair_accuracy"] == 0.5
    )  # only the size pair
    assert "direction_accuracy" not in temporal_fact_accuracy(same, refs)  # needs the pairs
    assert temporal_fact_accuracy(refs, refs, [0, 0, 1, 1])["temporal_pair_accuracy"] == 1.0
    with pytest.raises(ValueError, match="no temporal fact"):
        temporal_fact_accuracy(["x"], ["a red circle"])


def test_synthetic_splits_state_a_fact_per_video_and_hold_out_combinations():
    test, pairs = synthetic_caption_videos("test", 8, num_frames=4)
    train, _ = synthetic_caption_videos("train", 8, num_frames=4)
    assert len(test) == 8 and pairs == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(temporal_fact(r[0]) is not None for r in test.references)
    assert test.frames[0].shape == (4, 32, 32, 3)
    assert np.array_equal(
        test.frames[0], test.frames[1][::-1]
    )  # an order-only pair: the same frames reversed
    assert set(test.video_ids).isdisjoint(train.video_ids)
