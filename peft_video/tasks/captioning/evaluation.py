"""Caption a split's videos with ``generate()`` and score them: COCO caption metrics, temporal facts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ...data.collate import VideoTextCollator
from ...data.synthetic import make_video_dataset
from .data import CaptionRecord, CaptionVideos
from .temporal import temporal_fact_accuracy

DEFAULT_GENERATION: dict[str, Any] = {"num_beams": 3, "max_length": 32, "min_length": 5}
"""Token Mixing's MSVD decoding (configs/caption_msvd.yaml of the authors' code): beam 3, max 32, min 5 tokens."""


@torch.no_grad()
def generate_captions(
    model: torch.nn.Module,
    videos: CaptionVideos,
    collator: VideoTextCollator,
    batch_size: int = 32,
    progress: bool = False,
    **generation: Any,
) -> list[str]:
    """One caption per video of ``videos`` (``generation``: ``generate()`` options, default
    :data:`DEFAULT_GENERATION`), decoded without special tokens."""
    options = {**DEFAULT_GENERATION, **generation}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    captions: list[str] = []
    starts = range(0, len(videos), batch_size)
    for start in tqdm(starts, desc="captioning", disable=not progress):
        pixels = collator.pixel_values(videos.frames[start : start + batch_size]).to(device)
        ids = model.generate(pixel_values=pixels, **options)
        captions += [
            " ".join(c.split()) for c in collator.tokenizer.batch_decode(ids, skip_special_tokens=True)
        ]
    model.train(was_training)
    return captions


def score_captions(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    order_pair_ids: Sequence[int] | None = None,
    meteor: bool = True,
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE_L and CIDEr of ``coco_caption`` in percent (paper tables' scale), and, when the
    references are the synthetic world's (``order_pair_ids`` given), the temporal-fact accuracies in percent."""
    from ... import metrics

    scores = metrics.load("coco_caption").compute(
        predictions=list(predictions), references=[list(r) for r in references], meteor=meteor, percent=True
    )
    if order_pair_ids is not None:
        facts = temporal_fact_accuracy(predictions, [r[0] for r in references], order_pair_ids)
        scores.update({key: 100.0 * value for key, value in facts.items()})
    return dict(scores)


def synthetic_caption_videos(
    split: str, num_videos: int, seed: int = 0, num_frames: int = 8, image_size: int = 32
) -> tuple[CaptionVideos, list[int]]:
    """The synthetic world's videos of ``split`` as a captioning split (one reference each: the caption stating the
    event and its direction), with their order-only pair ids. ``test`` holds out (colour, shape, event) combinations
    that ``train`` and ``validation`` never show."""
    rows = make_video_dataset(split, num_videos, seed=seed, num_frames=num_frames, image_size=image_size)[:]
    records = [
        CaptionRecord(video_id, f"synthetic:{video_id}", (caption,))
        for video_id, caption in zip(rows["video_id"], rows["caption"], strict=True)
    ]
    return CaptionVideos(records, list(rows["frames"])), [int(p) for p in rows["order_pair_id"]]
