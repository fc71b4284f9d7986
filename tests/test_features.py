"""The clip-feature extractor on videos written here with PyAV: clip plans, exact identities with the backbone's own
image / text features, the layouts' files, resumability, unreadable videos, and the recipe's exit code."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import CLIPImageProcessor

from peft_video.data.real import VideoReadError, decode_frames_at, resize_center_crop
from peft_video.tasks.features import (
    ClipFeatureExtractor,
    atomic_write,
    collect_videos,
    extract_text_features,
    extract_video_features,
    plan_clips,
    read_queries,
)

ROOT = Path(__file__).resolve().parents[1]
FPS = 4
SIDE = 16
NUM_FRAMES = 20  # 5 s at 4 fps: clips [0, 2), [2, 4), [4, 5)
PALETTE = np.array(
    [[(37 * i) % 256, (91 * i + 60) % 256, (151 * i + 120) % 256] for i in range(NUM_FRAMES)], dtype=np.uint8
)
CENTRE_FRAMES = [4, 12, 18]  # the middle frame of each clip's frames 0-7, 8-15, 16-19
QUERIES = {3: "a red circle moves left", 10: "blue square", 12: "the small green triangle grows then shrinks"}


def write_video(
    path: Path, num_frames: int = NUM_FRAMES, fps: int = FPS, options: dict | None = None
) -> None:
    """mpeg4 video of ``num_frames`` solid SIDE x SIDE frames, frame i coloured PALETTE[i]."""
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless: solid colours survive
        for colour in PALETTE[:num_frames]:
            image = np.broadcast_to(colour, (SIDE, SIDE, 3)).copy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_garbled_video(path: Path) -> None:
    """A valid mp4 container whose frame data is overwritten with random bytes: the decoder rejects it."""
    write_video(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 20
    data[start : start + 240] = np.random.default_rng(1).bytes(240)
    path.write_bytes(bytes(data))


def write_truncated_video(path: Path) -> None:
    """An mp4 with its index first (faststart) cut short, as an interrupted download is: the last frames are gone."""
    write_video(path, options={"movflags": "faststart"})
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    path.write_bytes(data[:-60])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """five.mp4 (5 s), half.mp4 (0.5 s), frames/ (20 PNGs); unreadable: broken.mp4 (random bytes), garbled.mp4
    (random bytes in the frame data), truncated.mp4 (cut short)."""
    root = tmp_path_factory.mktemp("media")
    write_video(root / "five.mp4")
    write_video(root / "half.mp4", num_frames=2)
    (root / "frames").mkdir()
    for i, colour in enumerate(PALETTE):
        Image.fromarray(np.broadcast_to(colour, (SIDE, SIDE, 3)).copy()).save(
            root / "frames" / f"f{i + 1}.png"
        )
    (root / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    write_garbled_video(root / "garbled.mp4")
    write_truncated_video(root / "truncated.mp4")
    return root


@pytest.fixture(scope="module")
def extractor() -> ClipFeatureExtractor:
    return ClipFeatureExtractor(device="cpu")  # the shipped tiny CLIP


def good_videos(media: Path) -> dict[str, Path]:
    return {"five": media / "five.mp4", "half": media / "half.mp4", "frames": media / "frames"}


def pixel_values(frames: np.ndarray, backbone) -> torch.Tensor:
    """CLIP's pixel pipeline, written out: [0, 1], then per-channel (x - mean) / std."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def decode_all(path: Path, size: int) -> np.ndarray:
    """Every frame of a video, resized and cropped to ``size``, decoded here without the extractor."""
    with av.open(str(path)) as container:
        return np.stack([resize_center_crop(frame.to_image(), size) for frame in container.decode(video=0)])


# -- the clip plan --------------------------------------------------------------------------------------------------


