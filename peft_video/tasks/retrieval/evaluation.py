"""Score a video-text retrieval model on a dataset: embed every caption and video, then rank.

Captions are embedded first so that videos can be encoded under RAP's candidate conditioning (each video picks its
best-matching caption among all of them, eq. 5 of the RAP paper); other methods ignore the condition. The scores go
through the packaged ``evaluate`` modules: ``video_text_retrieval`` (R@1/5/10, MdR, MnR, both directions, optional
DSL) and, where the data has order-only pairs, ``order_pair_accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ... import metrics as pv_metrics
from ...data.schema import NO_PAIR
from ..report import Column, Series, count, fixed
from .metrics.ranking import relevance_matrix

RETRIEVAL_COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("trainable_params", "trainable params", count),
    Column("t2v_R@1", "t2v R@1 (%)", fixed(1)),
    Column("order_v2t", "order-only v2t (%)", fixed(1, 100)),
    Column("order_t2v", "order-only t2v (%)", fixed(1, 100)),
    Column("seconds_per_step", "s / step", fixed(3)),
)
"""The retrieval comparison's table: order-only accuracy in both directions (video-to-text: does a video score its
own caption above its reversal's; text-to-video: does a caption score its own video above the reversed one)."""
RETRIEVAL_SERIES: tuple[Series, ...] = (
    Series("t2v_R@1", 1.0, "t2v R@1"),
    Series("order_v2t", 100.0, "order-only accuracy (v2t)", chance=50.0),
)


@dataclass
class RetrievalEmbeddings:
    """L2-normalised embeddings of every row of a dataset: ``texts[i]`` of caption i, ``videos[i]`` of video i."""

    texts: torch.Tensor
    videos: torch.Tensor


@torch.no_grad()
def embed_dataset(
    model: Any,
    dataset: Any,
    collator: Callable[[list[dict]], dict],
    batch_size: int = 64,
    progress: bool = True,
) -> RetrievalEmbeddings:
    """Embed the captions, then the videos (conditioned on all captions as candidates), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        batches = range(0, len(dataset), batch_size)
        texts, inputs = [], []
        for start in tqdm(batches, desc="embed captions", disable=not progress, leave=False):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collator(rows)
            inputs.append(batch["pixel_values"])
            texts.append(
                model.encode_texts(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            )
        candidates = torch.cat(texts)
        videos = [
            model.encode_videos(pixels.to(device), candidates=candidates)
            for pixels in tqdm(inputs, desc="embed videos", disable=not progress, leave=False)
        ]
    finally:
        model.train(was_training)
    return RetrievalEmbeddings(texts=candidates.float().cpu(), videos=torch.cat(videos).float().cpu())


def retrieval_relevance(captions: Sequence[str], video_ids: Sequence[str]) -> list[list[int]]:
    """For each caption i, the videos that are correct for it: its own video, any other row of the same video
    (MSR-VTT lists a video once per caption) and any video with the very same caption (templated worlds)."""
    same_caption = relevance_matrix(list(captions), list(captions))
    same_video = relevance_matrix(list(video_ids), list(video_ids))
    relevant = same_caption | same_video
    return [row.nonzero().flatten().tolist() for row in relevant]


def evaluate_retrieval(
    embeddings: RetrievalEmbeddings,
    captions: Sequence[str],
    video_ids: Sequence[str],
    order_pair_ids: Sequence[int] | None = None,
    dual_softmax: bool = False,
    temperature: float = 0.01,
) -> dict[str, float]:
    """Retrieval metrics (``t2v_R@1`` ... ``v2t_MnR``) and, with complete order-only pairs, ``order_v2t`` /
    ``order_t2v`` accuracies (fractions; chance 0.5)."""
    scores = embeddings.texts @ embeddings.videos.T  # (texts, videos)
    retrieval = pv_metrics.load("video_text_retrieval")
    results = retrieval.compute(
        predictions=scores.tolist(),
        references=retrieval_relevance(captions, video_ids),
        dual_softmax=dual_softmax,
        temperature=temperature,
    )
    if order_pair_ids is not None and _has_pairs(order_pair_ids):
        order = pv_metrics.load("order_pair_accuracy")
        pairs = order.compute(predictions=scores.T.tolist(), references=[int(i) for i in order_pair_ids])
        results["order_v2t"] = pairs["video_to_text"]
        results["order_t2v"] = pairs["text_to_video"]
    return results


def _has_pairs(order_pair_ids: Sequence[int]) -> bool:
    ids = [int(i) for i in order_pair_ids if int(i) != NO_PAIR]
    return len(ids) != len(set(ids))
