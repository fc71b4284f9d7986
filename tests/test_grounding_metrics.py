"""Grounding and highlight-detection metrics: QVHighlights' official brief metrics, UMT's YouTube Highlights and
TVSum mAP, their evaluate modules, and the official submission jsonl.

Hand-computed cases show every key's definition (the arithmetic is in the comments), the official scorer's quirks
get a case each, and the AP routines are compared with second, straightforward implementations on random cases.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peft_video.metrics import METRIC_PACKAGES, load
from peft_video.tasks.grounding.metrics import (
    IOU_THRESHOLDS,
    SUBMISSION_FIELDS,
    detection_ap,
    hit_at_one,
    interpolated_ranking_ap,
    qvhighlights_scores,
    read_submission,
    temporal_iou,
    top1_iou,
    trapezoid_ap,
    tvsum_scores,
    tvsum_video_ap,
    voc_interpolated_ap,
    write_submission,
    youtube_highlights_scores,
)
from peft_video.tasks.grounding.metrics.scoring import hull_iou, lower_median
from tests.helpers import run_fresh

# -- QVHighlights: a hand-computed moment retrieval case -------------------------------------------------------------

# query 1: ground truth [0, 10] (short) and [20, 40] (middle); windows listed in decreasing score:
#   [0, 10] IoU 1 with [0, 10]; [20, 30] IoU 10/20 = 0.5 with [20, 40]; [50, 60] overlaps nothing.
# query 2: ground truth [10, 50] (long); the FIRST LISTED window [10, 35] (score 0.5, IoU 25/40 = 0.625) is not the
#   best-scored one, [10, 50] (score 0.9, IoU 1).
MR_REFERENCES = [
    {"qid": 1, "query": "a", "vid": "v1", "duration": 150, "relevant_windows": [[0, 10], [20, 40]]},
    {"qid": 2, "query": "b", "vid": "v2", "duration": 150, "relevant_windows": [[10, 50]]},
]
MR_PREDICTIONS = [
    {
        "qid": 1,
        "query": "a",
        "vid": "v1",
        "pred_relevant_windows": [[0, 10, 0.9], [20, 30, 0.8], [50, 60, 0.7]],
    },
    {"qid": 2, "query": "b", "vid": "v2", "pred_relevant_windows": [[10, 35, 0.5], [10, 50, 0.9]]},
]
# full, query 1: at IoU 0.5 both hits -> precision 1, 1, 2/3 at recall 1/2, 1, 1 -> AP 1; from 0.55 on only
#   [0, 10] hits -> recall stays 1/2 at precision 1 -> AP 1/2.
# full, query 2: by score, [10, 50] hits, then [10, 35] finds its only window taken -> precision 1, 1/2 at recall
#   1, 1 -> AP 1 at every threshold.
# MR-full-mAP@0.5 = (1 + 1) / 2 = 100; @0.75 = (1/2 + 1) / 2 = 75; MR-full-mAP = (1 + 9 * 0.75) / 10 = 77.5.
# R1: query 1's first window [0, 10] has IoU 1; query 2's first listed window has IoU 0.625 -> R1@0.5 = 100,
#   R1@0.7 = 50 (scoring the best-scored window instead would give 100).
# short (0, 10]: query 1 against [0, 10] alone: hit, miss, miss -> precision 1, 1/2, 1/3 at recall 1 -> AP 1 -> 100.
# middle (10, 30]: query 1 against [20, 40] alone: [0, 10] (the top score) is now a false positive, [20, 30] hits
#   at IoU 0.5 only -> AP 1 * 1/2 at 0.5, 0 above -> mean 0.05 -> 5.
# long (30, 150]: query 2 alone -> 100.
MR_EXPECTED = {
    "MR-full-R1@0.5": 100.0,
    "MR-full-R1@0.7": 50.0,
    "MR-full-mAP": 77.5,
    "MR-full-mAP@0.5": 100.0,
    "MR-full-mAP@0.75": 75.0,
    "MR-long-mAP": 100.0,
    "MR-middle-mAP": 5.0,
    "MR-short-mAP": 100.0,
}


def test_moment_retrieval_keys_match_the_hand_computed_case():
    result = qvhighlights_scores(MR_PREDICTIONS, MR_REFERENCES)
    assert result == MR_EXPECTED
    assert list(result) == sorted(MR_EXPECTED)  # the official brief's order (sorted MR keys)


def test_per_query_ap_and_r1_building_blocks():
    assert (
        detection_ap([[0, 10], [20, 30], [50, 60]], [0.9, 0.8, 0.7], [[0, 10], [20, 40]]).tolist()
        == [1.0] + [0.5] * 9
    )
    assert top1_iou([10, 35], [[10, 50]]) == 0.625
    # IoU: [0, 4] vs [2, 6]: 2 / 6; vs [10, 12]: 0
    assert temporal_iou([[0, 4]], [[2, 6], [10, 12]]).tolist() == [[pytest.approx(1 / 3), 0.0]]
    # VOC interpolation: precision 1/2, 2/3 at recall 1/2, 1 -> the first step takes the later, higher precision
    assert voc_interpolated_ap([0.5, 2 / 3], [0.5, 1.0]) == pytest.approx(2 / 3)


# -- QVHighlights: the official scorer's quirks ----------------------------------------------------------------------


def test_r1_compares_with_the_best_overlapping_ground_truth_window_not_the_first():
    refs = [{"qid": 7, "relevant_windows": [[0, 10], [30, 50]]}]
    preds = [{"qid": 7, "pred_relevant_windows": [[30, 48, 1.0]]}]
    # IoU with the first window [0, 10] is 0; with [30, 50] it is 18 / 20 = 0.9 -> a hit at 0.7
    result = qvhighlights_scores(preds, refs)
    assert result["MR-full-R1@0.7"] == 100.0
    assert top1_iou([30, 48], [[0, 10], [30, 50]]) == pytest.approx(0.9)


def test_r1_takes_the_first_listed_window_whatever_its_score():
    refs = [{"qid": 1, "relevant_windows": [[0, 10]]}]
    ascending = [{"qid": 1, "pred_relevant_windows": [[40, 50, 0.1], [0, 10, 0.9]]}]
    result = qvhighlights_scores(ascending, refs)
    assert result["MR-full-R1@0.5"] == 0.0  # [40, 50] is listed first
    assert result["MR-full-mAP"] == 100.0  # the AP sorts by score: [0, 10] comes first


def test_hull_iou_of_r1_equals_the_iou_for_proper_windows():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = np.sort(rng.uniform(0, 20, 2)), np.sort(rng.uniform(0, 20, 2))
        assert hull_iou(a, b) == pytest.approx(temporal_iou([a], [b])[0, 0], abs=1e-12)
    assert hull_iou([0, 1], [1, 1]) == 0.0  # a zero-length hull gives 0 rather than 0 / 0


def test_only_the_first_ten_listed_windows_count_before_sorting():
    refs = [{"qid": 1, "relevant_windows": [[0, 10]]}]
    ten_misses = [[50 + i, 60 + i, 0.5] for i in range(10)]
    preds = [{"qid": 1, "pred_relevant_windows": ten_misses + [[0, 10, 1.0]]}]
    result = qvhighlights_scores(preds, refs)
    assert result["MR-full-mAP"] == 0.0  # the exact window, though best scored, is listed 11th


def test_length_subsets_score_in_range_windows_only_and_empty_ones_are_absent():
    # query 1 has a short and a long window; predicting the long one is a hit in "full" and "long" but a false
    # positive in "short", where only [0, 4] is left
    refs = [{"qid": 1, "relevant_windows": [[0, 4], [40, 100]]}]
    preds = [{"qid": 1, "pred_relevant_windows": [[40, 100, 0.9]]}]
    result = qvhighlights_scores(preds, refs)
    assert result["MR-long-mAP"] == 100.0
    assert result["MR-short-mAP"] == 0.0
    assert result["MR-full-mAP"] == 50.0  # 1 of 2 windows found at precision 1 -> AP 1/2
    assert "MR-middle-mAP" not in result  # no window in (10, 30]: absent, where the official scorer fails
    # boundaries: a length of exactly 10 is short, exactly 30 middle, longer than 150 in no subset but in full
    for window, present in (([0, 10], "short"), ([0, 30], "middle"), ([0, 160], None)):
        out = qvhighlights_scores(
            [{"qid": 1, "pred_relevant_windows": [[*window, 1.0]]}],
            [{"qid": 1, "relevant_windows": [window]}],
        )
        assert {k for k in out if k.endswith("-mAP")} == {"MR-full-mAP"} | (
            {f"MR-{present}-mAP"} if present else set()
        )


def test_ground_truth_windows_tied_in_iou_are_tried_from_the_last():
    # windows A = [0, 10], B = [2, 12]; the first prediction [1, 11] ties at IoU 9/11 with both, the second [0, 8]
    # has IoU 0.8 with A and 0.5 with B. Taking B first (the official numpy order for few windows) leaves A for
    # the second prediction at thresholds 0.55..0.8 -> AP 1 there; taking A first would give AP 1/2.
    ap = detection_ap([[1, 11], [0, 8]], [0.9, 0.8], [[0, 10], [2, 12]])
    assert ap.tolist() == [1.0] * 7 + [0.0] * 3  # from 0.85 on, both miss (IoU 9/11 and 0.8)


# -- QVHighlights: a hand-computed highlight case --------------------------------------------------------------------

# query 1: 5 clips (duration 10), relevant clips 0, 1, 2 with annotator scores (4, 2, 0), (3, 3, 1), (2, 4, 1);
#   clips 3, 4 score 0. Predicted ranking: clip 1 (0.9), 3 (0.7), 0 (0.5), 4 (0.3), 2 (0.1).
# query 2: 3 clips, relevant clips 0 (1, 4, 1) and 2 (4, 4, 4). Ranking: clip 0 (0.9), 2 (0.5), 1 (0.2).
HL_REFERENCES = [
    {"qid": 1, "duration": 10, "relevant_windows": [[0, 6]], "relevant_clip_ids": [0, 1, 2],
     "saliency_scores": [[4, 2, 0], [3, 3, 1], [2, 4, 1]]},
    {"qid": 2, "duration": 6, "relevant_windows": [[0, 2]], "relevant_clip_ids": [0, 2],
     "saliency_scores": [[1, 4, 1], [4, 4, 4]]},
]  # fmt: skip
HL_PREDICTIONS = [
    {"qid": 1, "pred_saliency_scores": [0.5, 0.9, 0.1, 0.7, 0.3]},
    {"qid": 2, "pred_saliency_scores": [0.9, 0.2, 0.5]},
]
# AP per annotator = mean over its positives (in rank order) of the best precision at that rank or later.
# Fair (>= 2): q1 a1, a2 positives at ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3 = 34/45 each; a3 has none -> 0.
#   q2 a1: rank 2 -> 1/2; a2: ranks 1, 2 -> 1; a3: rank 2 -> 1/2. mAP = (68/45 + 2) / 6 = 158/270 -> 58.52.
#   Hit@1: q1's top clip 1 is positive for a1, a2; q2's clip 0 for a2 -> 100.
# Good (>= 3): q1 a1 ranks 1, 3 -> (1 + 2/3) / 2 = 5/6; a2 ranks 1, 5 -> (1 + 2/5) / 2 = 0.7; a3 0; q2 as Fair.
#   mAP = (5/6 + 0.7 + 2) / 6 -> 58.89; Hit@1 100.
# VeryGood (>= 4): q1 a1 rank 3 -> 1/3; a2 rank 5 -> 1/5; a3 0; q2 as Fair. mAP = (1/3 + 1/5 + 2) / 6 -> 42.22.
#   Hit@1: q1's clip 1 scores 3, 3, 1 -> miss; q2's clip 0 scores 1, 4, 1 -> hit for ANY annotator -> 50.
HL_EXPECTED = {
    "HL-min-Fair-mAP": 58.52,
    "HL-min-Fair-Hit1": 100.0,
    "HL-min-Good-mAP": 58.89,
    "HL-min-Good-Hit1": 100.0,
    "HL-min-VeryGood-mAP": 42.22,
    "HL-min-VeryGood-Hit1": 50.0,
}


def test_highlight_keys_match_the_hand_computed_case():
    result = qvhighlights_scores(HL_PREDICTIONS, HL_REFERENCES)
    assert result == HL_EXPECTED  # no pred_relevant_windows: the MR keys are absent
    raw = qvhighlights_scores(HL_PREDICTIONS, HL_REFERENCES, decimals=None)
    assert raw["HL-min-Fair-mAP"] == pytest.approx(100 * 158 / 270)
    assert raw["HL-min-Good-mAP"] == pytest.approx(100 * (5 / 6 + 0.7 + 2) / 6)
    assert raw["HL-min-VeryGood-mAP"] == pytest.approx(100 * (1 / 3 + 1 / 5 + 2) / 6)


def test_hit_at_one_counts_any_annotator_and_a_top_clip_past_the_end_misses():
    labels = np.array([[0, 0, 1], [1, 1, 1]])
    assert hit_at_one(labels, [0.9, 0.1]) == 1.0  # one annotator of three is enough
    assert hit_at_one(labels, [0.1, 0.1]) == 1.0  # ties: the first clip
    assert hit_at_one(labels, [0.1, 0.2, 0.9]) == 0.0  # the top clip is past the labelled clips


def test_ranking_ap_quirks_all_negative_all_positive_and_tied_groups():
    assert interpolated_ranking_ap([0, 0, 0], [0.3, 0.2, 0.1]) == 0.0
    assert interpolated_ranking_ap([1, 1, 1], [0.1, 0.2, 0.3]) == 1.0
    # labels 1, 1, 0, 0, 1 at scores 0.5, 0.5, 0.9, 0.3, 0.1: the tied group {0, 1} brings recall 0 -> 2/3 at
    # precision 2/3, clip 4 recall 1 at precision 3/5. The scorer averages over the two recall levels:
    # (2/3 + 3/5) / 2 = 19/30, where weighting by recall steps would give 2/3 * 2/3 + 1/3 * 3/5 = 29/45.
    assert interpolated_ranking_ap([1, 1, 0, 0, 1], [0.5, 0.5, 0.9, 0.3, 0.1]) == pytest.approx(19 / 30)


def test_saliency_is_scored_over_all_clips_including_unannotated_ones():
    # clip 3 is not in relevant_clip_ids: it scores 0 for every annotator, so ranking it first costs precision
    refs = [{"qid": 1, "duration": 8, "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}]
    result = qvhighlights_scores([{"qid": 1, "pred_saliency_scores": [0.5, 0.1, 0.2, 0.9]}], refs)
    assert result["HL-min-VeryGood-mAP"] == 50.0 and result["HL-min-VeryGood-Hit1"] == 0.0


def test_official_saliency_length_handling_pads_with_zero_and_cuts():
    refs = [{"qid": 1, "duration": 8, "relevant_clip_ids": [3], "saliency_scores": [[4, 4, 4]]}]
    short = [{"qid": 1, "pred_saliency_scores": [0.5, 0.4, 0.3]}]  # clip 3 missing -> 0, last of 4
    with pytest.raises(ValueError, match="qid 1.*3 scores, the video has 4 clips"):
        qvhighlights_scores(short, refs)
    result = qvhighlights_scores(short, refs, strict_saliency_length=False)
    assert result["HL-min-Fair-mAP"] == 25.0  # the positive ranks 4th: precision 1/4
    long = [{"qid": 1, "pred_saliency_scores": [0.1, 0.2, 0.3, 0.5, 0.9]}]
    result = qvhighlights_scores(long, refs, strict_saliency_length=False)
    assert result["HL-min-Fair-mAP"] == 100.0  # AP over the first 4 scores only
    assert result["HL-min-Fair-Hit1"] == 0.0  # Hit@1's argmax is clip 4, past the video's 4 clips


# -- perfect predictions, invariances ------------------------------------------------------------------------------


def random_qvhighlights(rng: random.Random, queries: int):
    """References on QVHighlights' 2-s grid and fitting predictions (windows near the truth, random saliency)."""
    refs, preds = [], []
    for qid in range(queries):
        clips = rng.choice([75, 40, 15])
        windows = []
        for _ in range(rng.randint(1, 3)):
            start = rng.randrange(0, clips - 1)
            windows.append([2 * start, 2 * rng.randint(start + 1, min(clips, start + 40))])
        relevant = sorted(rng.sample(range(clips), rng.randint(1, clips)))
        refs.append({"qid": qid, "query": f"q{qid}", "vid": f"v{qid}", "duration": 2 * clips, "relevant_windows": windows,
                     "relevant_clip_ids": relevant, "saliency_scores": [[rng.randint(0, 4) for _ in range(3)] for _ in relevant]})  # fmt: skip
        guesses = []
        for _ in range(rng.randint(1, 12)):
            start, end = rng.choice(windows)
            start, end = max(0.0, start + rng.uniform(-6, 6)), end + rng.uniform(-6, 6)
            guesses.append([start, max(end, start + 0.5), rng.random()])
        preds.append({"qid": qid, "query": f"q{qid}", "vid": f"v{qid}", "pred_relevant_windows": guesses,
                      "pred_saliency_scores": [rng.gauss(0, 1) for _ in range(clips)]})  # fmt: skip
    return preds, refs