def test_plan_clips_hand_computed_cases():
    five = np.arange(NUM_FRAMES) / FPS
    assert plan_clips(five, 2.0).frame_indices.tolist() == [[4], [12], [18]]
    assert plan_clips(five, 2.0, frames_per_clip=2).frame_indices.tolist() == [[2, 6], [10, 14], [17, 19]]
    assert plan_clips(five, 2.0).frame_times.tolist() == [[1.0], [3.0], [4.5]]
    assert plan_clips(five, 1.0).num_clips == 5
    short = plan_clips([0.0, 0.25], 2.0)  # shorter than one clip: one clip
    assert short.num_clips == 1 and short.frame_indices.tolist() == [[1]]
    # QVHighlights: 150 s at 30 fps -> 75 clips of 2 s; times need not start at 0
    assert plan_clips(7.0 + np.arange(4500) / 30, 2.0).num_clips == 75
    # a variable-rate gap: clip 1 holds no frame and takes the one on screen, frame 1
    assert plan_clips([0.0, 0.5, 5.0], 2.0).frame_indices.tolist() == [[1], [1], [2]]
    # more frames asked for than a clip holds: they repeat
    assert plan_clips([0.0, 1.0], 2.0, frames_per_clip=3).frame_indices.tolist() == [[0, 1, 1]]


@given(
    frames_per_clip_period=st.integers(1, 12),
    fps=st.sampled_from([1, 2, 4, 10, 25, 30]),
    num_frames=st.integers(1, 400),
    per_clip=st.integers(1, 5),
)
@example(frames_per_clip_period=2, fps=30, num_frames=4500, per_clip=1)
@settings(deadline=None)
def test_constant_rate_clip_count_is_ceil_of_duration(frames_per_clip_period, fps, num_frames, per_clip):
    """With a whole number m of frames per clip, clips = ceil(N / m) = ceil(duration / clip_length), and every
    chosen frame lies inside its clip."""
    clip_length = frames_per_clip_period / fps
    sampling = plan_clips(np.arange(num_frames) / fps, clip_length, per_clip)
    assert sampling.num_clips == math.ceil(num_frames / frames_per_clip_period)
    clip_of_chosen = sampling.frame_indices // frames_per_clip_period
    assert (clip_of_chosen == np.arange(sampling.num_clips)[:, None]).all()
    assert (np.diff(sampling.frame_indices, axis=1) >= 0).all()


@given(
    gaps=st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=0, max_size=60),
    clip_length=st.floats(0.1, 4.0),
    per_clip=st.integers(1, 4),
)
@settings(deadline=None)
def test_any_timeline_every_clip_shows_a_frame_on_screen_during_it(gaps, clip_length, per_clip):
    """Variable-rate timelines: a chosen frame is inside its clip, or (a gap) the last one shown before it."""
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    sampling = plan_clips(times, clip_length, per_clip)
    assert sampling.num_clips == math.floor(times[-1] / clip_length + 1e-9) + 1
    for j, chosen in enumerate(sampling.frame_indices):
        start, end = j * clip_length, (j + 1) * clip_length
        inside = np.flatnonzero((times + 1e-9 >= start) & (times + 1e-9 < end))
        if inside.size:
            assert set(chosen) <= set(inside.tolist())
        else:
            assert (chosen == np.flatnonzero(times + 1e-9 < start)[-1]).all()


def test_plan_clips_rejects_bad_input():
    for kwargs, match in [
        ({"times": [0.0], "clip_length": 0}, "clip_length"),
        ({"times": [0.0], "clip_length": True}, "clip_length"),
        ({"times": [0.0], "clip_length": 2.0, "frames_per_clip": 0}, "frames_per_clip"),
        ({"times": [], "clip_length": 2.0}, "times"),
        ({"times": [1.0, 0.5], "clip_length": 2.0}, "ascending"),
    ]:
        with pytest.raises(ValueError, match=match):
            plan_clips(**kwargs)


# -- video features: exact identities -----------------------------------------------------------------------------


def test_video_features_are_the_backbones_image_features_of_the_centre_frames(media, extractor):
    features = extractor.extract(media / "five.mp4")
    assert features.shape == (3, extractor.model.config.projection_dim) and features.dtype == np.float32
    chosen = decode_all(media / "five.mp4", extractor.image_size)[CENTRE_FRAMES]
    # the frames it chose are the centre frames (their colours), and it returns exactly what the model gives them
    sampling, frames = extractor.clip_frames(media / "five.mp4")
    assert sampling.frame_indices.ravel().tolist() == CENTRE_FRAMES
    np.testing.assert_array_equal(frames[:, 0], chosen)
    colours = frames[:, 0].reshape(3, -1, 3).mean(axis=1)
    np.testing.assert_allclose(colours, PALETTE[CENTRE_FRAMES].astype(float), atol=12)
    with torch.no_grad():
        expected = extractor.model.get_image_features(pixel_values=pixel_values(chosen, extractor.backbone))
    assert torch.equal(torch.from_numpy(features), expected.pooler_output)


