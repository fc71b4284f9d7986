"""Text-video retrieval: ranking metrics and their evaluate modules, the task model and its loss, the pair sampler,
Trainer training through peft on the task model, evaluation and reporting."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, TrainingArguments

from peft_video.data import VideoTextCollator, build_tiny_clip_processor, make_video_dataset, tiny_clip_config
from peft_video.tasks import load_clip_backbone, prepare_model
from peft_video.tasks.report import aggregate_seeds, markdown_table, write_results
from peft_video.tasks.retrieval import (
    RETRIEVAL_COLUMNS,
    RETRIEVAL_SERIES,
    TEXT_EMBEDDINGS,
    OrderPairSampler,
    VideoTextRetrievalModel,
    VideoTextTrainer,
    embed_dataset,
    evaluate_retrieval,
    retrieval_relevance,
    retrieval_scores,
    symmetric_info_nce,
)
from peft_video.tasks.retrieval.metrics import (
    dual_softmax,
    expected_ranks,
    rank_metrics,
    recall_at_k,
    relevance_matrix,
)
from peft_video.video import mean_pool_frames
from tests.helpers import ROOT, run_fresh
from tests.tiny_models import tiny_clip, tiny_open_clip, tokens

FRAMES = 4


# -- ranking math ------------------------------------------------------------------------------------------------


def test_rank_metrics_match_hand_computed_values():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.7, 0.1], [0.2, 0.6, 0.5]])
    relevant = torch.eye(3, dtype=torch.bool)
    # ranks of the correct item: query 0 -> 1, query 1 -> 2 (0.8 above), query 2 -> 2 (0.6 above)
    assert expected_ranks(scores, relevant).tolist() == [1.0, 2.0, 2.0]
    metrics = rank_metrics(scores, relevant, ks=(1, 2))
    assert metrics == {"R@1": pytest.approx(100 / 3), "R@2": 100.0, "MdR": 2.0, "MnR": pytest.approx(5 / 3)}


def test_ties_are_broken_at_random_in_expectation():
    # query 0: its video ties with one other -> R@1 = 1/2, rank 1.5; query 1: one above, tie with one -> rank 2.5
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.9, 0.4, 0.4]])
    relevant = torch.tensor([[True, False, False], [False, True, False]])
    assert recall_at_k(scores, relevant, 1).tolist() == [0.5, 0.0]
    assert recall_at_k(scores, relevant, 2).tolist() == [1.0, 0.5]
    assert expected_ranks(scores, relevant).tolist() == [1.5, 2.5]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_tie_aware_metrics_equal_the_average_over_every_tie_breaking(data):
    candidates = data.draw(st.integers(2, 5))
    values = data.draw(st.lists(st.integers(0, 2), min_size=candidates, max_size=candidates))
    flags = data.draw(st.lists(st.booleans(), min_size=candidates, max_size=candidates).filter(any))
    scores, relevant = torch.tensor([values], dtype=torch.float64), torch.tensor([flags])
    ranks, hits = [], {k: [] for k in (1, 2, 3)}
    for tie_break in itertools.permutations(
        range(candidates)
    ):  # every order of equal scores is equally likely
        order = sorted(range(candidates), key=lambda j: (-values[j], tie_break[j]))
        rank = 1 + next(pos for pos, j in enumerate(order) if flags[j])
        ranks.append(rank)
        for k in hits:
            hits[k].append(float(rank <= k))
    assert expected_ranks(scores, relevant).item() == pytest.approx(np.mean(ranks))
    for k, values_k in hits.items():
        assert recall_at_k(scores, relevant, k).item() == pytest.approx(np.mean(values_k))


def test_dual_softmax_demotes_a_hub_candidate():
    # video 0 is every text's best match (a hub); with DSL text 1 finds its own video 1
    scores = torch.tensor([[0.9, 0.2], [0.8, 0.7]])
    expected = scores * torch.softmax(scores / 0.1, dim=0)
    assert torch.allclose(dual_softmax(scores, temperature=0.1), expected)
    relevant = torch.eye(2, dtype=torch.bool)
    assert rank_metrics(scores, relevant, ks=(1,))["R@1"] == 50.0
    assert rank_metrics(dual_softmax(scores, temperature=0.1), relevant, ks=(1,))["R@1"] == 100.0


def test_ranking_rejects_bad_input_with_clear_errors():
    with pytest.raises(ValueError, match="at least one relevant"):
        expected_ranks(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="`relevant` must be"):
        expected_ranks(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        recall_at_k(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="`temperature` must be"):
        dual_softmax(torch.zeros(2, 2), temperature=0)


def test_relevance_counts_same_caption_and_same_video():
    captions = ["a grows", "a shrinks", "a grows", "b grows"]
    video_ids = ["v0", "v1", "v2", "v1"]
    assert relevance_matrix(["x", "y"], ["y", "x", "y"]).tolist() == [
        [False, True, False],
        [True, False, True],
    ]
    assert retrieval_relevance(captions, video_ids) == [[0, 2], [1, 3], [0, 2], [1, 3]]


# -- evaluate modules --------------------------------------------------------------------------------------------


def test_evaluate_modules_load_from_the_package_offline():
    out = run_fresh(
        """
        import json
        import peft_video.metrics as M
        retrieval = M.load("video_text_retrieval")
        # texts x videos; video 2 is nobody's answer, so it is a candidate only in v2t
        r = retrieval.compute(predictions=[[0.9, 0.1, 0.3], [0.8, 0.7, 0.75]], references=[[0], [1]])
        d = retrieval.compute(predictions=[[0.9, 0.2], [0.8, 0.7]], references=[[0], [1]], dual_softmax=True,
                              temperature=0.1)
        order = M.load("order_pair_accuracy")
        o = order.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 0])
        print(json.dumps({"r": r, "d": d, "o": o}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    r = result["r"]
    assert (
        r["t2v_R@1"] == 50.0 and r["t2v_R@5"] == 100.0 and r["t2v_MnR"] == 2.0
    )  # text 1: 0.8 and 0.75 above
    # v2t: video 0 ranks text 0 (0.9 > 0.8) first; video 1 ranks text 1 (0.7 > 0.1) first
    assert r["v2t_R@1"] == 100.0 and r["v2t_MdR"] == 1.0
    assert result["d"]["t2v_R@1"] == 100.0
    assert result["o"] == {"video_to_text": 1.0, "text_to_video": 1.0}


# -- task model ----------------------------------------------------------------------------------------------------


def videos(batch: int = 2, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("build", [tiny_clip, tiny_open_clip], ids=["hf_clip", "open_clip"])
def test_task_model_embeds_and_pools_frames(build):
    torch.manual_seed(0)
    model = VideoTextRetrievalModel(build()).eval()
    x, ids = videos(3), tokens(batch=3, length=16)  # open_clip needs its full context length
    with torch.no_grad():
        out = model(pixel_values=x, input_ids=ids, attention_mask=torch.ones_like(ids))
        frames = model.frame_features(x.flatten(0, 1))
    assert out.video_embeds.shape == out.text_embeds.shape == (3, 16)
    assert torch.allclose(out.video_embeds.norm(dim=-1), torch.ones(3))
    assert torch.allclose(out.video_embeds, mean_pool_frames(frames, FRAMES), atol=1e-6)
    assert out.logits_per_text.shape == (3, 3) and out.loss.ndim == 0
    # a mean-pooled frame-wise model cannot tell a video from its reversal: the fact behind the 50% on order pairs
    with torch.no_grad():
        assert torch.allclose(model.encode_videos(x), model.encode_videos(x.flip(1)), atol=1e-6)


def test_one_frame_loss_is_clips_own_loss():
    torch.manual_seed(0)
    clip = tiny_clip().eval()
    model = VideoTextRetrievalModel(clip).eval()
    x, ids = videos(4, frames=1), tokens(batch=4)
    with torch.no_grad():
        ours = model(pixel_values=x, input_ids=ids).loss
        reference = clip(pixel_values=x[:, 0], input_ids=ids, return_loss=True).loss
    assert torch.allclose(ours, reference, atol=1e-5)


def test_info_nce_spreads_the_target_over_repeated_captions():
    logits = torch.tensor([[2.0, 1.0, 0.5], [1.5, 2.5, 0.0], [0.3, 0.2, 1.0]])
    plain = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    assert torch.allclose(symmetric_info_nce(logits), plain)
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    target = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    soft = (
        -(target * logits.log_softmax(1)).sum(1).mean() / 2
        - (target * logits.T.log_softmax(1)).sum(1).mean() / 2
    )
    assert torch.allclose(symmetric_info_nce(logits, same), soft)


def test_task_model_rejects_bad_input():
    with pytest.raises(ValueError, match="CLIP-like model"):
        VideoTextRetrievalModel(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`logit_scale`"):
        VideoTextRetrievalModel(tiny_clip(), logit_scale=-1.0)
    model = VideoTextRetrievalModel(tiny_clip())
    with pytest.raises(ValueError, match="one caption per video"):
        model(pixel_values=videos(2), input_ids=tokens(batch=3))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model.encode_videos(videos(2)[:, 0])


# -- methods -------------------------------------------------------------------------------------------------------


def test_text_embeddings_option_trains_and_saves_the_word_table(tmp_path):
    model = prepare_model(VideoTextRetrievalModel(tiny_clip()), "read", FRAMES, also_train=[TEXT_EMBEDDINGS])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("token_embedding" in n for n in trainable) and any("pvread_" in n for n in trainable)
    model.save_pretrained(str(tmp_path))
    assert any("token_embedding" in key for key in load_file(str(tmp_path / "adapter_model.safetensors")))


def test_temporal_methods_tell_a_video_from_its_reversal():
    x = videos(2)
    captions = torch.randn(2, 16)
    for method in ("read", "rap", "token_mix"):
        torch.manual_seed(0)
        model = prepare_model(VideoTextRetrievalModel(tiny_clip()), method, FRAMES)
        for p in model.parameters():  # move the adapter off its identity init
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.2)
        with torch.no_grad():
            forward = model.encode_videos(x, candidates=captions)
            backward = model.encode_videos(x.flip(1), candidates=captions)
        assert not torch.allclose(forward, backward, atol=1e-4), method


# -- sampler, Trainer, evaluation ----------------------------------------------------------------------------------


def test_order_pair_sampler_keeps_partners_together():
    ids = [0, 0, 1, 1, 2, 2, -1, 3, 3]
    sampler = OrderPairSampler(ids, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(len(ids))) and len(sampler) == len(ids)
    position = {index: pos for pos, index in enumerate(first)}
    for a, b in [(0, 1), (2, 3), (4, 5), (7, 8)]:
        assert abs(position[a] - position[b]) == 1
    assert list(sampler) == first  # same epoch, same order
    orders = set()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler))
    assert len(orders) > 1


@pytest.fixture(scope="module")
def world():
    processor = build_tiny_clip_processor()
    collator = VideoTextCollator.from_processor(processor)
    train = make_video_dataset("train", 16, num_frames=FRAMES)
    test = make_video_dataset("test", 8, num_frames=FRAMES)
    return processor, collator, train, test


@pytest.mark.parametrize("method", ["read", "rap"])
def test_trainer_trains_and_saves_only_the_adapter(world, tmp_path, method):
    processor, collator, train, _ = world
    torch.manual_seed(0)
    model = prepare_model(VideoTextRetrievalModel(CLIPModel(tiny_clip_config(processor))), method, FRAMES)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = VideoTextTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
    result = trainer.train()
    assert math.isfinite(result.training_loss) and trainer.state.global_step == 3
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved
    trainer.save_model(str(tmp_path / "adapter"))
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert saved and all(f"pv{method}_" in key for key in saved)
    reloaded = PeftModel.from_pretrained(
        VideoTextRetrievalModel(CLIPModel(tiny_clip_config(processor))), str(tmp_path / "adapter")
    )
    assert isinstance(reloaded, PeftModel)


def test_evaluation_of_a_frame_wise_model_is_at_chance_on_order_pairs(world):
    processor, collator, _, test = world
    torch.manual_seed(0)
    model = VideoTextRetrievalModel(CLIPModel(tiny_clip_config(processor)))
    embeddings = embed_dataset(model, test, collator, batch_size=4, progress=False)
    assert embeddings.texts.shape == embeddings.videos.shape == (8, 64)
    results = evaluate_retrieval(embeddings, test["caption"], test["video_id"], test["order_pair_id"])
    assert results["order_v2t"] == 0.5 and results["order_t2v"] == 0.5
    assert {"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", "v2t_MnR"} <= set(results)
    dsl = evaluate_retrieval(embeddings, test["caption"], test["video_id"], dual_softmax=True)
    assert "order_v2t" not in dsl and 0 <= dsl["t2v_R@1"] <= 100


def test_report_writes_json_markdown_and_a_png(tmp_path):
    rows = [
        {
            "method": "frozen",
            "trainable_params": 0,
            "t2v_R@1": 10.0,
            "order_v2t": 0.5,
            "seconds_per_step": None,
        },
        {
            "method": "read",
            "trainable_params": 2480,
            "t2v_R@1": 20.0,
            "order_v2t": 0.8,
            "seconds_per_step": 0.25,
        },
    ]
    table = markdown_table(rows, RETRIEVAL_COLUMNS)
    assert (
        "| read | 2,480 | 20.0 | 80.0 | — | 0.250 |" in table
        and "| frozen | 0 | 10.0 | 50.0 | — | — |" in table
    )
    paths = write_results(rows, tmp_path, RETRIEVAL_COLUMNS, RETRIEVAL_SERIES, title="demo")
    assert json.loads(paths["json"].read_text()) == rows
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_seed_aggregation_gives_mean_and_spread_in_the_table(tmp_path):
    runs = [
        {
            "method": "read",
            "trainable_params": 10,
            "t2v_R@1": value,
            "order_v2t": 0.5 + value / 100,
            "seed": seed,
        }
        for seed, value in enumerate([10.0, 20.0, 30.0])
    ] + [{"method": "frozen", "trainable_params": 0, "t2v_R@1": 5.0, "order_v2t": 0.5, "seed": 0}]
    rows = aggregate_seeds(runs, ["t2v_R@1", "order_v2t"])
    assert [r["method"] for r in rows] == ["read", "frozen"] and rows[0]["seeds"] == 3
    assert (
        rows[0]["t2v_R@1"] == 20.0
        and rows[0]["t2v_R@1_std"] == 10.0
        and rows[0]["t2v_R@1_runs"] == [10, 20, 30]
    )
    table = markdown_table(rows, RETRIEVAL_COLUMNS)
    assert "| read | 10 | 20.0 (10.0–30.0) | 70.0 (60.0–80.0) | — | — |" in table
    assert "| frozen | 0 | 5.0 | 50.0 | — | — |" in table  # one run: no spread printed
    paths = write_results(rows, tmp_path, RETRIEVAL_COLUMNS, RETRIEVAL_SERIES, runs=runs)
    assert json.loads(paths["json"].read_text())["runs"][0]["seed"] == 0


# -- backbones and the recipe on real-style data -------------------------------------------------------------------


def test_backbones_load_from_a_local_hf_dir_and_by_open_clip_name(tmp_path):
    import open_clip

    processor = build_tiny_clip_processor()
    CLIPModel(tiny_clip_config(processor)).save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    hf = load_clip_backbone(str(tmp_path / "hf"))
    assert hf.image_size == 32 and hf.tokenizer(["a red circle grows"], return_tensors="pt")[
        "input_ids"
    ].shape == (1, 6)
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "peft-video-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "oc")
    oc = load_clip_backbone("open_clip:peft-video-tiny-test")
    assert oc.image_size == 32 and oc.name == "open_clip:peft-video-tiny-test"
    text = oc.tokenizer(["a red circle grows", "a square"])
    assert text["input_ids"].shape == (2, 16) and text["attention_mask"][1].sum() == 4  # bos, 2 words, eos
    model = VideoTextRetrievalModel(oc.model)
    with torch.no_grad():
        out = model(pixel_values=videos(2), **text)
    assert out.video_embeds.shape == (2, 16) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="`pretrained`"):
        load_clip_backbone(str(tmp_path / "hf"), pretrained="openai")


