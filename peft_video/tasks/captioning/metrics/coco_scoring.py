"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) with ``pycocoevalcap``'s own scorers, as every captioning
paper and Token Mixing's code report them (SPICE left out: it downloads models on first use).

What is computed (definitions read from pycocoevalcap 1.2, whose classes do the scoring here):

- Tokenisation: Stanford CoreNLP 3.4.1's ``PTBTokenizer`` (the jar in pycocoevalcap's wheel) with ``-preserveLines
  -lowerCase``, then pycocoevalcap's punctuation tokens are dropped. Its quirks are kept: ``(`` becomes ``-lrb-``
  and stays (the removal list has the upper-case forms), a single letter with a period (``b.``) stays one token.
- BLEU-n (``Bleu(4)``): corpus BLEU with clipped n-gram counts over all references and the brevity penalty from the
  reference length closest to each candidate's.
- METEOR (``Meteor``): METEOR 1.5 (``meteor-1.5.jar``, ``-l en -norm``), corpus score from the summed statistics.
- ROUGE-L (``Rouge``): per caption the F-measure with beta 1.2 of the best LCS precision and the best LCS recall
  over the references (each maximised separately), averaged over captions.
- CIDEr (``Cider``): CIDEr-D: tf-idf vectors of 1..4-grams with the IDF from the references of the evaluated set
  (document frequency = the number of examples whose references hold the n-gram; log of the set size), the
  candidate's weights clipped at the reference's, cosine per n, a Gaussian length penalty with sigma 6, averaged
  over n and references, times 10. The length in the penalty is pycocoevalcap's: the number of bigrams, which differs
  from the word count only for empty captions. Consequences of the corpus IDF: scores depend on the whole evaluated
  set, so score it in one call; a set of one example scores CIDEr 0 (every n-gram has IDF log 1 - log 1 = 0), and
  an n-gram in every example's references carries no weight.

Java: the tokenizer and METEOR are Java programs. :func:`require_java` checks once that ``java`` runs and otherwise
raises :class:`JavaNotFoundError`, which says what is missing and how to install it; no metric is ever reported as
0 for want of Java. Where this wrapper differs from ``COCOEvalCap`` on purpose (same numbers wherever
``COCOEvalCap`` itself is right):

- Tokenisation runs the same jar, class and flags through :func:`ptb_tokenize`, which writes its input file to a
  temporary directory (``PTBTokenizer`` writes it into the installed package, which fails on a read-only install),
  fails loudly when Java fails (``PTBTokenizer`` then silently returns empty captions, which score 0), turns every
  character the Java lexer ends a line at into a space (``PTBTokenizer`` only handles ``"\\n"``: a ``"\\r"`` or
  U+2028 in one caption shifts every later caption onto the wrong image), and checks that one line comes back per
  caption. Lines are tokenised independently (``-preserveLines``), so predictions and references go in one call
  instead of two (one Java start less); the tests check the result against ``PTBTokenizer`` on each set apart.
- METEOR's Java process is started first, so that it loads its paraphrase table (the bulk of its several seconds)
  while the tokenizer and the Python scorers run, and it is always shut down before returning, also on errors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from peft_video.tasks.text_inputs import check_not_empty, check_text_pairs

BLEU_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
METRIC_KEYS: tuple[str, ...] = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr")
"""Result names, as in ``COCOEvalCap.eval``."""

JAVA_INSTALL_HINT = (
    "install a Java runtime (8 or newer) and put `java` on PATH, e.g. `apt-get install default-jre-headless` "
    "(Debian/Ubuntu), `dnf install java-17-openjdk-headless` (Fedora), `brew install openjdk` (macOS) or "
    "`conda install -c conda-forge openjdk`"
)

PTB_LINE_BREAKS = "\n\r\x0b\x0c\u2028\u2029"
"""Characters at which the Stanford PTB lexer ends a line under ``-preserveLines`` (checked against the jar)."""

_TO_SPACE = str.maketrans(dict.fromkeys(PTB_LINE_BREAKS, " "))
_PTB_JAR = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
_PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"


class JavaNotFoundError(RuntimeError):
    """No working ``java`` on PATH: the PTB tokenizer and METEOR of the COCO caption metrics need one."""