def test_perfect_predictions_score_100():
    rng = random.Random(0)
    _, refs = random_qvhighlights(rng, 8)
    perfect = []
    for ref in refs:
        # the annotators agree (an annotator without a positive, or with only positives, would score AP 0 or 1
        # whatever the prediction), some clip scores 4 and some 0, so every level has positives and negatives
        clips = int(ref["duration"] / 2)
        truth = [rng.randint(0, 4) for _ in range(clips)]
        truth[0], truth[-1] = 4, 0
        ref["relevant_clip_ids"] = [c for c in range(clips) if truth[c] > 0]
        ref["saliency_scores"] = [[truth[c]] * 3 for c in ref["relevant_clip_ids"]]

        # windows of one length range per query: in a length subset, a query's windows of other lengths are gone,
        # so predicting them would be false positives there (see the subset test)
        def length_range(window):
            return sum(window[1] - window[0] > bound for bound in (10, 30))  # 0 short, 1 middle, 2 long

        first = length_range(ref["relevant_windows"][0])
        ref["relevant_windows"] = [w for w in ref["relevant_windows"] if length_range(w) == first]
        windows = [[s, e, 1.0 - 0.1 * i] for i, (s, e) in enumerate(ref["relevant_windows"])]
        perfect.append({"qid": ref["qid"], "pred_relevant_windows": windows, "pred_saliency_scores": truth})
    result = qvhighlights_scores(perfect, refs)
    assert set(result.values()) == {100.0}
    assert {"MR-full-mAP", "MR-full-R1@0.7", "HL-min-VeryGood-mAP", "HL-min-VeryGood-Hit1"} <= set(result)