def test_pixel_values_match_the_clip_image_processor(media, extractor):
    frames = decode_all(media / "five.mp4", extractor.image_size)[:4]
    processor = CLIPImageProcessor(
        do_resize=False,
        do_center_crop=False,
        image_mean=list(extractor.backbone.image_mean),
        image_std=list(extractor.backbone.image_std),
    )
    reference = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(extractor.pixel_values(frames), reference, atol=1e-5, rtol=0)


def test_several_frames_per_clip_average_and_normalize(media, extractor):
    backbone = extractor.backbone
    two = ClipFeatureExtractor(backbone, frames_per_clip=2, device="cpu", batch_size=3)
    unit = ClipFeatureExtractor(backbone, frames_per_clip=2, device="cpu", normalize=True)
    raw, normed = two.extract(media / "five.mp4"), unit.extract(media / "five.mp4")
    frames = decode_all(media / "five.mp4", two.image_size)
    with torch.no_grad():
        per_frame = backbone.model.get_image_features(
            pixel_values=pixel_values(frames, backbone)
        ).pooler_output
    indices = torch.tensor([[2, 6], [10, 14], [17, 19]])
    torch.testing.assert_close(torch.from_numpy(raw), per_frame[indices].mean(dim=1), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(normed, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_a_video_shorter_than_one_clip_gives_one_clip(media, extractor):
    sampling, _ = extractor.clip_frames(media / "half.mp4")
    assert sampling.num_clips == 1 and sampling.frame_indices.tolist() == [[1]]
    assert extractor.extract(media / "half.mp4").shape == (1, extractor.model.config.projection_dim)


def test_frame_folders_are_cut_by_their_fps(media, extractor):
    sampling, frames = extractor.clip_frames(media / "frames", fps=FPS)
    assert sampling.frame_indices.ravel().tolist() == CENTRE_FRAMES
    # PNG is lossless: the chosen frames are exactly the palette colours
    assert (frames[:, 0] == PALETTE[CENTRE_FRAMES][:, None, None, :]).all()
    with torch.no_grad():
        expected = extractor.model.get_image_features(
            pixel_values=pixel_values(frames[:, 0], extractor.backbone)
        )
    assert torch.equal(torch.from_numpy(extractor.extract(media / "frames", fps=FPS)), expected.pooler_output)
    assert extractor.extract(media / "frames", fps=2 * FPS).shape[0] == 2  # 2.5 s at 8 fps
    with pytest.raises(ValueError, match="`fps`"):
        extractor.extract(media / "frames")


def test_extractor_rejects_bad_arguments(extractor):
    for kwargs, match in [
        ({"clip_length": -1}, "clip_length"),
        ({"frames_per_clip": 1.5}, "frames_per_clip"),
        ({"batch_size": 0}, "batch_size"),
        ({"normalize": "yes"}, "normalize"),
        ({"dtype": "int8"}, "dtype"),
        ({"pretrained": "openai"}, "pretrained"),
    ]:
        with pytest.raises(ValueError, match=match):
            ClipFeatureExtractor(extractor.backbone, device="cpu", **kwargs)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\) uint8"):
        extractor.pixel_values(np.zeros((2, 16, 16, 3), dtype=np.uint8))


# -- text features ------------------------------------------------------------------------------------------------


def test_text_features_are_the_text_towers_outputs(extractor):
    texts = list(QUERIES.values())
    features = extractor.encode_text(texts)
    tokens = extractor.backbone.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = extractor.model.get_text_features(
            **tokens
        )  # transformers 5: token states + projected pooled
    for i, text in enumerate(features):
        length = int(tokens["attention_mask"][i].sum())
        assert text.last_hidden_state.shape == (length, extractor.model.config.text_config.hidden_size)
        assert torch.equal(torch.from_numpy(text.last_hidden_state), expected.last_hidden_state[i, :length])
        assert torch.equal(torch.from_numpy(text.pooler_output), expected.pooler_output[i])
    # batching does not change a query's features beyond float noise
    alone = extractor.encode_text([texts[1]])[0]
    np.testing.assert_allclose(alone.last_hidden_state, features[1].last_hidden_state, atol=1e-5)
    np.testing.assert_allclose(alone.pooler_output, features[1].pooler_output, atol=1e-5)
    with pytest.raises(ValueError, match="sequence of strings"):
        extractor.encode_text("a red circle")


def test_open_clip_backbone_image_and_text_features(tmp_path, media):
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "peft-video-tiny-features.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    extractor = ClipFeatureExtractor("open_clip:peft-video-tiny-features", device="cpu")
    model = extractor.model
    features = extractor.extract(media / "five.mp4")
    chosen = decode_all(media / "five.mp4", 32)[CENTRE_FRAMES]
    with torch.no_grad():
        expected = model.encode_image(pixel_values(chosen, extractor.backbone))
    assert torch.equal(torch.from_numpy(features), expected)
    texts = ["a red circle", "a big blue square moves"]
    text = extractor.encode_text(texts)
    ids = open_clip.get_tokenizer("peft-video-tiny-features")(texts)
    with torch.no_grad():  # open_clip's encode_text, written out up to the tensor it pools
        x = model.token_embedding(ids) + model.positional_embedding
        states = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        pooled = model.encode_text(ids)
    for i, row in enumerate(text):
        length = int((ids[i] != 0).sum())
        assert row.last_hidden_state.shape == (length, 32) and row.pooler_output.shape == (16,)
        torch.testing.assert_close(torch.from_numpy(row.last_hidden_state), states[i, :length])
        assert torch.equal(torch.from_numpy(row.pooler_output), pooled[i])


# -- writers: layouts, resumability, unreadable videos --------------------------------------------------------------


def test_moment_detr_and_how2_layouts(tmp_path, media, extractor):
    report = extract_video_features(
        good_videos(media), tmp_path / "md", extractor=extractor, fps=FPS, progress=False
    )
    assert sorted(report.written) == ["five", "frames", "half"] and not report.skipped and not report.failed
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["five.npz", "frames.npz", "half.npz"]
    with np.load(tmp_path / "md" / "five.npz") as stored:
        assert stored.files == ["features"] and stored["features"].dtype == np.float32
        np.testing.assert_array_equal(stored["features"], extractor.extract(media / "five.mp4"))
    with np.load(tmp_path / "md" / "half.npz") as stored:
        assert stored["features"].shape == (1, 64)
    extract_video_features(
        good_videos(media), tmp_path / "h2", "how2", extractor=extractor, fps=FPS, progress=False
    )
    assert sorted(p.name for p in (tmp_path / "h2").iterdir()) == ["five.npy", "frames.npy", "half.npy"]
    stored = np.load(tmp_path / "h2" / "frames.npy")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, extractor.extract(media / "frames", fps=FPS))
    with pytest.raises(ValueError, match="`layout`"):
        extract_video_features(good_videos(media), tmp_path / "x", "hdf5", extractor=extractor)