@functools.lru_cache(maxsize=8)
def _check_java(java: str) -> None:
    """Run ``java -version`` once per executable path; raise :class:`JavaNotFoundError` when it does not work."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise JavaNotFoundError(f"`{java} -version` could not run ({err}); {JAVA_INSTALL_HINT}") from err
    if proc.returncode != 0:
        raise JavaNotFoundError(
            f"`{java} -version` failed with exit code {proc.returncode}: {proc.stderr.strip()[-500:]}; "
            f"{JAVA_INSTALL_HINT}"
        )


def require_java() -> str:
    """Path of a working ``java`` on PATH (the one pycocoevalcap's METEOR starts); else :class:`JavaNotFoundError`,
    naming what is missing and how to install it."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            "the COCO caption metrics need Java: pycocoevalcap's PTB tokenizer (Stanford CoreNLP) and METEOR 1.5 "
            f"are Java programs, and no `java` was found on PATH ({os.environ.get('PATH', '')!r}); "
            f"{JAVA_INSTALL_HINT}"
        )
    _check_java(java)
    return java


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """pycocoevalcap's tokenisation of each text: Stanford PTBTokenizer (lower-cased, one line per text), then the
    punctuation tokens pycocoevalcap removes, removed; tokens joined by single spaces. One Java run for all texts."""
    texts = list(texts)
    if not texts:
        return []
    java = require_java()
    data = "\n".join(text.translate(_TO_SPACE) for text in texts).encode()
    with tempfile.TemporaryDirectory(prefix="peft_video_ptb_") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes(data)
        proc = subprocess.run(
            [java, "-cp", str(_PTB_JAR), _PTB_CLASS, "-preserveLines", "-lowerCase", str(path)],
            capture_output=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the PTB tokenizer (Java) failed with exit code {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()[-1000:]}"
        )
    lines = proc.stdout.decode().split("\n")
    if len(lines) != len(texts):
        raise RuntimeError(
            f"the PTB tokenizer returned {len(lines)} lines for {len(texts)} texts; refusing to guess which caption "
            "is which"
        )
    drop = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(token for token in line.rstrip().split(" ") if token not in drop) for line in lines]


def _close_meteor(meteor: Meteor) -> str:
    """Shut METEOR's Java process down (pycocoevalcap leaves that to garbage collection) and return what it wrote to
    stderr; a second call returns ``""``."""
    if meteor.lock.locked():  # compute_score raised while holding it; Meteor.__del__ would then wait forever
        meteor.lock.release()
    proc = meteor.meteor_p
    if proc.stderr.closed:
        return ""
    with contextlib.suppress(OSError):
        proc.stdin.close()
    proc.kill()
    proc.wait()
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    return stderr


def coco_caption_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    meteor: bool = True,
    percent: bool = False,
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) of one caption per example against its references, equal to
    pycocoevalcap's ``Bleu``, ``Meteor``, ``Rouge`` and ``Cider`` after its ``PTBTokenizer``.

    The values are on pycocoevalcap's scale (BLEU, METEOR, ROUGE-L in [0, 1]; CIDEr about 0-10) unless ``percent``
    multiplies them by 100 (the tables' convention, e.g. CIDEr 120.6). ``meteor=False`` leaves METEOR out (its Java
    start takes seconds); the tokenizer still needs Java. The whole evaluated set must come in one call (CIDEr's IDF).
    """
    predictions, references = check_text_pairs(predictions, references)
    check_not_empty(predictions)
    require_java()
    meteor_scorer = Meteor() if meteor else None  # starts loading now, while the rest runs
    try:
        tokens = ptb_tokenize(predictions + [ref for refs in references for ref in refs])
        res = {i: [tokens[i]] for i in range(len(predictions))}
        gts, start = {}, len(predictions)
        for i, refs in enumerate(references):
            gts[i] = tokens[start : start + len(refs)]
            start += len(refs)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores = dict(zip(BLEU_KEYS, bleu, strict=True))
        scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
        scores["CIDEr"], _ = Cider().compute_score(gts, res)
        if meteor_scorer is not None:  # last: its Java process has had the most time to load
            try:
                scores["METEOR"], _ = meteor_scorer.compute_score(gts, res)
            except (ValueError, OSError) as err:  # the JVM died: an empty answer line, or a broken pipe
                stderr = _close_meteor(meteor_scorer)
                raise RuntimeError(
                    f"METEOR (Java) failed: {err}; its error output: {stderr.strip()[-1000:]}"
                ) from err
    finally:
        if meteor_scorer is not None:
            _close_meteor(meteor_scorer)
    scale = 100.0 if percent else 1.0
    return {key: scale * float(scores[key]) for key in METRIC_KEYS if key in scores}