def test_recipe_trains_on_msrvtt_style_annotations(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "recipes"))
    from text_video_retrieval import main  # the recipe script

    rng = np.random.default_rng(0)
    records = []
    for v in range(4):
        folder = tmp_path / "videos" / f"video{v}"
        folder.mkdir(parents=True)
        for f in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{f:03d}.png")
        records.append(
            {"video_id": f"video{v}", "caption": ["a red circle grows", "a blue square moves up"][v % 2]}
        )
    (tmp_path / "train.json").write_text(json.dumps(records))
    (tmp_path / "test.json").write_text(json.dumps(records[:2]))
    main(
        [
            "--method",
            "read",
            "--data",
            str(tmp_path / "train.json"),
            "--eval-data",
            str(tmp_path / "test.json"),
            "--video-root",
            str(tmp_path / "videos"),
            "--num-frames",
            str(FRAMES),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--output-dir",
            str(tmp_path / "out"),
            "--quiet",
            "--save",
        ]
    )
    row = json.loads((tmp_path / "out" / "results.json").read_text())[0]
    assert row["method"] == "read" and row["steps"] == 2 and row["eval_videos"] == 2
    assert "order_v2t" not in row  # real data has no order-only pairs
    assert 0 <= row["t2v_R@1"] <= 100 and (tmp_path / "out" / "model" / "adapter_model.safetensors").is_file()


def test_retrieval_scores_and_dual_softmax_against_a_float64_reference():
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    frame_embeds = torch.randn(3 * 4, 8, generator=generator, dtype=torch.float64)
    video = (
        torch.nn.functional.normalize(frame_embeds, dim=-1).view(3, 4, 8).mean(1)
    )  # meanP: frames normalised first
    cosine = torch.tensor(
        [[float(t @ v / (t.norm() * v.norm())) for v in video] for t in text], dtype=torch.float64
    )
    torch.testing.assert_close(retrieval_scores(text, frame_embeds, num_frames=4), cosine)
    prior = torch.exp(cosine / 0.05) / torch.exp(cosine / 0.05).sum(dim=0, keepdim=True)  # over the queries
    torch.testing.assert_close(
        retrieval_scores(text, video, dual_softmax=True, temperature=0.05), cosine * prior
    )
    with pytest.raises(ValueError, match="`candidate_embeds` have width 7"):
        retrieval_scores(text, torch.randn(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="`temperature` must be a positive number"):
        retrieval_scores(text, video, temperature=0.0)