def test_runs_resume_skipping_finished_files(tmp_path, media, extractor):
    out = tmp_path / "features"
    first = extract_video_features(good_videos(media), out, extractor=extractor, fps=FPS, progress=False)
    assert len(first.written) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = extract_video_features(good_videos(media), out, extractor=extractor, fps=FPS, progress=False)
    assert second.written == [] and sorted(second.skipped) == ["five", "frames", "half"]
    (out / "half.npz").unlink()
    third = extract_video_features(good_videos(media), out, extractor=extractor, fps=FPS, progress=False)
    assert third.written == ["half"] and sorted(third.skipped) == ["five", "frames"]
    assert all(out.joinpath(name).stat().st_mtime_ns == stamps[name] for name in ("five.npz", "frames.npz"))
    forced = extract_video_features(
        good_videos(media), out, extractor=extractor, fps=FPS, overwrite=True, progress=False
    )
    assert sorted(forced.written) == ["five", "frames", "half"]
    assert sorted(p.name for p in out.iterdir()) == [
        "five.npz",
        "frames.npz",
        "half.npz",
    ]  # no temporary files


def test_an_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "vid.npz"

    def half_then_fail(handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda handle: np.savez(handle, features=np.ones((2, 3), np.float32)))
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    with np.load(target) as stored:  # the finished file is untouched
        assert stored["features"].shape == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["vid.npz"]