def test_results_do_not_depend_on_record_order_score_scale_or_windows_past_the_tenth():
    preds, refs = random_qvhighlights(random.Random(1), 12)
    base = qvhighlights_scores(preds, refs, decimals=None)
    shuffled_preds, shuffled_refs = preds[:], refs[:]
    random.Random(2).shuffle(shuffled_preds)
    random.Random(3).shuffle(shuffled_refs)
    assert qvhighlights_scores(shuffled_preds, shuffled_refs, decimals=None) == base  # fsum: exactly equal
    scaled = [
        {**p, "pred_relevant_windows": [[s, e, 2.5 * c + 7] for s, e, c in p["pred_relevant_windows"]],
         "pred_saliency_scores": [3 * c - 1 for c in p["pred_saliency_scores"]]}
        for p in preds
    ]  # fmt: skip
    assert qvhighlights_scores(scaled, refs, decimals=None) == pytest.approx(base, abs=1e-12)
    # every query gets exactly 10 listed windows (its own, repeated); windows listed after them, even the best
    # scored, change nothing
    ten = [{**p, "pred_relevant_windows": (p["pred_relevant_windows"] * 10)[:10]} for p in preds]
    more = [
        {**p, "pred_relevant_windows": p["pred_relevant_windows"] + [[0, 2, 99.0], [4, 30, 1.0]]} for p in ten
    ]
    assert qvhighlights_scores(more, refs, decimals=None) == qvhighlights_scores(ten, refs, decimals=None)


