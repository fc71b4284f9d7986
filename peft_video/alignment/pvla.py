"""The PVLA loss (READ-PVLA, section 3.3) and the distances of its ablation (Table 9).

``PVLALoss`` takes video representations (B, N_V, D) and language representations (B, N_L, D), builds the cosine
cost ``1 - cos(h_v, h_l)``, solves entropic partial OT with :func:`peft_video.alignment.partial_ot.partial_ot` and
returns the plan-weighted cost, averaged over the batch and over the layers given. Where the representations come
from (hooks on a model) is :mod:`peft_video.alignment.capture`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .solver import PartialOTResult, partial_ot

__all__ = ["DISTANCES", "PVLALoss", "cosine_cost"]

Distance = Literal["partial_ot", "avg_cosine", "max_cosine", "avg_l2", "max_l2"]
DISTANCES: tuple[str, ...] = ("partial_ot", "avg_cosine", "max_cosine", "avg_l2", "max_l2")

# Default transported mass; see PVLALoss's docstring for why.
DEFAULT_MASS = 0.5


def cosine_cost(video: Tensor, text: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cos(h_v, h_l)`` for every frame/token pair: (..., N_V, D), (..., N_L, D) -> (..., N_V, N_L), float32+."""
    dtype = torch.float64 if video.dtype == torch.float64 else torch.float32
    with torch.autocast(video.device.type, enabled=False):
        v = F.normalize(video.to(dtype), dim=-1, eps=eps)
        t = F.normalize(text.to(dtype), dim=-1, eps=eps)
        return 1.0 - v @ t.transpose(-1, -2)


