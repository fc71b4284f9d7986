"""Predictions in seconds: decoding, sliding windows with merging, the predictor on features and on a video file
written here with PyAV, and the shipped tiny grounding model (loads, beats chance zero-shot, reproduces)."""

from __future__ import annotations

import fnmatch
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from peft_video.tasks.features import ClipFeatureExtractor
from peft_video.tasks.grounding import (
    GroundingConfig,
    GroundingModel,
    build_split,
    decode_moments,
    make_video,
    predict_dataset,
    predict_features,
    sliding_windows,
    temporal_nms,
    tiny_grounding_path,
)
from peft_video.tasks.grounding.evaluation import chance_hit1, chance_top1_recall, hit1, top1_recall
from peft_video.tasks.grounding.predictor import GroundingPredictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder() -> ClipFeatureExtractor:
    return ClipFeatureExtractor()


@pytest.fixture(scope="module")
def tiny() -> GroundingModel:
    model, info = GroundingModel.from_pretrained(tiny_grounding_path(), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return model.eval()


# ------------------------------------------------------------------------------------------------------ decoding


def test_decode_moments_by_hand():
    spans = torch.tensor([[0.25, 0.1], [0.5, 0.5], [0.96, 0.2]])  # of 10 clips x 2 s = 20 s
    scores = torch.tensor([0.2, 0.9, 0.5])
    raw = decode_moments(spans, scores, num_clips=10, clip_length=2.0, round_to_clips=False)
    assert raw == [[5.0, 15.0, 0.9], [17.2, 20.0, 0.5], [4.0, 6.0, 0.2]]  # best first; clamped at the end
    rounded = decode_moments(spans, scores, num_clips=10, clip_length=2.0, duration=19.0)
    # seconds / 2 s rounded half to even: 5 -> 4, 15 -> 16; 17.2 -> 18 and 19 (the duration) -> 20, clamped to 19
    assert rounded == [[4.0, 16.0, 0.9], [18.0, 19.0, 0.5], [4.0, 6.0, 0.2]]
    tiny_span = decode_moments(
        torch.tensor([[0.5, 0.01]]), torch.tensor([1.0]), num_clips=10, clip_length=2.0
    )
    assert tiny_span == [[10.0, 12.0, 1.0]]  # a window rounding would empty keeps one clip


def test_sliding_windows_and_nms():
    assert sliding_windows(8, 10) == [(0, 8)]
    assert sliding_windows(25, 10) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    assert sliding_windows(23, 10, stride=6) == [(0, 10), (6, 16), (12, 22), (13, 23)]
    moments = [[0, 10, 0.9], [1, 10, 0.8], [20, 30, 0.7], [0, 4, 0.6]]
    assert temporal_nms(moments, 0.7) == [[0, 10, 0.9], [20, 30, 0.7], [0, 4, 0.6]]  # 9/10 overlap dropped
    assert temporal_nms(moments, 0.95) == [[0, 10, 0.9], [1, 10, 0.8], [20, 30, 0.7], [0, 4, 0.6]]


def _small_model(max_clips: int) -> GroundingModel:
    torch.manual_seed(0)
    return GroundingModel(
        GroundingConfig(
            video_feature_dim=6,
            text_feature_dim=4,
            hidden_size=16,
            num_attention_heads=2,
            max_clips=max_clips,
        )
    ).eval()


def test_long_videos_are_read_in_sliding_windows_and_merged():
    rng = np.random.default_rng(0)
    video, query = rng.normal(size=(25, 6)), rng.normal(size=(3, 4))
    model = _small_model(max_clips=10)
    out = predict_features(model, video, query, clip_length=2.0, duration=49.0)
    assert len(out["pred_saliency_scores"]) == 25
    windows = out["pred_relevant_windows"]
    assert 0 < len(windows) <= 10 and all(0 <= s < e <= 49.0 for s, e, _ in windows)
    assert [w[2] for w in windows] == sorted((w[2] for w in windows), reverse=True)
    # saliency of a clip = mean over the windows covering it: clips 0-4 are covered by window (0, 10) only
    normed = video / np.linalg.norm(video, axis=1, keepdims=True)
    query_normed = torch.tensor(query / np.linalg.norm(query, axis=1, keepdims=True), dtype=torch.float32)
    with torch.no_grad():
        first = model(
            video_features=torch.tensor(normed[None, :10], dtype=torch.float32),
            text_features=query_normed[None],
        )
        second = model(
            video_features=torch.tensor(normed[None, 5:15], dtype=torch.float32),
            text_features=query_normed[None],
        )
    np.testing.assert_allclose(
        out["pred_saliency_scores"][:5], first.saliency_scores[0, :5].numpy(), atol=1e-4
    )
    mean = (first.saliency_scores[0, 5:10] + second.saliency_scores[0, :5]) / 2
    np.testing.assert_allclose(out["pred_saliency_scores"][5:10], mean.numpy(), atol=1e-4)
    # a video that fits is one forward: same as the model's own output
    short = predict_features(model, video[:8], query, clip_length=2.0, round_to_clips=False)
    with torch.no_grad():
        direct = model(
            video_features=torch.tensor(normed[None, :8], dtype=torch.float32),
            text_features=query_normed[None],
        )
    np.testing.assert_allclose(short["pred_saliency_scores"], direct.saliency_scores[0].numpy(), atol=1e-4)
    assert len(short["pred_relevant_windows"]) == 10


def test_predict_features_rejects_bad_input():
    model = _small_model(10)
    with pytest.raises(ValueError, match="num_clips >= 1"):
        predict_features(model, np.zeros((0, 6)), np.ones((2, 4)), clip_length=2.0)
    with pytest.raises(ValueError, match="num_tokens >= 1"):
        predict_features(model, np.ones((3, 6)), np.zeros((0, 4)), clip_length=2.0)
    with pytest.raises(ValueError, match="NaN"):
        predict_features(model, np.full((3, 6), np.nan), np.ones((2, 4)), clip_length=2.0)


# ----------------------------------------------------------------------------------------------------- predictor


def test_predictor_on_precomputed_features(tiny, encoder):
    video = make_video("source", "test", 3)
    features = encoder.features_from_frames(video.clip_frames())
    event = video.events[0]
    tokens = encoder.encode_text([event.query])[0].last_hidden_state
    predictor = GroundingPredictor(tiny)
    out = predictor.predict(features, tokens)
    assert out["clip_length"] == 2.0 and len(out["pred_saliency_scores"]) == video.num_clips
    start, end, score = out["pred_relevant_windows"][0]
    assert 0 <= start < end <= video.duration and 0 < score <= 1
    with pytest.raises(ValueError, match="no extractor"):
        predictor.predict(features, event.query)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """A lossless RGB H.264 file (libx264rgb, qp 0), so decoded frames equal the rendered ones."""
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_predictor_on_a_video_file(tiny, encoder, tmp_path):
    video = make_video("source", "test", 5)
    path = tmp_path / "world.mp4"
    write_video(path, video.frames(fps=4), fps=4)
    extractor = ClipFeatureExtractor(clip_length=2.0, device="cpu")
    from_file = extractor.extract(path)
    in_memory = encoder.features_from_frames(video.clip_frames())
    np.testing.assert_allclose(from_file, in_memory, atol=1e-4)  # the file's features are the world's
    predictor = GroundingPredictor(tiny, extractor)
    out = predictor.predict(path, video.events[0].query)
    assert out["vid"] == str(path) and len(out["pred_saliency_scores"]) == video.num_clips
    assert all(0 <= s < e <= video.duration for s, e, _ in out["pred_relevant_windows"])


# ---------------------------------------------------------------------------------------------- the tiny model


def test_tiny_asset_is_small_loads_through_auto_classes_and_is_packaged(tiny):
    files = {p.name: p.stat().st_size for p in tiny_grounding_path().iterdir()}
    assert {"config.json", "model.safetensors", "pretraining.json"} <= set(files)
    assert sum(files.values()) < 2 * 2**20
    import peft_video.tasks.grounding  # noqa: F401  (registers the model type)

    auto = AutoModel.from_pretrained(tiny_grounding_path())
    assert isinstance(auto, GroundingModel) and auto.config.hidden_size == 64
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "peft_video"
    ]
    for path in tiny_grounding_path().iterdir():
        relative = path.relative_to(ROOT / "peft_video").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_tiny_model_beats_chance_zero_shot_on_the_source_test_split(tiny, encoder):
    data = build_split("source", "test", 40, encoder=encoder)
    rows = predict_dataset(tiny, data)
    records = data.records
    r1 = top1_recall(rows, records, 0.5)
    chance = chance_top1_recall(records, 0.5, 2.0)
    assert chance < 0.07 and r1 > 0.4  # measured on all 100 test videos: see pretraining.json
    assert hit1(rows, records) > 0.4 > 4 * chance_hit1(records, 2.0)
    ordered = [r for r in records if r.extra["order_dependent"]]
    assert top1_recall(rows, ordered, 0.5) > 0.25  # the order pairs need the clips' order


