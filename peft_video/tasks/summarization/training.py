"""Training and scoring the vision-guided summarizers with ``transformers.Seq2SeqTrainer``.

The models compute their own loss from ``labels``, and ``generate()`` reads ``video_features`` / ``video_mask``
like any input, so the stock ``Seq2SeqTrainer`` trains them and, with ``predict_with_generate=True``, writes
summaries with the decoding settings of :data:`GENERATION` (VG-GPLMs' scripts: beam 5, at most 64 tokens,
``no_repeat_ngram_size`` 3). :func:`make_trainer` wires the collator, the generation settings, validation-split
model selection on ROUGE-L and PVLA (``PVLACallback`` at the fusion, :data:`DEFAULT_PVLA_WEIGHT`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import GenerationConfig, Seq2SeqTrainer, Seq2SeqTrainingArguments

from .data import SummarizationCollator
from .synthetic import SyntheticExample, order_correct, video_only_share

__all__ = [
    "DEFAULT_PVLA_WEIGHT",
    "FUSION_LEARNING_RATE",
    "GENERATION",
    "dataset_rows",
    "decode",
    "make_trainer",
    "summary_metrics",
]

GENERATION: dict[str, Any] = {"num_beams": 5, "max_new_tokens": 64, "no_repeat_ngram_size": 3}
"""Decoding settings of VG-GPLMs' test scripts (beam 5, at most 64 new tokens, no repeated trigram)."""

FUSION_LEARNING_RATE = 3e-3
"""Peak learning rate of the fusion (the modules every method trains), the same under every method, so that methods
differ only in what they do to the pretrained model (the registry's per-method rates apply to the rest). Between
the registry's rate for new modules alone (``frozen``, 1e-3) and its adapters' (1e-2); chosen once on the synthetic
validation split (READ at 1e-2 and 3e-3, fusion alone at 1e-3), not on the test split."""

DEFAULT_PVLA_WEIGHT = 0.1
"""PVLA's weight beside the summarization loss (READ-PVLA's public code uses 1e-5 for How2). The term is a cosine
transport cost in [0, 2] next to a token cross-entropy of order 1; at 1e-5 it could not move anything in a run of a
few hundred steps, so we keep the grounding task's 0.1: a regulariser an order of magnitude below the task loss.
Not tuned on the test split; the comparison reports READ with and without it."""


