"""The tensor math of RAP's asynchronous self-attention (eq. 5-7), free of modules and models.

Conventions: ``x`` is one layer's video features (B, T, N+1, D) with the [CLS] token first; patches are indexed
0..N-1 in raster order (the paper's n, gamma in R^N is an offset along that order); frames 0..T-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...conditioning import SentenceCondition
from ...video import unflatten_frames


def sentence_directions(
    proj_weight: torch.Tensor, condition: SentenceCondition, frame_cls: torch.Tensor
) -> torch.Tensor:
    """Per video, the D-vector W^T w* so that Proj(u) . w* = u . (W^T w*) (eq. 5-6), shape (B, D).

    ``proj_weight`` is Proj's (E, D) weight, ``frame_cls`` the layer's (B, T, D) [CLS] features. Sentences are
    L2-normalised (CLIP's convention). 'paired' uses row i for video i; 'candidates' picks, per video, the sentence
    maximising Proj(mean_t f_t) . w (eq. 5). Computing W^T w once per video instead of projecting every patch
    makes the selection cost B*T*N*D instead of B*T*N*D*E.
    """
    embeds = condition.embeds
    width = proj_weight.shape[0]
    if embeds.shape[-1] != width:
        raise ValueError(
            f"`{condition.mode}` has sentence embeddings of width {embeds.shape[-1]}, but RAP's projection maps "
            f"patches to width {width} (RapConfig.condition_dim): pass the joint text embeddings of that width"
        )
    directions = (
        F.normalize(embeds.to(device=proj_weight.device, dtype=proj_weight.dtype), dim=-1) @ proj_weight
    )
    videos = frame_cls.shape[0]
    if condition.mode == "paired":
        if directions.shape[0] != videos:
            raise ValueError(
                f"`paired` has {directions.shape[0]} sentence embeddings but the batch holds {videos} videos "
                f"({videos * frame_cls.shape[1]} frames / {frame_cls.shape[1]} frames per video): pass one caption "
                "per video, or use `candidates=` to let each video pick one"
            )
        return directions
    best = (frame_cls.mean(dim=1) @ directions.T).argmax(dim=1)
    return directions[best]


def select_patches(
    video: torch.Tensor, directions: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: the ``top_k`` patches of each frame of ``video`` (B, T, N+1, D) by u . (W^T w*): indices (B, T, K)
    into the patches (0..N-1), plus a gate (B, T, K).

    The top-k choice is discrete, so on its own it would never train Proj. The gate is 1 in value but carries the
    straight-through gradient of the patch softmax, so Proj (and the sentence) learn which patches to warp while the
    forward pass stays the paper's hard selection. The features enter the scores detached: selection trains Proj,
    it does not reshape the backbone's features (and backward skips a full-size pass per layer).
    """
    batch, frames, tokens, dim = video.shape
    if top_k > tokens - 1:
        raise ValueError(f"`top_k`={top_k} exceeds the {tokens - 1} patches per frame")
    flat = video.detach().reshape(batch, frames * tokens, dim)
    scores = torch.bmm(flat.to(directions.dtype), directions.unsqueeze(-1)).view(batch, frames, tokens)[
        ..., 1:
    ]
    index = scores.detach().topk(top_k, dim=-1).indices
    soft = scores.softmax(dim=-1).gather(-1, index)
    gate = 1.0 + (soft - soft.detach())
    return index, gate


def axis_interpolation(offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear interpolation at positions i + offset_i along an axis of size S = len(offset), clamped to [0, S-1].

    Returns (lower, upper, frac) with value = (1 - frac) * x[lower] + frac * x[upper]. Borders: positions are
    clamped (the edge element repeats, as grid_sample's 'border' padding), with a straight-through gradient: a plain
    clamp has zero gradient at and beyond the edge, so the zero-initialised offsets of the first and last frame (and
    patch) would never train, and an offset that stepped outside could never come back. ``lower`` stops at S-2, so a
    zero offset lands exactly on i with frac 0 (the last element with frac 1) and gets the one-sided slope.
    """
    size = offset.shape[0]
    raw = torch.arange(size, device=offset.device, dtype=offset.dtype) + offset
    position = raw.detach().clamp(0, size - 1) + (raw - raw.detach())
    lower = position.detach().floor().long().clamp(0, max(size - 2, 0))
    upper = (lower + 1).clamp(max=size - 1)
    frac = position - lower.to(position.dtype)
    return lower, upper, frac


@dataclass(frozen=True)
class WarpPlan:
    """Where ASA's selected tokens take their keys and values from (eq. 7), reusable for keys and for values.

    Indices are flat over a video's T*(N+1) tokens. ``targets`` (B, T*K): the selected patch tokens; ``sources``
    (B, T*K*5): per target, itself then the four bilinear neighbours of (t + delta_t, n + gamma_n); ``weights``
    (B, T*K, 4); ``gate`` (B, T*K, 1), see :func:`select_patches`.
    """

    targets: torch.Tensor
    sources: torch.Tensor
    weights: torch.Tensor
    gate: torch.Tensor
    num_frames: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, N+1, D) tokens -> the same with each selected patch replaced by its warped source (eq. 7).

        Exact identity when the offsets are zero: the weights are then one-hot, so the replacement equals the token.
        One gather and one scatter on a contiguous view: no other copy of the activations.
        """
        video = unflatten_frames(x, self.num_frames)
        batch, frames, tokens, dim = video.shape
        flat = video.reshape(batch, frames * tokens, dim)
        picked = flat.gather(1, self.sources.unsqueeze(-1).expand(-1, -1, dim)).view(batch, -1, 5, dim)
        own = picked[:, :, 0]
        warped = (picked[:, :, 1:] * self.weights.to(x.dtype).unsqueeze(-1)).sum(dim=2)
        replaced = own + self.gate.to(x.dtype) * (warped - own)
        # CUDA autocast runs `sum` in float32: bring the replacement back to the activations' dtype.
        out = flat.scatter(1, self.targets.unsqueeze(-1).expand(-1, -1, dim), replaced.to(flat.dtype))
        return out.view_as(x)


def plan_warp(
    index: torch.Tensor, gate: torch.Tensor, frame_offset: torch.Tensor, patch_offset: torch.Tensor
) -> WarpPlan:
    """Bilinear sources of the selected patches: patch n of frame t reads (t + delta_t, n + gamma_n) (eq. 7).

    ``index`` (B, T, K) holds patch indices 0..N-1; token t*(N+1) + 1 + n of the flat video is patch n of frame t.
    """
    batch, frames, top_k = index.shape
    tokens = patch_offset.shape[0] + 1
    t_lower, t_upper, t_frac = axis_interpolation(frame_offset)
    n_lower, n_upper, n_frac = axis_interpolation(patch_offset)
    p_lower, p_upper, p_frac = n_lower[index], n_upper[index], n_frac[index]  # (B, T, K)
    f_lower = t_lower.view(1, frames, 1) * tokens + 1
    f_upper = t_upper.view(1, frames, 1) * tokens + 1
    own = torch.arange(frames, device=index.device).view(1, frames, 1) * tokens + 1 + index
    sources = torch.stack(
        [own, f_lower + p_lower, f_lower + p_upper, f_upper + p_lower, f_upper + p_upper], dim=-1
    )
    a = t_frac.view(1, frames, 1).expand_as(p_frac)
    weights = torch.stack([(1 - a) * (1 - p_frac), (1 - a) * p_frac, a * (1 - p_frac), a * p_frac], dim=-1)
    return WarpPlan(
        targets=own.reshape(batch, frames * top_k),
        sources=sources.reshape(batch, frames * top_k * 5),
        weights=weights.reshape(batch, frames * top_k, 4),
        gate=gate.reshape(batch, frames * top_k, 1),
        num_frames=frames,
    )
