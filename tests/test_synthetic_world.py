"""The synthetic video-text world: deterministic, truthful captions, exact order-only pairs, held-out combos."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from peft_video.data import (
    COLUMNS,
    FAMILIES,
    is_held_out,
    make_frame_dataset,
    make_video_dataset,
    split_combinations,
    video_text_features,
    vocabulary,
)
from peft_video.data.render import SHAPES
from peft_video.data.synthetic import COLOURS
from peft_video.tasks.retrieval.metrics import order_pair_accuracy


@pytest.fixture(scope="module")
def train_videos():
    return make_video_dataset("train", 160, seed=3)


@pytest.fixture(scope="module")
def test_videos():
    return make_video_dataset("test", 160, seed=3)


def parse(caption: str) -> tuple[str, str, str]:
    """(colour, shape, family) of the subject of a video caption, read from the words alone."""
    if " and then " in caption:
        first, second = caption.split(" and then ")
        subject, family = (first if first.endswith(" appears") else second), "sequence"
    else:
        subject = caption
        family = next(
            f
            for f, keys in (
                ("horizontal", ("left to right", "right to left")),
                ("vertical", ("moves up", "moves down")),
                ("size", ("grows", "shrinks")),
                ("approach", ("towards", "away from")),
                ("visibility", ("appears", "disappears")),
            )
            if any(k in caption for k in keys)
        )
    words = subject.split()
    colour = next(w for w in words if w in COLOURS)
    shape = next(w for w in words if w in SHAPES)
    return colour, shape, family


def colour_mask(frame: np.ndarray, colour: str, tol: float = 40.0) -> np.ndarray:
    return np.abs(frame.astype(np.float32) - np.asarray(COLOURS[colour], np.float32)).max(axis=-1) < tol


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_columns_and_features_follow_the_schema(train_videos):
    assert tuple(train_videos.column_names) == COLUMNS
    assert train_videos.features == video_text_features(8, 32, 32)
    row = train_videos[0]
    assert row["frames"].dtype == np.uint8 and row["frames"].shape == (8, 32, 32, 3)
    stills = make_frame_dataset("train", 4)
    assert tuple(stills.column_names) == COLUMNS
    assert stills.features == video_text_features(1, 32, 32)
    assert set(stills["order_pair_id"]) == {-1}


def test_same_seed_same_world_and_prefixes_are_stable():
    a, b = make_video_dataset("train", 8, seed=7), make_video_dataset("train", 8, seed=7)
    np.testing.assert_array_equal(a[:]["frames"], b[:]["frames"])
    assert a["caption"][:] == b["caption"][:]
    longer = make_video_dataset("train", 12, seed=7)
    np.testing.assert_array_equal(longer[:8]["frames"], a[:]["frames"])
    other = make_video_dataset("train", 8, seed=8)
    assert not np.array_equal(other[:]["frames"], a[:]["frames"])
    s1, s2 = make_frame_dataset("test", 6, seed=1), make_frame_dataset("test", 6, seed=1)
    np.testing.assert_array_equal(s1[:]["frames"], s2[:]["frames"])
    assert s1["caption"][:] == s2["caption"][:]


def test_order_pairs_are_exact_reversals_with_reversed_captions(train_videos, test_videos):
    for videos in (train_videos, test_videos):
        rows = videos[:]
        by_pair: dict[int, list[int]] = {}
        for i, pair in enumerate(rows["order_pair_id"]):
            by_pair.setdefault(pair, []).append(i)
        assert all(len(members) == 2 for members in by_pair.values())
        for a, b in by_pair.values():
            np.testing.assert_array_equal(rows["frames"][b], rows["frames"][a][::-1])
            assert not np.array_equal(
                rows["frames"][a], rows["frames"][b]
            )  # the event is not symmetric in time
            assert rows["caption"][a] != rows["caption"][b]
            assert parse(rows["caption"][a]) == parse(rows["caption"][b])


def test_mean_pooling_is_at_chance_on_order_pairs(test_videos):
    """Any per-frame encoder followed by a mean over time scores both videos of a pair the same."""
    rows = test_videos[:]
    generator = torch.Generator().manual_seed(0)
    frame_encoder = torch.randn(32 * 32 * 3, 16, generator=generator, dtype=torch.float64)
    frames = torch.from_numpy(rows["frames"]).double().flatten(2)  # (B, T, H*W*3)
    video = (frames @ frame_encoder).mean(dim=1)
    captions = torch.randn(len(video), 16, generator=generator, dtype=torch.float64)
    scores = order_pair_accuracy(video @ captions.T, rows["order_pair_id"])
    assert scores == {"video_to_text": 0.5, "text_to_video": 0.5}
    # an order-aware encoder (weights depend on the frame index) is not tied
    ramp = torch.linspace(-1, 1, frames.shape[1], dtype=torch.float64)[None, :, None]
    ordered = ((frames @ frame_encoder) * ramp).mean(dim=1)
    assert order_pair_accuracy(ordered @ ordered.T, rows["order_pair_id"])["video_to_text"] > 0.9


def test_held_out_combinations_appear_only_in_test(train_videos, test_videos):
    validation = make_video_dataset("validation", 80, seed=3)
    for videos, held_out in ((train_videos, False), (validation, False), (test_videos, True)):
        combos = {parse(c) for c in videos["caption"]}
        assert all(is_held_out(*combo) == held_out for combo in combos), combos
    train_combos, test_combos = set(split_combinations("train")), set(split_combinations("test"))
    assert not train_combos & test_combos
    assert len(train_combos) + len(test_combos) == len(COLOURS) * len(SHAPES) * len(FAMILIES)
    # every attribute pair is seen in training: only the (colour, shape, family) triple is new at test time
    for i, j in itertools.combinations(range(3), 2):
        assert {(c[i], c[j]) for c in test_combos} <= {(c[i], c[j]) for c in train_combos}


def test_video_captions_tell_the_truth(train_videos):
    rows = train_videos[:]
    checked = 0
    for frames, caption in zip(rows["frames"], rows["caption"], strict=True):
        colour, _, family = parse(caption)
        masks = [colour_mask(f, colour) for f in frames]
        if family in ("horizontal", "vertical") and "white" not in caption:
            axis = 0 if family == "horizontal" else 1
            start, end = centroid(masks[0])[axis], centroid(masks[-1])[axis]
            forward = "left to right" in caption or "moves down" in caption
            assert (end - start > 8) if forward else (start - end > 8), caption
        elif family == "size":
            assert (masks[-1].sum() > 2 * masks[0].sum()) == caption.endswith("grows"), caption
        elif family == "visibility":
            assert (masks[0].sum() == 0 and masks[-1].sum() > 0) == caption.endswith(" appears"), caption
            assert (masks[0].sum() > 0 and masks[-1].sum() == 0) == caption.endswith("disappears"), caption
        else:
            continue
        checked += 1
    assert checked > 50


def test_still_captions_name_colour_and_position():
    rows = make_frame_dataset("validation", 120, seed=2)[:]
    checked = 0
    for frames, caption in zip(rows["frames"], rows["caption"], strict=True):
        if " and " in caption or "white" in caption:
            continue
        colour = next(w for w in caption.split() if w in COLOURS)
        x, y = centroid(colour_mask(frames[0], colour)) / 32
        assert (x < 0.4) == ("left" in caption) and (x > 0.6) == ("right" in caption), caption
        assert (y < 0.4) == ("top" in caption) and (y > 0.6) == ("bottom" in caption), caption
        checked += 1
    assert checked > 30


def test_vocabulary_covers_every_caption(train_videos, test_videos):
    words = set(vocabulary())
    stills = make_frame_dataset("train", 200)
    for caption in [*train_videos["caption"], *test_videos["caption"], *stills["caption"]]:
        assert set(caption.split()) <= words, caption


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"split": "val"}, "split"),
        ({"num_videos": 7}, "num_videos"),
        ({"num_frames": 3}, "num_frames"),
        ({"image_size": 8}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make_video_dataset(**{"num_videos": 2, **kwargs})


def test_larger_canvas_and_more_frames():
    videos = make_video_dataset("test", 2, num_frames=12, image_size=64)
    assert videos[0]["frames"].shape == (12, 64, 64, 3)
    np.testing.assert_array_equal(videos[1]["frames"], videos[0]["frames"][::-1])
