"""A word-level tokenizer over a closed vocabulary that loads as a real HF tokenizer (``AutoTokenizer``).

CLIP's text tower pools the hidden state at the first ``eos_token_id``; transformers keeps a legacy arg-max
pooling when ``eos_token_id == 2``, so the special ids here are chosen to avoid 2 for the end token.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
"""Special tokens in id order: pad 0, unk 1, bos 2, eos 3."""


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 32) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace/punctuation-splitting word-level tokenizer: '<bos> w1 ... wn <eos>'."""
    words = list(dict.fromkeys(words))
    if not words:
        raise ValueError("`words` must name at least one word, got an empty iterable")
    clashes = [w for w in words if w in SPECIAL_TOKENS or w != w.lower() or not w.isalnum()]
    if clashes:
        raise ValueError(
            f"`words` must be lower-case alphanumeric words, not special tokens; got {clashes[:5]}"
        )
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=model_max_length,
    )