@pytest.mark.parametrize("name", ["broken", "garbled", "truncated"])
def test_an_unreadable_video_raises_naming_it(tmp_path, media, extractor, name):
    videos = {**good_videos(media), name: media / f"{name}.mp4"}
    with pytest.raises(
        VideoReadError,
        match=rf"video '{name}': video file \S*{name}\.mp4 (cannot be|lists 20 frames but holds only)",
    ):
        extract_video_features(videos, tmp_path, extractor=extractor, fps=FPS, progress=False)


def test_decoding_past_the_last_frame_is_an_error(media):
    with pytest.raises(
        VideoReadError, match=r"five\.mp4: the decoded stream ends at t=4\.750s, before .* t=9\.000s"
    ):
        decode_frames_at(media / "five.mp4", [1.0, 9.0], 32)
    np.testing.assert_array_equal(  # any order, repeats allowed
        decode_frames_at(media / "five.mp4", [4.5, 1.0, 4.5], 32),
        decode_all(media / "five.mp4", 32)[[18, 4, 18]],
    )


def test_skip_bad_counts_and_lists_unreadable_videos(tmp_path, media, extractor, caplog):
    with caplog.at_level(logging.WARNING):
        report = extract_video_features(
            media, tmp_path, extractor=extractor, fps=FPS, skip_bad=True, progress=False
        )
    assert sorted(report.written) == ["five", "frames", "half"]
    assert sorted(report.failed) == ["broken", "garbled", "truncated"]
    assert "broken.mp4 cannot be opened" in report.failed["broken"]
    assert "garbled.mp4 cannot be decoded" in report.failed["garbled"]
    assert "truncated.mp4 lists 20 frames but holds only" in report.failed["truncated"]
    assert "failed 3: broken, garbled, truncated" in report.summary()
    assert sum("skipping unreadable video" in r.getMessage() for r in caplog.records) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["five.npz", "frames.npz", "half.npz"]


def test_decoding_in_worker_processes_gives_the_same_files(tmp_path, media, extractor):
    report = extract_video_features(
        media, tmp_path, extractor=extractor, fps=FPS, skip_bad=True, num_workers=2, progress=False
    )
    assert sorted(report.written) == ["five", "frames", "half"] and len(report.failed) == 3
    with np.load(tmp_path / "five.npz") as stored:
        np.testing.assert_array_equal(stored["features"], extractor.extract(media / "five.mp4"))


