"""Text-generation metrics: ``rouge`` (summarization) against Google's ``rouge_score`` with its bootstrap aggregator,
and ``coco_caption`` (captioning) against ``pycocoevalcap``'s PTB tokenizer and scorers, called directly; hand-computed
cases, perfect predictions, invariances, input errors, and the messages when Java is missing or fails.

The COCO tests need Java (the tokenizer is a Java program), as the metric does; METEOR's Java start takes seconds,
so the tests that run METEOR are few, and the ones that compare it on the large corpus are marked slow.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from rouge_score import rouge_scorer, scoring

import peft_video.metrics as M
from peft_video.tasks.captioning.metrics import (
    METRIC_KEYS,
    JavaNotFoundError,
    align_to_ground_truth,
    coco_caption_scores,
    ptb_tokenize,
    read_coco_ground_truth,
    read_coco_results,
    score_coco_files,
    write_coco_results,
)
from peft_video.tasks.summarization.metrics import ROUGE_TYPES, bootstrap_mid, rouge_scores

from .helpers import run_fresh

# -- shared data ---------------------------------------------------------------------------------------------------

SUMMARIES = [
    "the man is cooking pasta in the kitchen.\nhe adds salt and pepper.",
    "A woman plays the guitar on a stage",
    "",
    "dogs are running in the park",
    "how to fix a flat bicycle tire with a patch kit",
    "the chef slices onions\nthen fries them in butter\nand serves",
    "Cats; sleeping!",
]
SUMMARY_REFERENCES = [
    "a man cooks pasta in his kitchen.\nhe seasons it with salt.",
    ["a woman is playing guitar on stage", "someone plays a guitar", "a musician performs on stage"],
    ["nothing happens"],
    "two dogs run through a park",
    ["learn how to patch a flat bike tire", "fixing a bicycle tire"],
    ["onions are sliced and fried in butter by the chef", "the chef fries onions"],
    "a cat is sleeping on the sofa",
]

CAPTIONS = [
    "A man is playing a guitar.",
    "a woman (in red) slices tomatoes, carefully!",
    "",
    "dogs",
    "the cat isn't sleeping -- it's \"watching\" the birds...",
    "Two people ride bikes down a hill at 5 p.m. in the U.S.",
    "someone is cooking in a kitchen",
]
CAPTION_REFERENCES = [
    ["A man plays the guitar.", "a person is playing a guitar", "A MAN PLAYS MUSIC", "a man strums a guitar"],
    ["A woman is slicing a tomato.", "someone cuts tomatoes", "a lady in red chops tomatoes on a board"],
    ["a boy jumps into a pool", "a child swims"],
    ["two dogs are running", "dogs play in the snow", "a dog runs"],
    ["a cat watches birds from a window", "The cat is looking at the birds.", "a cat's watching birds"],
    ["two people are riding bicycles downhill", "people cycle down a hill", "two cyclists ride down a road"],
    ["a man is cooking in a kitchen", "someone cooks food", "a chef prepares a meal in the kitchen"],
]


def random_captions(n: int, refs: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """``n`` random captions with ``refs`` references each, over a small vocabulary with capitals and punctuation."""
    rng = random.Random(seed)
    words = (
        "a an the man woman dog cat child is are playing running cooking riding on in with at guitar ball street "
        "park kitchen red blue small big Two A The"
    ).split()

    def sentence() -> str:
        text = " ".join(rng.choices(words, k=rng.randint(3, 12)))
        return text + rng.choice(["", ".", "!", " .", ", then stops."])

    return [sentence() for _ in range(n)], [[sentence() for _ in range(refs)] for _ in range(n)]


# -- references: the libraries called directly -------------------------------------------------------------------


def rouge_score_reference(predictions, references, rouge_types=ROUGE_TYPES, use_stemmer=False, seed=0):
    """The Hub metric's recipe with rouge_score directly: score or score_multi, BootstrapAggregator, mid F x 100,
    numpy's global RNG seeded (what ``evaluate.load("rouge", seed=seed)`` does); also the per-example F x 100."""
    scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
    aggregator = scoring.BootstrapAggregator()
    per_example = []
    for prediction, refs in zip(predictions, references, strict=True):
        score = (
            scorer.score(refs, prediction) if isinstance(refs, str) else scorer.score_multi(refs, prediction)
        )
        aggregator.add_scores(score)
        per_example.append(score)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        aggregated = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    mid = {t: 100 * aggregated[t].mid.fmeasure for t in rouge_types}
    return mid, {t: [100 * s[t].fmeasure for s in per_example] for t in rouge_types}