def test_predictions_score_with_the_official_qvhighlights_scorer(tiny, encoder):
    metrics = pytest.importorskip("peft_video.metrics")
    try:
        scorer = metrics.load("qvhighlights")
    except (KeyError, ValueError, FileNotFoundError) as error:
        pytest.skip(f"the QVHighlights scorer is not on this branch's base: {error}")
    data = build_split("source", "test", 20, encoder=encoder)
    rows = predict_dataset(tiny, data)
    scores = scorer.compute(
        predictions=rows, references=[r.as_annotation() for r in data.records], decimals=None
    )
    assert math.isclose(scores["MR-full-R1@0.5"], 100 * top1_recall(rows, data.records, 0.5), abs_tol=1e-9)
    assert math.isclose(scores["MR-full-R1@0.7"], 100 * top1_recall(rows, data.records, 0.7), abs_tol=1e-9)
    assert math.isclose(scores["HL-min-VeryGood-Hit1"], 100 * hit1(rows, data.records), abs_tol=1e-9)
    assert scores["MR-full-mAP"] > 30


def test_pretraining_record_matches_the_recipe():
    record = json.loads((tiny_grounding_path() / "pretraining.json").read_text())
    assert record["recipe"] == "recipes/pretrain_tiny_grounding.py"
    source = record["zero_shot_test"]["source"]
    assert source["R1@0.5"] > 5 * source["chance_R1@0.5"]


def _recipe():
    sys.path.insert(0, str(ROOT))
    try:
        import recipes.pretrain_tiny_grounding as recipe
    finally:
        sys.path.remove(str(ROOT))
    return recipe


def test_pretraining_is_deterministic(encoder):
    recipe = _recipe()
    args = recipe.parse_args(["--steps", "3", "--train-videos", "4", "--batch-size", "4"])
    threads = torch.get_num_threads()
    try:
        first = recipe.train(args, encoder)
        second = recipe.train(args, encoder)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_rerunning_the_recipe_reproduces_the_shipped_weights_byte_for_byte(tmp_path):
    recipe = _recipe()
    args = recipe.parse_args(["--output", str(tmp_path)])
    threads = torch.get_num_threads()
    try:
        model = recipe.train(args)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    model.save_pretrained(tmp_path)
    shipped = tiny_grounding_path()
    assert (tmp_path / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (shipped / "config.json").read_text()
    )