class PVLALoss(nn.Module):
    """Partial video-language alignment: mean over batch (and layers) of ``sum_ij T_ij (1 - cos(h_v,i, h_l,j))``.

    ``mass`` (default 0.5) is the fraction of the unit video/text mass that the plan moves; ``mass=1`` is the "VLA"
    variant of Table 6. How the default was chosen: the paper's Algorithm 1 takes the minimum of the cost over
    ``s = 1..min(N_V, N_L)`` but never uses ``s``; read as the transported mass ``s / min(N_V, N_L)``, that minimum
    is always the smallest mass (the cost of a plan grows with its mass), i.e. a single frame-token pair, which
    makes the loss depend on sequence length and train on one pair per sample. 0.5 keeps the paper's premise
    (only part of the video and the text correspond) and sits midway between that degenerate end and full OT,
    which Table 6 shows to be worse; tune it per task (it is the expected share of aligned content).
    ``tau`` (0.05) and ``max_iter`` (1000) are the paper's. The plan is a constant for autograd by default, so the
    gradient is that of the regularised OT value (see :func:`partial_ot`); ``differentiable=True`` unrolls it.
    ``compile=True`` runs the solver's iterations through ``torch.compile`` (faster on CPU after one compilation).

    ``distance`` selects the Table 9 ablations instead of partial OT: ``"avg_cosine"``, ``"max_cosine"``,
    ``"avg_l2"``, ``"max_l2"`` pool each side over its unmasked frames / tokens (mean or max) and take the cosine
    distance or the Euclidean distance of the two pooled vectors.
    """

    def __init__(
        self,
        *,
        mass: float = DEFAULT_MASS,
        tau: float = 0.05,
        max_iter: int = 1000,
        tol: float = 1e-4,
        distance: Distance = "partial_ot",
        differentiable: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}")
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 < mass <= 1:
            raise ValueError(f"`mass` must be a float in (0, 1] (1 = full OT, the VLA variant), got {mass!r}")
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"`tau` must be a finite number > 0 (paper: 0.05), got {tau!r}")
        self.mass, self.tau, self.max_iter, self.tol = float(mass), float(tau), max_iter, tol
        self.distance, self.differentiable, self.compile = distance, differentiable, compile
        self.last_result: PartialOTResult | None = None  # diagnostics (plan, convergence) of the last call

    def settings(self) -> dict[str, object]:
        """The loss's settings, as recorded in a trained adapter's model card."""
        return {
            "distance": self.distance,
            "mass": self.mass,
            "tau": self.tau,
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, mass={self.mass}, tau={self.tau}, max_iter={self.max_iter}"

    def forward(
        self,
        video: Tensor | Sequence[Tensor],
        text: Tensor | Sequence[Tensor],
        video_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss. ``video`` (B, N_V, D) and ``text`` (B, N_L, D), or equal-length sequences of them (one per
        layer), or stacked (L, B, N_*, D); masks (B, N_V) / (B, N_L), True or 1 = real frame / token."""
        video, text = _layers(video, "video"), _layers(text, "text")
        if len(video) != len(text):
            raise ValueError(
                f"got {len(video)} video layers but {len(text)} text layers; pair them one to one"
            )
        batch = video[0].shape[0]
        for i, (v, t) in enumerate(zip(video, text, strict=True)):
            if v.shape[0] != batch or t.shape[0] != batch:
                raise ValueError(
                    f"layer {i}: video batch {v.shape[0]} and text batch {t.shape[0]} must both equal {batch}"
                )
            if v.shape[-1] != t.shape[-1]:
                raise ValueError(
                    f"layer {i}: video feature dim {v.shape[-1]} != text feature dim {t.shape[-1]}; project both "
                    "sides to a shared space first (e.g. `video_projection` / `text_projection` in the capture spec)"
                )
        vm = _as_mask(video_mask, "video_mask", (batch, video[0].shape[1]), video[0].device)
        tm = _as_mask(text_mask, "text_mask", (batch, text[0].shape[1]), text[0].device)
        if self.distance == "partial_ot":
            return self._partial_ot(video, text, vm, tm)
        return torch.stack([self._pooled(v, t, vm, tm) for v, t in zip(video, text, strict=True)]).mean()

    def _partial_ot(
        self, video: list[Tensor], text: list[Tensor], vm: Tensor | None, tm: Tensor | None
    ) -> Tensor:
        # One batched solve for all layers: (L, B, N_V, N_L); shapes agree across layers when lengths do.
        shapes = {(v.shape[1], t.shape[1]) for v, t in zip(video, text, strict=True)}
        if len(shapes) != 1:
            raise ValueError(
                f"all layers must share (N_V, N_L) to be paired with one mask, got {sorted(shapes)}"
            )
        cost = torch.stack([cosine_cost(v, t) for v, t in zip(video, text, strict=True)])
        result = partial_ot(
            cost,
            mass=self.mass,
            tau=self.tau,
            max_iter=self.max_iter,
            tol=self.tol,
            row_mask=vm,
            col_mask=tm,
            differentiable=self.differentiable,
            compile=self.compile,
        )
        self.last_result = result
        return result.cost.mean()

    def _pooled(self, video: Tensor, text: Tensor, vm: Tensor | None, tm: Tensor | None) -> Tensor:
        kind, metric = self.distance.split("_")
        dtype = torch.float64 if video.dtype == torch.float64 else torch.float32
        with torch.autocast(video.device.type, enabled=False):
            pv = _pool(video.to(dtype), vm, kind)
            pt = _pool(text.to(dtype), tm, kind)
            if metric == "cosine":
                return (1.0 - F.cosine_similarity(pv, pt, dim=-1, eps=1e-8)).mean()
            return (pv - pt).norm(dim=-1).mean()


def _layers(x: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    if isinstance(x, Tensor):
        if x.ndim == 3:
            return [x]
        if x.ndim == 4:
            return list(x.unbind(0))
        raise ValueError(
            f"`{name}` must be (B, N, D) or stacked layers (L, B, N, D), got shape {tuple(x.shape)}"
        )
    layers = list(x)
    if not layers:
        raise ValueError(f"`{name}` is an empty sequence of layers")
    for i, t in enumerate(layers):
        if not isinstance(t, Tensor) or t.ndim != 3 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"`{name}` layer {i} must be a floating tensor (B, N, D), got {shape}")
    return layers


def _as_mask(mask: Tensor | None, name: str, shape: tuple[int, int], device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"`{name}` must be a (B, N) = {shape} tensor (True / 1 = real), got {got}")
    return mask.to(device=device, dtype=torch.bool)


def _pool(x: Tensor, mask: Tensor | None, kind: str) -> Tensor:
    """Mean or max over the unmasked positions of (B, N, D) -> (B, D)."""
    if mask is None:
        return x.mean(1) if kind == "avg" else x.amax(1)
    if bool((~mask.any(1)).any()):
        raise ValueError("a mask hides every frame or token of some sample; each needs at least one")
    m = mask[:, :, None]
    if kind == "avg":
        return (x * m).sum(1) / m.sum(1)
    return x.masked_fill(~m, -math.inf).amax(1)
