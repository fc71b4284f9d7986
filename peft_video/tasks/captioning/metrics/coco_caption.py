"""``evaluate`` module: the COCO caption metrics BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D), equal to pycocoevalcap's
(PTB tokenisation, its scorer classes; SPICE left out). Needs Java (tokenizer and METEOR); without it a
``JavaNotFoundError`` says how to install one.

Load it from the installed package (no Hub fetch): ``peft_video.metrics.load("coco_caption")``. The scoring lives in
``peft_video.tasks.captioning.metrics.coco_scoring``, COCO-format files in ``...captioning.metrics.coco_format``.
"""

from __future__ import annotations

import datasets
import evaluate

from peft_video.tasks.captioning.metrics.coco_scoring import coco_caption_scores
from peft_video.tasks.text_inputs import TextPairInputs

_CITATION = """
@article{chen2015microsoft,
    title = {Microsoft COCO Captions: Data Collection and Evaluation Server},
    author = {Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
              Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
    journal = {arXiv preprint arXiv:1504.00325},
    year = {2015}
}
"""

_DESCRIPTION = """
The COCO caption evaluation (pycocoevalcap) of one generated caption per video or image against its references:
Stanford PTB tokenisation (lower-cased, punctuation dropped), corpus BLEU-1..4 with the closest reference length,
METEOR 1.5, ROUGE-L (beta 1.2) and CIDEr-D (clipped tf-idf n-grams with the IDF from the evaluated references, Gaussian
length penalty, x10). CIDEr depends on the whole evaluated set: give every example in one compute call.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one generated caption per example (may be empty).
    references: list with, per example, a non-empty list of reference captions (a single str counts as one).
    meteor: compute METEOR (default True; its Java start takes several seconds).
    percent: multiply every score by 100, as papers print them (default False: pycocoevalcap's scale).
Returns:
    Bleu_1, Bleu_2, Bleu_3, Bleu_4, METEOR, ROUGE_L, CIDEr: floats, as in pycocoevalcap's COCOEvalCap.eval.
Example:
    >>> coco = peft_video.metrics.load("coco_caption")
    >>> scores = coco.compute(predictions=["a man is cooking"], references=[["A man is cooking.", "a chef cooks"]])
    >>> round(scores["Bleu_1"], 6), scores["ROUGE_L"], scores["CIDEr"]  # BLEU's 1e-9 guard; CIDEr of one example: 0
    (1.0, 1.0, 0.0)
"""


class CocoCaption(TextPairInputs, evaluate.Metric):
    """BLEU, METEOR, ROUGE-L and CIDEr of captions with pycocoevalcap's tokenizer and scorers."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(
        self, predictions, references, meteor: bool = True, percent: bool = False
    ) -> dict[str, float]:
        return coco_caption_scores(predictions, references, meteor=meteor, percent=percent)
