"""Summarization data: How2 layout and jsonl, feature files, every bad input of the issue as a clear error."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from peft_video.tasks.summarization.data import (
    NpyFeatures,
    SummarizationCollator,
    encode_records,
    read_how2,
    read_jsonl,
)
from peft_video.tasks.summarization.tokenizer import build_summarization_tokenizer

WORDS = [
    "a",
    "man",
    "shows",
    "how",
    "to",
    "fix",
    "bike",
    "the",
    "chain",
    "wheel",
    "learn",
    "about",
    "cooking",
]


def write_how2(root, transcripts, summaries=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "tran.tok.txt").write_text("".join(line + "\n" for line in transcripts))
    if summaries is not None:
        (root / "desc.tok.txt").write_text("".join(line + "\n" for line in summaries))
    return root


def test_how2_layout_pairs_lines_by_id(tmp_path):
    root = write_how2(
        tmp_path, ["v1 a man shows the chain", "v2 cooking"], ["v1 fix the chain", "v2 learn cooking"]
    )
    records = read_how2(root)
    assert [(r.id, r.transcript, r.summary) for r in records] == [
        ("v1", "a man shows the chain", "fix the chain"),
        ("v2", "cooking", "learn cooking"),
    ]
    no_summaries = read_how2(write_how2(tmp_path / "test", ["v3 the wheel"]))
    assert no_summaries[0].summary is None
    with pytest.raises(FileNotFoundError, match="has no desc.tok.txt"):
        read_how2(tmp_path / "test", with_summaries=True)


def test_how2_bad_inputs_name_the_line_and_id(tmp_path):
    with pytest.raises(ValueError, match=r"tran.tok.txt:2: video id 'v2' has no text"):
        read_how2(write_how2(tmp_path / "a", ["v1 a man", "v2"], ["v1 x", "v2 y"]))
    with pytest.raises(ValueError, match="3 summaries, more than the 2 transcripts"):
        read_how2(write_how2(tmp_path / "b", ["v1 a", "v2 b"], ["v1 x", "v2 y", "v3 z"]))
    with pytest.raises(ValueError, match="1 summaries, fewer than the 2 transcripts"):
        read_how2(write_how2(tmp_path / "c", ["v1 a", "v2 b"], ["v1 x"]))
    with pytest.raises(ValueError, match="line 2: tran.tok.txt names video 'v2' but desc.tok.txt names 'v3'"):
        read_how2(write_how2(tmp_path / "d", ["v1 a", "v2 b"], ["v1 x", "v3 y"]))
    with pytest.raises(ValueError, match="'v1' already appears on line 1"):
        read_how2(write_how2(tmp_path / "e", ["v1 a", "v1 b"]))
    with pytest.raises(FileNotFoundError, match="has no tran.tok.txt"):
        read_how2(tmp_path / "missing")


def test_jsonl_records_and_errors(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [
        {"id": "v1", "transcript": "a man", "summary": "fix", "features": "feats/v1.npy"},
        {"id": 7, "transcript": "the wheel", "summary": "learn"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = read_jsonl(path)
    assert records[0].features == str(tmp_path / "feats" / "v1.npy") and records[1].id == "7"
    bad = {
        '{"id": "v1", "summary": "x"}': r"bad.jsonl:1: id 'v1' has no `transcript`",
        '{"id": "v1", "transcript": "a"}': r"bad.jsonl:1: id 'v1' has no `summary`",
        '{"transcript": "a", "summary": "x"}': r"bad.jsonl:1: `id` must be a non-empty string",
        "[1, 2]": "expected a JSON object",
        "{not json": "not valid JSON",
    }
    for line, message in bad.items():
        (tmp_path / "bad.jsonl").write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "pred.jsonl").write_text('{"id": "v1", "transcript": "a"}\n')
    assert read_jsonl(tmp_path / "pred.jsonl", require_summary=False)[0].summary is None


def test_feature_files_are_checked_and_truncated(tmp_path):
    root = write_how2(tmp_path / "data", ["v1 a", "v2 b", "v3 c", "v4 d"], ["v1 x", "v2 y", "v3 z", "v4 w"])
    records = read_how2(root)
    features = tmp_path / "features"
    features.mkdir()
    np.save(features / "v1.npy", np.ones((3, 8), dtype=np.float32))
    np.save(features / "v2.npy", np.ones((3, 6), dtype=np.float32))
    bad = np.ones((3, 8), dtype=np.float32)
    bad[1, 2] = np.nan
    np.save(features / "v3.npy", bad)
    store = NpyFeatures(features, width=8, max_frames=2)
    assert store(records[0]).shape == (2, 8) and store.truncated == 1
    with pytest.raises(ValueError, match=r"video 'v2': .*v2.npy' features are 6 wide, the model reads 8"):
        store(records[1])
    with pytest.raises(ValueError, match=r"video 'v3': .*NaN"):
        store(records[2])
    with pytest.raises(FileNotFoundError, match=r"video 'v4' has no feature file: .*v4.npy' does not exist"):
        store(records[3])
    with pytest.raises(FileNotFoundError, match="feature directory"):
        NpyFeatures(tmp_path / "nowhere", width=8, max_frames=2)


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_encoding_truncates_with_one_warning_and_collates(kind, tmp_path, caplog):
    tokenizer = build_summarization_tokenizer(WORDS, kind)
    root = write_how2(
        tmp_path,
        ["v1 a man shows how to fix the bike chain", "v2 cooking", "v3 learn about the bike wheel chain"],
        ["v1 learn to fix the bike chain", "v2 cooking", "v3 the wheel"],
    )
    records = read_how2(root)
    features = tmp_path / "f"
    features.mkdir()
    for index, record in enumerate(records):
        np.save(features / f"{record.id}.npy", np.full((2 + 3 * index, 4), index, dtype=np.float32))
    store = NpyFeatures(features, width=4, max_frames=4)
    with caplog.at_level(logging.WARNING):
        examples = encode_records(records, tokenizer, store, max_source_tokens=5, max_target_tokens=4)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "2 of 3 transcripts longer than 5 tokens" in message
    assert "1 of 3 summaries longer than 4 tokens" in message
    assert "2 of 3 videos longer than 4 frames" in message
    eos = tokenizer.eos_token_id
    assert all(len(e["input_ids"]) <= 5 and e["input_ids"][-1] == eos for e in examples)
    assert all(len(e["labels"]) <= 4 and e["labels"][-1] == eos for e in examples)
    batch = SummarizationCollator(tokenizer.pad_token_id)(examples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 5)
    assert batch["video_features"].shape == (3, 4, 4)
    assert batch["video_mask"].sum(1).tolist() == [2, 4, 4]
    assert (batch["labels"] == -100).sum() > 0
    assert torch.equal(batch["video_features"][1, :4], torch.ones(4, 4))
    text_only = encode_records(records, tokenizer, None, max_source_tokens=50, max_target_tokens=50)
    assert "video_features" not in SummarizationCollator(tokenizer.pad_token_id)(text_only)