def pycocoevalcap_reference(predictions, references, meteor: Meteor | None = None) -> dict[str, float]:
    """What ``COCOEvalCap.evaluate`` computes (SPICE aside): PTBTokenizer on references and on predictions, then the
    scorers on the tokenized dicts; METEOR with ``meteor``, a ``Meteor()`` started by the caller (so that its Java
    loads while the caller runs ours), which is then shut down."""
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = dict(zip(("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"), bleu, strict=True))
    scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    if meteor is not None:
        scores["METEOR"], _ = meteor.compute_score(gts, res)
        meteor.__del__()  # pycocoevalcap's own shutdown (it runs again, harmlessly, at garbage collection)
    return {k: float(v) for k, v in scores.items()}


def assert_scores_equal(ours: dict[str, float], theirs: dict[str, float], tol: float = 1e-12) -> None:
    """Same keys, every value within ``tol``."""
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], abs=tol, rel=0), key


def child_pids() -> list[int]:
    """Live child processes of this process (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(stat.parent.name))
    return children


@pytest.fixture(scope="module")
def rouge_metric():
    return M.load("rouge")


@pytest.fixture(scope="module")
def coco_metric():
    return M.load("coco_caption")


# -- rouge: against rouge_score ------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_rouge_equals_rouge_score_with_the_hub_aggregation(rouge_metric, use_stemmer, seed):
    theirs, per_example = rouge_score_reference(
        SUMMARIES, SUMMARY_REFERENCES, use_stemmer=use_stemmer, seed=seed
    )
    ours = rouge_metric.compute(
        predictions=SUMMARIES, references=SUMMARY_REFERENCES, use_stemmer=use_stemmer, bootstrap_seed=seed
    )
    assert ours == theirs  # the same floats: same draws, same arithmetic
    ours_each = rouge_metric.compute(
        predictions=SUMMARIES, references=SUMMARY_REFERENCES, use_stemmer=use_stemmer, use_aggregator=False
    )
    assert ours_each == per_example


def test_rouge_default_is_no_stemmer_and_the_four_types(rouge_metric):
    ours = rouge_metric.compute(predictions=SUMMARIES, references=SUMMARY_REFERENCES)
    assert list(ours) == ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    assert ours == rouge_score_reference(SUMMARIES, SUMMARY_REFERENCES, use_stemmer=False, seed=0)[0]
    assert ours != rouge_score_reference(SUMMARIES, SUMMARY_REFERENCES, use_stemmer=True, seed=0)[0]


words = st.sampled_from("the a man dog runs ran running cooks cooking pasta park in on . , ! Dog MAN".split())
texts = st.lists(words, max_size=12).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(texts, st.lists(texts.filter(str.strip), min_size=1, max_size=3)), min_size=1, max_size=6
    ),
    seed=st.integers(0, 2**32 - 1),
    types=st.lists(
        st.sampled_from(["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]), min_size=1, unique=True
    ),
)
@example(pairs=[("", ["a"])], seed=0, types=["rougeLsum"])
def test_rouge_scores_equal_rouge_score_on_random_texts(pairs, seed, types):
    predictions = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    theirs, per_example = rouge_score_reference(predictions, references, types, seed=seed)
    assert rouge_scores(predictions, references, types, bootstrap_seed=seed) == theirs
    assert rouge_scores(predictions, references, types, use_aggregator=False) == per_example


def test_bootstrap_mid_equals_rouge_scores_aggregator():
    matrix = np.random.default_rng(3).random((37, 3))
    aggregator = scoring.BootstrapAggregator(n_samples=200)
    for row in matrix:
        aggregator.add_scores({"x": scoring.Score(*row)})
    np.random.seed(11)
    theirs = aggregator.aggregate()["x"].mid
    ours = bootstrap_mid(matrix, np.random.RandomState(11), 200)
    assert tuple(ours) == tuple(theirs)
    # the mid is a median of resample means: near the mean, not equal to it
    assert ours[2] != matrix[:, 2].mean() and abs(ours[2] - matrix[:, 2].mean()) < 0.02


# -- rouge: hand-computed cases, perfect predictions, invariances, determinism ---------------------------------------


def test_rouge_hand_computed_cases(rouge_metric):
    one = rouge_metric.compute(predictions=["a man is cooking"], references=["a man cooks pasta"])
    assert one["rouge1"] == 50.0  # 2 of 4 unigrams both ways
    assert one["rouge2"] == pytest.approx(100 / 3)  # "a man" of 3 bigrams both ways
    # LCS of "a b c d e" and "a x c y e" is "a c e": P = R = 3/5
    lcs = rouge_metric.compute(predictions=["a b c d e"], references=["a x c y e"])
    assert lcs["rougeL"] == pytest.approx(60.0) and lcs["rouge2"] == 0.0
    # the stemmer maps cooking / cooks to cook: P = 3/4, R = 3/3
    stemmed = rouge_metric.compute(
        predictions=["a man is cooking"], references=["a man cooks"], use_stemmer=True
    )
    assert stemmed["rouge1"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    # several references: the best one per type (here the second for every type)
    multi = rouge_metric.compute(predictions=["a b c"], references=[["x y z", "a b c"]])
    assert all(v == 100.0 for v in multi.values())


def test_rouge_lsum_splits_sentences_at_newlines_only(rouge_metric):
    swapped = rouge_metric.compute(predictions=["a b\nc d"], references=["c d\na b"])
    assert swapped["rougeL"] == 50.0  # one token sequence: LCS "c d" (or "a b") of 4
    assert swapped["rougeLsum"] == 100.0  # per sentence: each reference sentence fully covered
    one_line = rouge_metric.compute(predictions=["a b. c d."], references=["c d. a b."])
    assert one_line["rougeLsum"] == one_line["rougeL"] == 50.0  # no sentence splitting at periods


def test_rouge_perfect_predictions_score_100(rouge_metric):
    texts = [s for s in SUMMARIES if s]
    assert rouge_metric.compute(predictions=texts, references=texts) == dict.fromkeys(ROUGE_TYPES, 100.0)


def test_rouge_invariances(rouge_metric):
    base = rouge_metric.compute(predictions=SUMMARIES, references=SUMMARY_REFERENCES)
    # the default tokenizer ignores case and punctuation
    shouted = [s.upper().replace(" ", " , ") for s in SUMMARIES]
    assert rouge_metric.compute(predictions=shouted, references=SUMMARY_REFERENCES) == base
    # references: their order within an example, a repeated one, a single string vs a list of it
    shuffled = [list(reversed(r)) + [r[0]] if isinstance(r, list) else [r] for r in SUMMARY_REFERENCES]
    assert rouge_metric.compute(predictions=SUMMARIES, references=shuffled) == base
    # per example, the order of the examples only permutes the values
    each = rouge_metric.compute(predictions=SUMMARIES, references=SUMMARY_REFERENCES, use_aggregator=False)
    back = rouge_metric.compute(
        predictions=SUMMARIES[::-1], references=SUMMARY_REFERENCES[::-1], use_aggregator=False
    )
    assert {t: v[::-1] for t, v in back.items()} == each


def test_rouge_bootstrap_is_reproducible_and_leaves_numpys_rng_alone(rouge_metric):
    np.random.seed(123)
    state = np.random.get_state()
    first = rouge_scores(SUMMARIES, SUMMARY_REFERENCES)
    after = np.random.get_state()
    assert all(
        np.array_equal(a, b) for a, b in zip(state[1:3], after[1:3], strict=True)
    )  # global RNG untouched
    assert rouge_scores(SUMMARIES, SUMMARY_REFERENCES) == first
    assert rouge_metric.compute(predictions=SUMMARIES, references=SUMMARY_REFERENCES) == first
    other = rouge_scores(SUMMARIES, SUMMARY_REFERENCES, bootstrap_seed=1)
    assert other != first  # the seed matters, and only a little: both are medians of resample means
    assert all(abs(other[t] - first[t]) < 5 for t in ROUGE_TYPES)


def test_rouge_add_batch_accumulates_like_one_call(rouge_metric):
    rouge_metric.add_batch(predictions=SUMMARIES[:3], references=SUMMARY_REFERENCES[:3])
    rouge_metric.add(prediction=SUMMARIES[3], reference=SUMMARY_REFERENCES[3])
    rouge_metric.add_batch(predictions=SUMMARIES[4:], references=SUMMARY_REFERENCES[4:])
    assert rouge_metric.compute() == rouge_metric.compute(
        predictions=SUMMARIES, references=SUMMARY_REFERENCES
    )


# -- input errors (shared by both modules) --------------------------------------------------------------------------

BAD_INPUTS = [
    (["a", "b"], ["a"], r"one entry per example, got 2 predictions and 1 references"),
    (["a", 5], ["a", "b"], r"`predictions\[1\]` must be a string, got int"),
    (["a", None], ["a", "b"], r"`predictions\[1\]` must be a string, got NoneType"),
    (["a", "b"], [["a"], []], r"`references\[1\]` is an empty list"),
    (["a", "b"], [["a"], ["b", 3]], r"`references\[1\]\[1\]` must be a string, got int"),
    (["a", "b"], [["a"], [" \n"]], r"`references\[1\]\[0\]` is blank"),
    ("a b", ["a b"], r"`predictions` must be a list, got str"),
    (["a"], {"x": "a"}, r"`references` must be a list, got dict"),
    ([], [], r"are empty: there is nothing to score"),
]


@pytest.mark.parametrize("predictions, references, message", BAD_INPUTS)
def test_rouge_bad_inputs_are_named(rouge_metric, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        rouge_metric.compute(predictions=predictions, references=references)
    with pytest.raises(ValueError, match=message):
        rouge_scores(predictions, references)


@pytest.mark.parametrize("predictions, references, message", BAD_INPUTS)
def test_coco_caption_bad_inputs_are_named(coco_metric, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        coco_metric.compute(predictions=predictions, references=references)


def test_rouge_bad_options(rouge_metric):
    with pytest.raises(
        ValueError, match=r"`rouge_types` must be distinct names .* \(not ROUGE types: \['rougeX'\]\)"
    ):
        rouge_metric.compute(predictions=["a"], references=["a"], rouge_types=["rouge1", "rougeX"])
    with pytest.raises(ValueError, match="`rouge_types` must be distinct"):
        rouge_scores(["a"], ["a"], ["rouge1", "rouge1"])
    with pytest.raises(ValueError, match="`bootstrap_samples` must be a positive integer, got 0"):
        rouge_scores(["a"], ["a"], bootstrap_samples=0)
    with pytest.raises(ValueError, match=r"`prediction` must be a string, got int"):
        rouge_metric.add(prediction=3, reference="a")


# -- coco_caption: against pycocoevalcap -----------------------------------------------------------------------------


def test_ptb_tokenize_equals_pycocoevalcaps_tokenizer():
    texts = (
        CAPTIONS + [r for refs in CAPTION_REFERENCES for r in refs] + ["café (Übung) naïve", '"', "x |||  y"]
    )
    theirs = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert ptb_tokenize(texts) == [theirs[i][0] for i in range(len(texts))]
    assert ptb_tokenize(["A man, (in RED)!"]) == ["a man -lrb- in red -rrb-"]  # pycocoevalcap's quirk, kept


def test_ptb_tokenize_keeps_one_line_per_caption_whatever_the_line_breaks():
    texts = ["line\rbreak", "x\u2028y", "crlf\r\nhere", "form\x0cfeed", "last one"]
    assert ptb_tokenize(texts) == ["line break", "x y", "crlf here", "form feed", "last one"]
    # pycocoevalcap's own tokenizer shifts every caption after such a break onto the wrong image
    shifted = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert shifted[1] == ["break"]


def test_coco_caption_equals_pycocoevalcap_without_meteor(coco_metric):
    theirs = pycocoevalcap_reference(CAPTIONS, CAPTION_REFERENCES)
    ours = coco_metric.compute(predictions=CAPTIONS, references=CAPTION_REFERENCES, meteor=False)
    assert_scores_equal(ours, theirs)
    predictions, references = random_captions(60, 5, seed=1)
    assert_scores_equal(
        coco_caption_scores(predictions, references, meteor=False),
        pycocoevalcap_reference(predictions, references),
    )


def test_coco_caption_with_meteor_equals_pycocoevalcap_and_closes_java(coco_metric):
    reference_meteor = Meteor()
    before = child_pids()
    ours = coco_metric.compute(predictions=CAPTIONS, references=CAPTION_REFERENCES)
    assert child_pids() == before  # our METEOR's Java process is gone, not left for garbage collection
    assert list(ours) == list(METRIC_KEYS)
    assert_scores_equal(ours, pycocoevalcap_reference(CAPTIONS, CAPTION_REFERENCES, meteor=reference_meteor))
    assert 0 < ours["METEOR"] < 1


@pytest.mark.slow
def test_coco_caption_100_captions_x_5_references_equals_pycocoevalcap():
    predictions, references = random_captions(100, 5, seed=2)
    reference_meteor = Meteor()
    ours = coco_caption_scores(predictions, references)
    assert_scores_equal(ours, pycocoevalcap_reference(predictions, references, meteor=reference_meteor))


# -- coco_caption: hand-computed cases, perfect predictions, invariances ---------------------------------------------

TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU guards against 0/0: (matches + tiny) / (guesses + small)


def test_coco_caption_hand_computed_cases():
    # an exact match of 4 tokens: every precision (k + tiny) / (k + small), brevity penalty from the same ratio
    exact = coco_caption_scores(["a man is cooking."], [["A man is cooking", "a chef cooks"]], meteor=False)
    ratio = (4 + TINY) / (4 + SMALL)
    assert exact["Bleu_1"] == pytest.approx(ratio * math.exp(1 - 1 / ratio), rel=1e-14)
    assert exact["Bleu_1"] == pytest.approx(1.0, abs=1e-8) and exact["ROUGE_L"] == 1.0
    assert exact["CIDEr"] == 0.0  # a set of one example: every n-gram has IDF log(1) - log(1) = 0
    # closest reference length: 4 candidate tokens, references of 2 and 5 tokens -> 5 (shortest would be 2: no BP)
    closest = coco_caption_scores(["a b c d"], [["a b", "a b c d e"]], meteor=False)
    assert closest["Bleu_1"] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-8)
    # ROUGE-L, beta 1.2: LCS("a b c", "a x b y c z") = 3, P = 1, R = 1/2
    lcs = coco_caption_scores(["a b c"], [["a x b y c z"]], meteor=False)
    assert lcs["ROUGE_L"] == pytest.approx((1 + 1.2**2) * 1 * 0.5 / (0.5 + 1.2**2 * 1), rel=1e-15)
    # CIDEr: two examples with disjoint words, each predicted exactly: IDF log 2 everywhere, cosine 1, no penalty
    cider = coco_caption_scores(
        ["one two three four five", "six seven eight nine ten"],
        [["one two three four five"], ["six seven eight nine ten"]],
        meteor=False,
    )
    assert cider["CIDEr"] == pytest.approx(10.0, rel=1e-12)


def test_coco_caption_perfect_predictions():
    references = [refs[:1] for refs in CAPTION_REFERENCES]
    perfect = coco_caption_scores([refs[0] for refs in references], references, meteor=False)
    assert perfect["ROUGE_L"] == 1.0
    assert all(perfect[k] == pytest.approx(1.0, abs=1e-8) for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"))
    # with several references the best ones match exactly: BLEU stays 1, ROUGE-L (max P and max R) too
    several = coco_caption_scores([refs[0] for refs in CAPTION_REFERENCES], CAPTION_REFERENCES, meteor=False)
    assert several["ROUGE_L"] == 1.0 and several["Bleu_4"] == pytest.approx(1.0, abs=1e-8)


def test_coco_caption_invariances_and_percent():
    base = coco_caption_scores(CAPTIONS, CAPTION_REFERENCES, meteor=False)
    # the PTB tokenizer lower-cases and pycocoevalcap drops punctuation tokens
    noisy = [c.upper().replace(" ", " , ") + " !" for c in CAPTIONS]
    assert_scores_equal(coco_caption_scores(noisy, CAPTION_REFERENCES, meteor=False), base)
    # the order of the examples and of the references of each example
    order = [3, 0, 6, 2, 5, 1, 4]
    permuted = coco_caption_scores(
        [CAPTIONS[i] for i in order], [CAPTION_REFERENCES[i][::-1] for i in order], meteor=False
    )
    assert_scores_equal(permuted, base)
    # a single string reference is one reference
    single = coco_caption_scores(CAPTIONS, [refs[0] for refs in CAPTION_REFERENCES], meteor=False)
    assert_scores_equal(
        single, coco_caption_scores(CAPTIONS, [refs[:1] for refs in CAPTION_REFERENCES], meteor=False)
    )
    scaled = coco_caption_scores(CAPTIONS, CAPTION_REFERENCES, meteor=False, percent=True)
    assert_scores_equal(scaled, {k: 100 * v for k, v in base.items()})


def test_coco_caption_add_batch_accumulates_like_one_call(coco_metric):
    coco_metric.add_batch(predictions=CAPTIONS[:4], references=CAPTION_REFERENCES[:4])
    coco_metric.add_batch(predictions=CAPTIONS[4:], references=CAPTION_REFERENCES[4:])
    assert coco_metric.compute(meteor=False) == coco_caption_scores(
        CAPTIONS, CAPTION_REFERENCES, meteor=False
    )


# -- coco_caption: Java missing or failing -----------------------------------------------------------------------------


def test_java_missing_or_failing_is_a_clear_error_and_modules_load_offline(tmp_path):
    """One fresh interpreter (Hub offline): both modules load from the package and score; then with a PATH that has
    no java, coco_caption says what is missing and how to install it; then with a java whose METEOR dies at start,
    an error (not a 0, not a hang)."""
    real_java = shutil.which("java")
    assert real_java is not None, "these tests need Java, as the metric does"
    no_java = tmp_path / "no_java"
    no_java.mkdir()
    broken = tmp_path / "broken_meteor"
    broken.mkdir()
    (broken / "java").write_text(
        f'#!/bin/sh\ncase "$*" in *meteor*) echo "meteor broke" >&2; exit 1;; esac\nexec "{real_java}" "$@"\n'
    )
    (broken / "java").chmod(0o755)
    out = run_fresh(
        f"""
        import json, os
        import peft_video.metrics as M
        from peft_video.tasks.captioning.metrics import JavaNotFoundError
        rouge = M.load("rouge").compute(predictions=["a man is cooking"], references=["a man cooks pasta"])
        coco = M.load("coco_caption")
        scores = coco.compute(predictions=["a dog runs"], references=[["a dog runs", "dogs run"]], meteor=False)
        print(json.dumps({{"rouge": rouge, "coco": scores}}))
        os.environ["PATH"] = {str(no_java)!r}
        try:
            coco.compute(predictions=["a dog"], references=[["a dog runs"]])
        except JavaNotFoundError as err:
            print("MISSING", err)
        os.environ["PATH"] = {str(broken)!r}
        try:
            coco.compute(predictions=["a dog"], references=[["a dog runs"]])
        except RuntimeError as err:
            print("FAILED", err)
        """,
        timeout=150,
    )
    lines = out.strip().splitlines()
    result = json.loads(lines[-3])
    assert result["rouge"]["rouge1"] == 50.0
    assert result["coco"]["ROUGE_L"] == 1.0 and "METEOR" not in result["coco"]
    assert lines[-2].startswith("MISSING the COCO caption metrics need Java")
    assert "no `java` was found on PATH" in lines[-2] and "apt-get install default-jre-headless" in lines[-2]
    assert lines[-1].startswith("FAILED METEOR (Java) failed") and "meteor broke" in lines[-1]


def test_a_failing_tokenizer_is_an_error_and_meteors_java_is_closed_on_the_way_out(tmp_path, monkeypatch):
    real_java = shutil.which("java")
    java = tmp_path / "java"  # a java whose PTB tokenizer fails (METEOR has started by then)
    java.write_text(
        f'#!/bin/sh\ncase "$*" in *PTBTokenizer*) echo "ptb broke" >&2; exit 1;; esac\nexec "{real_java}" "$@"\n'
    )
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    before = child_pids()
    with pytest.raises(
        RuntimeError, match="the PTB tokenizer \\(Java\\) failed with exit code 1: ptb broke"
    ) as info:
        coco_caption_scores(["a dog"], [["a dog runs"]])
    # the traceback still holds the frames (and so the Meteor object): its process must be gone all the same
    assert info.traceback and child_pids() == before


def test_broken_java_is_a_clear_error(tmp_path, monkeypatch):
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 3\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        JavaNotFoundError, match=r"-version` failed with exit code 3: Error: could not create"
    ):
        coco_caption_scores(["a dog"], [["a dog runs"]])
    with pytest.raises(JavaNotFoundError, match="default-jre-headless"):
        ptb_tokenize(["a dog"])


# -- COCO-format files -----------------------------------------------------------------------------------------------


def write_ground_truth(path: Path, image_ids, references) -> Path:
    annotations = [
        {"image_id": i, "id": 100 * n + k, "caption": ref}
        for n, (i, refs) in enumerate(zip(image_ids, references, strict=True))
        for k, ref in enumerate(refs)
    ]
    path.write_text(json.dumps({"images": [{"id": i} for i in image_ids], "annotations": annotations}))
    return path


def test_coco_files_round_trip_and_score_like_the_lists(tmp_path):
    image_ids = [7, 3, 11, 5, 2, 13, 17]
    gt = write_ground_truth(tmp_path / "gt.json", image_ids, CAPTION_REFERENCES)
    order = [4, 0, 6, 2, 1, 5, 3]  # results in another order than the ground truth
    results = write_coco_results(
        tmp_path / "res.json", [image_ids[i] for i in order], [CAPTIONS[i] for i in order]
    )
    assert json.loads(results.read_text())[0] == {"image_id": 2, "caption": CAPTIONS[4]}
    assert read_coco_results(results) == dict(zip(image_ids, CAPTIONS, strict=True))
    assert read_coco_ground_truth(gt) == dict(zip(image_ids, CAPTION_REFERENCES, strict=True))
    ids, predictions, references = align_to_ground_truth(
        read_coco_results(results), read_coco_ground_truth(gt)
    )
    assert (ids, predictions, references) == (image_ids, CAPTIONS, CAPTION_REFERENCES)  # ground-truth order
    assert score_coco_files(results, gt, meteor=False) == coco_caption_scores(
        CAPTIONS, CAPTION_REFERENCES, meteor=False
    )
    # string ids (video datasets) work the same
    named = ["video7", "video3"]
    gt2 = write_ground_truth(tmp_path / "gt2.json", named, CAPTION_REFERENCES[:2])
    res2 = write_coco_results(tmp_path / "res2.json", named, CAPTIONS[:2])
    assert align_to_ground_truth(read_coco_results(res2), read_coco_ground_truth(gt2))[0] == named


def test_coco_files_errors(tmp_path):
    gt = write_ground_truth(tmp_path / "gt.json", [1, 2, 3], [["a cat"], ["a dog"], ["a bird"]])
    partial = write_coco_results(tmp_path / "partial.json", [1, 3], ["a cat", "a bird"])
    with pytest.raises(
        ValueError, match=r"1 ground-truth images have no result: \[2\] \(pass require_all=False"
    ):
        score_coco_files(partial, gt, meteor=False)
    covered = score_coco_files(partial, gt, meteor=False, require_all=False)
    assert covered == coco_caption_scores(["a cat", "a bird"], [["a cat"], ["a bird"]], meteor=False)
    stray = write_coco_results(tmp_path / "stray.json", [1, 9], ["a cat", "a fish"])
    with pytest.raises(ValueError, match=r"results name 1 image ids not in the ground truth: \[9\]"):
        score_coco_files(stray, gt, meteor=False)
    with pytest.raises(ValueError, match=r"`image_ids\[1\]` repeats image id 1"):
        write_coco_results(tmp_path / "dup.json", [1, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"`image_ids\[0\]` must be an int or a string, got float"):
        write_coco_results(tmp_path / "bad.json", [1.5], ["a"])
    (tmp_path / "dup_res.json").write_text(
        json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}])
    )
    with pytest.raises(ValueError, match=r"results\[1\] repeats image id 1"):
        read_coco_results(tmp_path / "dup_res.json")
    no_caption = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [{"image_id": 1, "id": 0, "caption": "a cat"}],
    }
    (tmp_path / "no_caption.json").write_text(json.dumps(no_caption))
    with pytest.raises(ValueError, match=r"the references of image 2 in .* is an empty list"):
        read_coco_ground_truth(tmp_path / "no_caption.json")
    orphan = {
        "images": [{"id": 1}],
        "annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 4, "caption": "b"}],
    }
    (tmp_path / "orphan.json").write_text(json.dumps(orphan))
    with pytest.raises(ValueError, match=r"annotations\[1\] in .* names image id 4, not in `images`"):
        read_coco_ground_truth(tmp_path / "orphan.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="ground-truth file .* is not valid JSON"):
        read_coco_ground_truth(tmp_path / "broken.json")