def test_rounding_follows_the_official_two_decimals():
    raw = qvhighlights_scores(HL_PREDICTIONS, HL_REFERENCES, decimals=None)
    rounded = qvhighlights_scores(HL_PREDICTIONS, HL_REFERENCES)
    assert rounded == {k: float(f"{v:.2f}") for k, v in raw.items()}
    assert qvhighlights_scores(HL_PREDICTIONS, HL_REFERENCES, decimals=4)["HL-min-Fair-mAP"] == 58.5185


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preds", "refs", "message"),
    [
        ([{"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}], [{"qid": 1, "relevant_windows": [[0, 2]]}, {"qid": 2, "relevant_windows": [[0, 2]]}], "no prediction for reference qid 2"),
        ([{"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}, {"qid": "1", "pred_relevant_windows": [[0, 2, 1]]}], [{"qid": 1, "relevant_windows": [[0, 2]]}], "prediction for qid '1', which no reference has"),
        ([{"qid": 1, "pred_relevant_windows": [[4, 2, 1]]}], [{"qid": 1, "relevant_windows": [[0, 2]]}], r"qid 1: `pred_relevant_windows`: window 0 \[4.0, 2.0, 1.0\] has start >= end"),
        ([{"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}], [{"qid": 1, "relevant_windows": [[2, 2]]}], "reference qid 1: `relevant_windows`: window 0 .* start >= end"),
        ([{"qid": 1, "pred_relevant_windows": []}], [{"qid": 1, "relevant_windows": [[0, 2]]}], "qid 1: `pred_relevant_windows` is empty"),
        ([{"qid": 1, "pred_relevant_windows": [[0, 2]]}], [{"qid": 1, "relevant_windows": [[0, 2]]}], r"qid 1.*\[start, end, score\]"),
        ([{"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}, {"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}], [{"qid": 1, "relevant_windows": [[0, 2]]}], "qid 1 more than once"),
        ([{"qid": 1, "pred_relevant_windows": [[0, 2, 1]]}, {"qid": 2}], [{"qid": 1, "relevant_windows": [[0, 2]]}, {"qid": 2, "relevant_windows": [[0, 2]]}], "qid 2 has none"),
        ([{"qid": 1, "pred_saliency_scores": [1.0]}], [{"qid": 1, "duration": 2, "relevant_clip_ids": [1], "saliency_scores": [[4, 4, 4]]}], r"qid 1: `relevant_clip_ids` \[1\] lie outside the video's 1 clips"),
        ([{"qid": 1, "pred_saliency_scores": [1.0]}], [{"qid": 1, "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}], "reference qid 1 has no `duration`"),
        ([{"qid": 1, "pred_saliency_scores": [1.0, float("nan")]}], [{"qid": 1, "duration": 4, "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}], "qid 1: `pred_saliency_scores` must be finite"),
        ([{"qid": 1}], [{"qid": 1, "relevant_windows": [[0, 2]]}], "neither `pred_relevant_windows` nor `pred_saliency_scores`"),
    ],
    ids=["missing", "unknown", "pred-start>=end", "gt-start>=end", "no-windows", "no-score", "repeated", "partial",
         "clip-id", "no-duration", "nan", "nothing"],
)  # fmt: skip
def test_bad_records_get_errors_naming_the_qid(preds, refs, message):
    with pytest.raises(ValueError, match=message):
        qvhighlights_scores(preds, refs)


# -- independent implementations on random cases -------------------------------------------------------------------


def straightforward_detection_ap(pred, scores, gt, threshold):
    """VOC devkit style: score-sorted predictions, greedy matching, padded envelope, area at recall changes."""
    order = sorted(range(len(pred)), key=lambda i: -scores[i])  # Python's sort is stable
    taken = [False] * len(gt)
    tp, fp = [], []
    for i in order:
        s, e = pred[i]
        ious = []
        for j, (gs, ge) in enumerate(gt):
            inter = max(0.0, min(e, ge) - max(s, gs))
            ious.append((inter / ((e - s) + (ge - gs) - inter), j))
        hit = False
        for iou, j in sorted(ious, key=lambda x: (-x[0], -x[1])):  # equal IoU: the later window first
            if iou < threshold:
                break
            if not taken[j]:
                taken[j] = hit = True
                break
        tp.append(1.0 if hit else 0.0)
        fp.append(0.0 if hit else 1.0)
    ctp, cfp, precision, recall = 0.0, 0.0, [], []
    for t, f in zip(tp, fp, strict=True):
        ctp, cfp = ctp + t, cfp + f
        precision.append(ctp / (ctp + cfp))
        recall.append(ctp / len(gt))
    mpre, mrec = [0.0, *precision, 0.0], [0.0, *recall, 1.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def straightforward_sklearn_style_ap(labels, scores):
    """precision_recall_curve's points (one per distinct score, increasing threshold, then (1, 0)), precision made
    monotone from the low-threshold end, the mean of precision where float32 recall changes."""
    if len(set(labels)) == 1:
        return float(labels[0])
    thresholds = sorted(set(scores))
    positives = sum(labels)
    precision, recall = [], []
    for t in thresholds:
        chosen = [y for y, s in zip(labels, scores, strict=True) if s >= t]
        precision.append(sum(chosen) / len(chosen))
        recall.append(sum(chosen) / positives)
    precision.append(1.0)
    recall.append(0.0)
    for i in range(1, len(precision)):
        precision[i] = max(precision[i - 1], precision[i])
    recall32 = np.asarray(recall, dtype=np.float32)
    picked = [precision[i] for i in range(len(recall32) - 1) if recall32[i + 1] != recall32[i]]
    return sum(picked) / len(picked)


def straightforward_trapezoid_ap(ranked):
    """UMT's loop: start at (recall 0, precision 1), add a trapezoid at every rank."""
    positives = sum(ranked)
    if positives == 0:
        return 0.0
    hits = area = recall = 0.0
    precision = 1.0
    for i, label in enumerate(ranked):
        hits += label
        new_recall, new_precision = hits / positives, hits / (i + 1)
        area += (new_recall - recall) * (precision + new_precision) / 2
        recall, precision = new_recall, new_precision
    return area


grid_windows = st.lists(
    st.tuples(st.integers(0, 20), st.integers(1, 8)).map(lambda w: (float(w[0]), float(w[0] + w[1]))),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    pred=grid_windows,
    gt=grid_windows,
    scores=st.lists(st.integers(0, 3).map(float), min_size=6, max_size=6),
)
@example(pred=[(1.0, 11.0), (0.0, 8.0)], gt=[(0.0, 10.0), (2.0, 12.0)], scores=[0.9, 0.8, 0, 0, 0, 0])
def test_detection_ap_matches_a_straightforward_voc_implementation(pred, gt, scores):
    # integer windows and scores: IoU ties and score ties are frequent
    scores = scores[: len(pred)]
    ours = detection_ap(pred, scores, gt)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        assert ours[t] == pytest.approx(straightforward_detection_ap(pred, scores, gt, threshold), abs=1e-12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4)), min_size=1, max_size=15),
)
@example([(1, 5), (1, 5), (0, 9), (0, 3), (1, 1)])
def test_ranking_ap_matches_a_straightforward_sklearn_style_implementation(pairs):
    labels = [y for y, _ in pairs]
    scores = [s / 4 for _, s in pairs]  # few distinct values: ties between positives and negatives
    assert interpolated_ranking_ap(labels, scores) == pytest.approx(
        straightforward_sklearn_style_ap(labels, scores), abs=1e-12
    )


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=20))
def test_trapezoid_ap_matches_umts_loop(ranked):
    assert trapezoid_ap(ranked) == pytest.approx(straightforward_trapezoid_ap(ranked), abs=1e-12)


# -- YouTube Highlights and TVSum ------------------------------------------------------------------------------------


def test_youtube_highlights_hand_computed():
    predictions = [[0.1, 0.9, 0.8, 0.3], [0.3, 0.2, 0.1], [0.2, 0.8]]
    references = [
        {"labels": [0, 2, 0, 1], "domain": "dog", "vid": "a"},  # match counts: clips 1 and 3 are highlights
        {"labels": [0, 0, 0], "domain": "dog", "vid": "b"},  # no highlight: AP 0, still counted
        {"labels": [1, 0], "domain": "surfing", "vid": "c"},
    ]
    # a: ranking 1 (+), 2 (-), 3 (+), 0 (-): trapezoids 1/2 * (1 + 1)/2 + 1/2 * (1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24
    # dog: (19/24 + 0) / 2 = 19/48; surfing: ranking 1 (-), 0 (+): 1 * (0 + 1/2)/2 = 1/4; mAP = (19/48 + 1/4) / 2
    result = youtube_highlights_scores(predictions, references)
    assert result == pytest.approx(
        {"mAP": 100 * (19 / 48 + 0.25) / 2, "mAP-dog": 100 * 19 / 48, "mAP-surfing": 25.0}
    )
    assert list(result) == ["mAP", "mAP-dog", "mAP-surfing"]
    no_domain = youtube_highlights_scores(predictions, [{"labels": r["labels"]} for r in references])
    assert no_domain == pytest.approx({"mAP": 100 * (19 / 24 + 0 + 0.25) / 3})


# one video, 6 clips, 2 annotators: a1 = 1, 5, 2, 4, 3, 2 (lower median 2 -> positives 1, 3, 4), a2 = 3, 3, 1, 5, 2, 4
# (lower median 3 -> positives 3, 5). Predicted ranking: 2, 3, 0, 5, 4 | 1 (top 5 kept).
TVSUM_ANNOTATIONS = [[1, 3], [5, 3], [2, 1], [4, 5], [3, 2], [2, 4]]
TVSUM_SCORES = [0.6, 0.1, 0.9, 0.8, 0.3, 0.5]
# a1 top-5 labels 0 1 0 0 1 (P = 2: clip 1 is outside the top 5): 1/2 * (0 + 1/2)/2 + 1/2 * (1/4 + 2/5)/2 = 0.2875
# a2 top-5 labels 0 1 0 1 0: 1/2 * (0 + 1/2)/2 + 1/2 * (1/3 + 1/2)/2 = 1/8 + 5/24 = 1/3
TVSUM_VIDEO_AP = (0.2875 + 1 / 3) / 2


def test_tvsum_hand_computed():
    assert tvsum_video_ap(TVSUM_SCORES, TVSUM_ANNOTATIONS).tolist() == pytest.approx([0.2875, 1 / 3])
    perfect = {
        "annotations": [[5, 5], [1, 1], [3, 3], [2, 2]],
        "domain": "VT",
    }  # annotators agree; score = truth
    result = tvsum_scores(
        [TVSUM_SCORES, [5.0, 1.0, 3.0, 2.0]], [{"annotations": TVSUM_ANNOTATIONS, "domain": "BK"}, perfect]
    )
    assert result == pytest.approx(
        {"mAP": 100 * (TVSUM_VIDEO_AP + 1) / 2, "mAP-BK": 100 * TVSUM_VIDEO_AP, "mAP-VT": 100.0}
    )


def test_tvsum_labels_use_strictly_above_the_lower_median_and_only_the_top_k():
    assert lower_median([4, 1, 3, 2]) == 2.0 and lower_median([3, 1, 2]) == 2.0
    # clips scoring the median are negatives: scores 2, 2, 2, 1 have lower median 2, nothing above it -> AP 0
    assert tvsum_video_ap([0.9, 0.5, 0.4, 0.1], [[2], [2], [2], [1]]).tolist() == [0.0]
    # moving a positive from rank 6 to rank 7 (outside the top 5 either way) changes nothing
    a = tvsum_video_ap([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [[1], [1], [1], [5], [1], [5], [1]])
    b = tvsum_video_ap([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.4], [[1], [1], [1], [5], [1], [5], [1]])
    assert a.tolist() == b.tolist() == [pytest.approx((0 + 1 / 4) / 2)]  # one positive, rank 4 of 5
    assert tvsum_video_ap([0.9, 0.8], [[5], [1]], top_k=1).tolist() == [1.0]


def test_umt_metrics_invariances_and_perfect_scores():
    rng = np.random.default_rng(0)
    scores = [rng.normal(size=n) for n in (8, 12, 6, 9)]
    annotations = [rng.integers(1, 6, size=(len(s), 20)) for s in scores]
    refs = [
        {"annotations": a.tolist(), "domain": d}
        for a, d in zip(annotations, ["BK", "BK", "VT", "VT"], strict=True)
    ]
    base = tvsum_scores([s.tolist() for s in scores], refs)
    assert tvsum_scores([(3 * s + 1).tolist() for s in scores], refs) == pytest.approx(base, abs=1e-12)
    assert tvsum_scores([s.tolist() for s in scores[::-1]], refs[::-1]) == base
    labels = [(rng.random(len(s)) < 0.4).astype(int) for s in scores]
    for y in labels:
        y[0] = 1
    yt_refs = [{"labels": y.tolist(), "domain": "dog"} for y in labels]
    perfect = youtube_highlights_scores([y.astype(float).tolist() for y in labels], yt_refs)
    assert perfect == {"mAP": 100.0, "mAP-dog": 100.0}
    base = youtube_highlights_scores([s.tolist() for s in scores], yt_refs)
    assert youtube_highlights_scores([(0.5 * s - 2).tolist() for s in scores], yt_refs) == pytest.approx(
        base, abs=1e-12
    )


@pytest.mark.parametrize(
    ("scorer", "preds", "refs", "message"),
    [
        (youtube_highlights_scores, [[0.1, 0.2]], [{"labels": [1], "vid": "x"}], r"references`\[0\] \(vid 'x'\): 1 clip labels but 2"),
        (youtube_highlights_scores, [[0.1]], [{"labels": [-1]}], "must be >= 0"),
        (youtube_highlights_scores, [[0.1], [0.2]], [{"labels": [1], "domain": "dog"}, {"labels": [1]}], "all have a `domain` or none"),
        (youtube_highlights_scores, [[0.1]], [{"labels": [1]}, {"labels": [1]}], "pair up one per video"),
        (tvsum_scores, [[0.1], [0.2]], [{"annotations": [[1, 2]]}, {"annotations": [[1, 2, 3]]}], "same number of annotators"),
        (tvsum_scores, [[0.1, 0.2]], [{"annotations": [[1, 2]]}], "1 annotated clips but 2"),
    ],
)  # fmt: skip
def test_umt_metrics_reject_bad_input(scorer, preds, refs, message):
    with pytest.raises(ValueError, match=message):
        scorer(preds, refs)


# -- evaluate modules and the submission file ------------------------------------------------------------------------


def test_metric_packages_table_lists_the_grounding_modules():
    for name in ("qvhighlights", "youtube_highlights", "tvsum"):
        assert METRIC_PACKAGES[name] == "peft_video.tasks.grounding.metrics"


def test_evaluate_modules_compute_add_batch_and_accept_numpy_records():
    qv = load("qvhighlights")
    refs = [{**m, **h} for m, h in zip(MR_REFERENCES, [{"duration": 150, "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}] * 2, strict=True)]  # fmt: skip
    preds = [
        {**p, "pred_relevant_windows": np.asarray(p["pred_relevant_windows"]), "pred_saliency_scores": np.linspace(1, 0, 75)}
        for p in MR_PREDICTIONS
    ]  # fmt: skip
    result = qv.compute(predictions=preds, references=refs)
    assert {k: result[k] for k in MR_EXPECTED} == MR_EXPECTED
    assert result["HL-min-VeryGood-Hit1"] == 100.0 and result["HL-min-VeryGood-mAP"] == 100.0
    for p, r in zip(preds, refs, strict=True):
        qv.add(prediction=p, reference=r)
    assert qv.compute()["MR-full-mAP"] == 77.5
    qv.add_batch(predictions=HL_PREDICTIONS, references=HL_REFERENCES)
    assert qv.compute(decimals=None)["HL-min-VeryGood-mAP"] == pytest.approx(100 * (1 / 3 + 1 / 5 + 2) / 6)
    yt = load("youtube_highlights")
    assert yt.compute(predictions=[np.array([0.9, 0.1])], references=[{"labels": np.array([1, 0]), "domain": "dog"}]) == {
        "mAP": 100.0, "mAP-dog": 100.0}  # fmt: skip
    tv = load("tvsum")
    out = tv.compute(predictions=[TVSUM_SCORES], references=[{"annotations": TVSUM_ANNOTATIONS}], decimals=3)
    assert out == {"mAP": round(100 * TVSUM_VIDEO_AP, 3)}


def test_submission_file_is_the_official_jsonl_and_reads_back(tmp_path):
    preds, refs = random_qvhighlights(random.Random(5), 4)
    records = [
        {**p, "pred_relevant_windows": np.asarray(p["pred_relevant_windows"], np.float32),
         "pred_saliency_scores": np.asarray(p["pred_saliency_scores"])}
        for p in preds
    ]  # fmt: skip
    path = write_submission(records, tmp_path / "hl_val_submission.jsonl")
    with open(path) as f:  # how the official scorer reads it: json.loads of every line
        rows = [json.loads(line.strip("\n")) for line in f.readlines()]
    assert [list(row) for row in rows] == [list(SUBMISSION_FIELDS)] * 4
    for row, pred in zip(rows, preds, strict=True):
        assert row["qid"] == pred["qid"] and row["query"] == pred["query"] and row["vid"] == pred["vid"]
        assert all(type(v) is float for w in row["pred_relevant_windows"] for v in w)
        window_scores = [w[2] for w in row["pred_relevant_windows"]]
        assert window_scores == sorted(
            window_scores, reverse=True
        )  # listed best first, as the scorer assumes
        assert row["pred_saliency_scores"] == pytest.approx(pred["pred_saliency_scores"])
    assert read_submission(path) == rows
    as_written = [
        {**p, "pred_relevant_windows": sorted(np.asarray(p["pred_relevant_windows"], np.float32).tolist(), key=lambda w: -w[2])}
        for p in preds
    ]  # fmt: skip
    assert qvhighlights_scores(read_submission(path), refs) == qvhighlights_scores(as_written, refs)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"qid": 1, "query": "q", "vid": "v", "pred_relevant_windows": [[3, 1, 0.5]]}, r"qid 1: window 0 \[3.0, 1.0\] has start >= end"),
        ({"qid": 1, "query": "q", "vid": "v", "pred_relevant_windows": [[0, 1]]}, r"qid 1: window 0 must be \[start, end, score\]"),
        ({"qid": 1, "query": "q", "vid": "v"}, "qid 1: needs `pred_relevant_windows`"),
        ({"qid": 1, "query": "q", "vid": "v", "pred_saliency_scores": [1.0], "duration": 150}, r"qid 1: fields \['duration'\]"),
        ({"qid": 1.5, "query": "q", "vid": "v", "pred_saliency_scores": [1.0]}, "`qid` must be an int or a str"),
        ({"qid": 1, "query": "q", "vid": "v", "pred_saliency_scores": [math.inf]}, "qid 1: `pred_saliency_scores` must be a finite number"),
    ],
)  # fmt: skip
def test_submission_rejects_malformed_records(tmp_path, record, message):
    with pytest.raises(ValueError, match=message):
        write_submission([record], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow  # a fresh interpreter imports torch, transformers and open_clip: ~10-30 s
def test_evaluate_modules_load_offline_in_a_fresh_interpreter():
    out = run_fresh(
        """
        import json
        import peft_video.metrics as M
        print(json.dumps({name: M.metric_path(name) for name in ("qvhighlights", "youtube_highlights", "tvsum")}))
        r = M.load("qvhighlights").compute(
            predictions=[{"qid": 1, "pred_relevant_windows": [[10, 20, 0.9]]}],
            references=[{"qid": 1, "relevant_windows": [[10, 20]]}],
        )
        print(json.dumps(r))
        """
    )
    paths, result = (json.loads(line) for line in out.strip().splitlines()[-2:])
    assert all(p.endswith(f"grounding/metrics/{n}.py") for n, p in paths.items())
    assert result["MR-full-mAP"] == 100.0 and result["MR-short-mAP"] == 100.0 and "MR-long-mAP" not in result
