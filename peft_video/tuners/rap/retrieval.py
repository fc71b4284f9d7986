"""Retrieval scoring for RAP: cosine similarities of queries and candidates, optionally re-ranked by dual softmax.

Generic (nothing RAP-specific): the lead may move it next to the retrieval metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...video import unflatten_frames


def retrieval_scores(
    query_embeds: torch.Tensor,
    candidate_embeds: torch.Tensor,
    *,
    num_frames: int | None = None,
    dual_softmax: bool = False,
    temperature: float = 0.01,
) -> torch.Tensor:
    """Scores (Q, C): row i ranks the candidates for query i (higher is better).

    Text-to-video: ``retrieval_scores(text, video)``; video-to-text: ``retrieval_scores(video, text)``. With
    ``num_frames`` set, ``candidate_embeds`` are per-frame (C*T, E) embeddings and are mean-pooled over frames first
    (CLIP4Clip's pooling, as in the paper). ``dual_softmax`` is RAP*'s DSL post-processing (Cheng et al., 2021):
    each score is multiplied by the softmax over all queries of the candidate's column, at ``temperature``
    (0.01 = CLIP's logit scale 100), which demotes candidates that match many queries. It needs the whole query
    set at once.
    """
    for name, value in (("query_embeds", query_embeds), ("candidate_embeds", candidate_embeds)):
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            raise ValueError(f"`{name}` must be a 2-D tensor (items, E), got {_shape(value)}")
    if num_frames is not None:
        candidate_embeds = unflatten_frames(candidate_embeds, num_frames).mean(dim=1)
    if query_embeds.shape[1] != candidate_embeds.shape[1]:
        raise ValueError(
            f"`query_embeds` have width {query_embeds.shape[1]} but `candidate_embeds` have width "
            f"{candidate_embeds.shape[1]}"
        )
    if not temperature > 0:
        raise ValueError(f"`temperature` must be positive, got {temperature!r}")
    scores = F.normalize(query_embeds, dim=-1) @ F.normalize(candidate_embeds, dim=-1).T
    if dual_softmax:
        scores = scores * torch.softmax(scores / temperature, dim=0)
    return scores


def _shape(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