def decode(tokenizer: Any, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    """Token ids (label padding -100 allowed) -> summaries without special tokens, single-spaced."""
    array = np.asarray(ids)
    array = np.where(array < 0, tokenizer.pad_token_id, array)
    return [" ".join(text.split()) for text in tokenizer.batch_decode(array, skip_special_tokens=True)]


def dataset_rows(predictions: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` rows of a ``Seq2SeqTrainer`` prediction array that belong to its dataset, in order.

    Under a multi-process launch ``Seq2SeqTrainer`` gathers generated ids with ``gather`` (it means not to drop
    samples), so the array also holds the samples Accelerate repeated to give every process a full last batch. Those
    come after the dataset's own rows (the last real batch is the last one dealt), so the first ``count`` rows are the
    dataset's. One process: the array is exactly ``count`` rows.
    """
    if len(predictions) < count:
        raise ValueError(f"{len(predictions)} generated rows for a dataset of {count}")
    return predictions[:count]


def summary_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    examples: Sequence[SyntheticExample] | None = None,
) -> dict[str, float | None]:
    """ROUGE-1 / 2 / L (percent, the house ``rouge`` metric) and, for synthetic examples (percent): the share of
    video-only slots (colour, shape, direction of each event) filled with the right word, the share of summaries that name both objects of their video, and the
    order accuracy over those (the first-named of the two is the first event; chance 50%; None if none)."""
    import peft_video

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    rouge = peft_video.metrics.load("rouge").compute(
        predictions=list(predictions), references=list(references)
    )
    scores = {name: float(rouge[name]) for name in ("rouge1", "rouge2", "rougeL")}
    if examples is not None:
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples for {len(predictions)} predictions")
        scores["video_only_words"] = 100 * float(
            np.mean([video_only_share(p, e) for p, e in zip(predictions, examples, strict=True)])
        )
        orders = [order_correct(p, e) for p, e in zip(predictions, examples, strict=True)]
        judged = [o for o in orders if o is not None]
        scores["both_objects_named"] = 100 * len(judged) / len(orders)
        scores["order_accuracy"] = 100 * float(np.mean(judged)) if judged else None
    return scores


def _compute_metrics(
    tokenizer: Any, references: Sequence[str], examples: Sequence[SyntheticExample] | None
) -> Callable[[Any], dict[str, float]]:
    def compute(prediction: Any) -> dict[str, float]:
        ids = dataset_rows(prediction.predictions, len(references))
        return summary_metrics(decode(tokenizer, ids), references, examples)

    return compute


def make_trainer(
    model: Any,
    tokenizer: Any,
    train: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]] | None,
    *,
    output_dir: str | Path,
    learning_rate: float,
    max_steps: int,
    batch_size: int = 16,
    eval_steps: int | None = None,
    seed: int = 0,
    validation_references: Sequence[str] | None = None,
    validation_examples: Sequence[SyntheticExample] | None = None,
    pvla_weight: float = 0.0,
    pvla_source: Any = None,
    quiet: bool = False,
    generation: dict[str, Any] | None = None,
    fusion_learning_rate: float = FUSION_LEARNING_RATE,
) -> Seq2SeqTrainer:
    """A ``Seq2SeqTrainer`` over encoded examples (:func:`~.data.encode_records`), generating with
    :data:`GENERATION`; with ``validation`` it scores generated summaries every ``eval_steps`` and keeps the
    checkpoint of best validation ROUGE-L. The fusion trains at ``fusion_learning_rate`` whatever the method, the
    rest at ``learning_rate``. ``pvla_weight`` > 0 adds PVLA at ``pvla_source`` (the unwrapped model's
    :meth:`pvla_source`)."""
    from ...alignment import PVLALoss
    from ...integrations.pvla_callback import PVLACallback

    settings = {**GENERATION, **(generation or {})}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    generation_config = GenerationConfig.from_model_config(base.config)
    generation_config.update(**settings)
    generation_config.max_length = None  # max_new_tokens bounds the length
    base.generation_config = generation_config  # a peft wrapper generates with its base model's settings
    selecting = validation is not None
    eval_every = eval_steps or max(1, max_steps // 4)
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 32),
        learning_rate=learning_rate,
        max_steps=max_steps,
        warmup_steps=max(1, max_steps // 20),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        logging_steps=max(1, max_steps // 10),
        eval_strategy="steps" if selecting else "no",
        eval_steps=eval_every if selecting else None,
        save_strategy="steps" if selecting else "no",
        save_steps=eval_every if selecting else None,
        save_total_limit=1 if selecting else None,
        load_best_model_at_end=selecting,
        metric_for_best_model="rougeL" if selecting else None,
        greater_is_better=True if selecting else None,
        save_only_model=True,
        predict_with_generate=True,
        generation_config=generation_config,
        remove_unused_columns=False,
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=quiet,
        use_cpu=not _cuda(),
        dataloader_num_workers=0,
    )
    optimizer = _optimizer(model, learning_rate, fusion_learning_rate)
    callbacks = []
    if pvla_weight > 0:
        if pvla_source is None:
            raise ValueError("`pvla_weight` > 0 needs `pvla_source` (the model's pvla_source())")
        callbacks.append(PVLACallback(PVLALoss(), pvla_source, weight=pvla_weight))
    references = validation_references
    if selecting and references is None:
        references = decode(tokenizer, [example["labels"] for example in validation])
    return Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=list(train),
        eval_dataset=list(validation) if selecting else None,
        data_collator=SummarizationCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_metrics=_compute_metrics(tokenizer, references, validation_examples) if selecting else None,
        callbacks=callbacks,
        optimizers=(optimizer, None),
    )


def _optimizer(model: Any, learning_rate: float, fusion_learning_rate: float) -> Any:
    """AdamW with the fusion's parameters at ``fusion_learning_rate`` and every other trainable one at
    ``learning_rate`` (the Trainer's linear schedule scales both); None when nothing trains."""
    import torch

    fusion, rest = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (fusion if ".fusion." in f".{name}" else rest).append(parameter)
    groups = [
        {"params": group, "lr": lr}
        for group, lr in ((fusion, fusion_learning_rate), (rest, learning_rate))
        if group
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.0) if groups else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