def test_collect_videos(tmp_path, media):
    found = collect_videos(media)
    assert list(found) == ["broken", "five", "frames", "garbled", "half", "truncated"]
    assert collect_videos([media / "five.mp4", media / "frames"]) == {
        "five": media / "five.mp4",
        "frames": media / "frames",
    }
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        collect_videos([media / "missing.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        collect_videos(tmp_path / "empty")
    (tmp_path / "five.mkv").write_bytes(b"")
    with pytest.raises(ValueError, match="two videos have the id 'five'"):
        collect_videos([media / "five.mp4", tmp_path / "five.mkv"])
    with pytest.raises(ValueError, match="cannot be a file name"):
        collect_videos({"a/b": media / "five.mp4"})


# -- query features -------------------------------------------------------------------------------------------------


def test_query_files_resume_and_hold_the_text_features(tmp_path, extractor):
    annotations = tmp_path / "highlight_val.jsonl"
    rows = [{"qid": qid, "query": text, "vid": "five", "duration": 5} for qid, text in QUERIES.items()]
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "text"
    report = extract_text_features(annotations, out, extractor=extractor, progress=False)
    assert sorted(report.written) == ["10", "12", "3"]
    assert sorted(p.name for p in out.iterdir()) == ["qid10.npz", "qid12.npz", "qid3.npz"]
    expected = extractor.encode_text([QUERIES[12]])[0]
    with np.load(out / "qid12.npz") as stored:
        assert sorted(stored.files) == ["last_hidden_state", "pooler_output"]
        assert stored["last_hidden_state"].dtype == np.float32 and stored["pooler_output"].shape == (64,)
        np.testing.assert_allclose(stored["last_hidden_state"], expected.last_hidden_state, atol=1e-5)
        np.testing.assert_allclose(stored["pooler_output"], expected.pooler_output, atol=1e-5)
    (out / "qid3.npz").unlink()
    again = extract_text_features(QUERIES, out, extractor=extractor, progress=False)
    assert again.written == ["3"] and sorted(again.skipped) == ["10", "12"]


def test_read_queries_rejects_bad_records(tmp_path):
    assert read_queries([{"qid": 1, "query": "a"}, {"qid": 1, "query": "a"}]) == {"1": "a"}
    with pytest.raises(ValueError, match="qid '1' twice"):
        read_queries([{"qid": 1, "query": "a"}, {"qid": "1", "query": "b"}])
    with pytest.raises(ValueError, match="record 2 needs `qid`"):
        read_queries([{"qid": 1, "query": "a"}, {"query": "b"}])
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"qid": 1, "query": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_queries(bad)
    with pytest.raises(ValueError, match="pass either a ready `extractor` or its arguments"):
        extract_text_features({1: "a"}, tmp_path, extractor=ClipFeatureExtractor(device="cpu"), batch_size=2)


# -- the recipe -----------------------------------------------------------------------------------------------------


def run_recipe_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "extract_features.py"), "--quiet", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def call_recipe(argv: list[str], capsys) -> tuple[int, str, str]:
    """The recipe's ``main`` under the house's ``run_recipe``, in this process: (exit code, stdout, stderr)."""
    from peft_video.tasks.cli import run_recipe
    from recipes.extract_features import main

    try:
        run_recipe(main, [*argv, "--quiet"])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_recipe_bad_input_is_one_line_and_exit_code_2(tmp_path, media, capsys):
    corrupt = run_recipe_process("--videos", str(media / "broken.mp4"), "--output-dir", str(tmp_path))
    assert corrupt.returncode == 2, corrupt.stderr
    lines = corrupt.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in corrupt.stderr
    assert (
        lines[0].startswith("extract_features.py: error: video 'broken': video file ")
        and "broken.mp4" in lines[0]
    )
    for argv, match in [
        (["--videos", str(tmp_path / "nope.mp4"), "--output-dir", str(tmp_path)], "nope.mp4' does not exist"),
        (["--output-dir", str(tmp_path)], "nothing to do"),
        (["--videos", str(media / "frames"), "--output-dir", str(tmp_path)], "frame folders need --fps"),
        (["--videos", str(media), "--output-dir", str(tmp_path), "--clip-length", "x"], "--clip-length"),
        (["--videos", str(media), "--output-dir", str(tmp_path), "--layout", "h5"], "--layout"),
        (
            ["--videos", str(media), "--output-dir", str(tmp_path), "--fps", "4", "--batch-size", "0"],
            "batch_size",
        ),
        (
            [
                "--videos",
                str(media),
                "--output-dir",
                str(tmp_path),
                "--fps",
                "4",
                "--backbone",
                "/nonexistent/clip",
            ],
            "no such file",
        ),
    ]:
        code, _, err = call_recipe(argv, capsys)
        errors = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(errors) == 1 and match in errors[0] and "Traceback" not in err, (argv, err)
    assert not list(tmp_path.glob("*.np[yz]"))


def test_recipe_writes_videos_and_queries_skipping_bad_ones(tmp_path, media, capsys):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"qid": q, "query": t}) + "\n" for q, t in QUERIES.items()))
    out = tmp_path / "clip_features"
    argv = ["--videos", str(media), "--output-dir", str(out), "--fps", "4", "--queries", str(queries)]
    code, stdout, err = call_recipe(
        [*argv, "--skip-bad-videos", "--batch-size", "2", "--device", "cpu"], capsys
    )
    assert code == 0, err
    assert "written 3, skipped 0 (already there), failed 3: broken, garbled, truncated" in stdout
    assert "written 3, skipped 0 (already there), failed 0" in stdout  # the queries
    assert sorted(p.name for p in out.glob("*.npz")) == ["five.npz", "frames.npz", "half.npz"]
    assert sorted(p.name for p in (out / "text").iterdir()) == ["qid10.npz", "qid12.npz", "qid3.npz"]
