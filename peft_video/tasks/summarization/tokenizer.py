"""Word-level tokenizers over a closed vocabulary with BART's or T5's special-token conventions.

The shipped tiny summarizers use them: saved next to the model, they load with ``AutoTokenizer.from_pretrained``
like a Hub checkpoint's tokenizer. BART: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4, sequences
``<s> w1 ... wn </s>``. T5: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``<extra_id_0>`` 3 (its mask token: T5's first
sentinel), sequences ``w1 ... wn </s>``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIALS", "build_summarization_tokenizer"]

SPECIALS: dict[str, tuple[str, ...]] = {
    "bart": ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    "t5": ("<pad>", "</s>", "<unk>", "<extra_id_0>"),
}


def build_summarization_tokenizer(
    words: Iterable[str], kind: str, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace / punctuation splitting word-level tokenizer for ``kind`` ``"bart"`` or ``"t5"``."""
    if kind not in SPECIALS:
        raise ValueError(f"`kind` must be one of {sorted(SPECIALS)}, got {kind!r}")
    specials = SPECIALS[kind]
    words = list(dict.fromkeys(words))
    bad = [w for w in words if w in specials or w != w.lower() or not w.isalnum()]
    if not words or bad:
        raise ValueError(f"`words` must be non-empty lower-case alphanumeric words, got {bad[:5] or 'none'}")
    vocab = {token: i for i, token in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bart":
        single, tokens = "<s> $A </s>", [("<s>", 0), ("</s>", 2)]
        extra = {"bos_token": "<s>", "mask_token": "<mask>"}
    else:
        single, tokens = "$A </s>", [("</s>", 1)]
        extra = {"mask_token": "<extra_id_0>"}
    backend.post_processor = processors.TemplateProcessing(single=single, special_tokens=tokens)
    backend.decoder = None
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        **extra,
    )
