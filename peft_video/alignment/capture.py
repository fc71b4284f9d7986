"""Capture video / text representations from a model with forward hooks and add PVLA to its loss.

Two sources of representations:

* :class:`TwoTower`: named modules of a video tower and of a text tower (CLIP-like), paired layer by layer, with
  optional projections into a shared space and per-side transforms (e.g. per-frame CLS -> (B, T, D)).
* :class:`SingleStream`: named modules of one encoder over a joint video+text sequence (a VG-BART fusion encoder,
  a grounding encoder), split per sample by a video-token mask.

:func:`attach_pvla` hooks them on a model; during training forwards (``model.training`` and grad enabled) it adds
``weight * PVLA`` to the model output's ``loss``. It is both a context manager and a handle with ``remove()``; the
Trainer callback (:mod:`peft_video.integrations.pvla_callback`) uses the same object, so a plain loop gets the same loss.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .pvla import PVLALoss

__all__ = [
    "PVLAAttachment",
    "SingleStream",
    "TwoTower",
    "attach_pvla",
    "check_pvla_arguments",
    "check_weight",
    "resolve_modules",
]

Inputs = Mapping[str, Any]
MaskSpec = str | Callable[[Inputs], Tensor | None] | None
DEFAULT_MASK_INPUT = (
    "attention_mask"  # the default text / padding mask: applies where the model has that input
)


@dataclass
class TwoTower:
    """Video and text representations from two towers, paired by position in the two module lists.

    video_modules / text_modules: module names, or one regular expression matched (in full) against every module
        name (e.g. ``r"vision_model\\.encoder\\.layers\\.\\d+"``, all Transformer blocks as in the paper). Names may
        omit a wrapper's prefix (``base_model.model.`` under peft): a unique suffix match is accepted.
    video_transform / text_transform: applied to each captured output (first tensor of it) before projection, e.g.
        per-frame CLS to (B, T, D) for a frame-wise image tower:
        ``lambda h: peft_video.video.unflatten_frames(h[:, 0], num_frames)``.
    video_projection / text_projection: module names (e.g. CLIP's ``visual_projection`` / ``text_projection``)
        applied after the transform, to bring both sides to one feature space when their widths differ.
    video_mask / text_mask: name of a model input (``attention_mask``) or a callable on the model's inputs
        returning a (B, N) mask (True / 1 = real), or None for no padding. The default ``"attention_mask"`` applies
        in the forwards that pass it (none passed: no padding). Any other name must be passed in every training
        forward (else a ``RuntimeError``), and is an error at attach time if ``model.forward`` cannot take it.
    """

    video_modules: str | Sequence[str]
    text_modules: str | Sequence[str]
    video_transform: Callable[[Tensor], Tensor] | None = None
    text_transform: Callable[[Tensor], Tensor] | None = None
    video_projection: str | None = None
    text_projection: str | None = None
    video_mask: MaskSpec = None
    text_mask: MaskSpec = DEFAULT_MASK_INPUT


@dataclass
class SingleStream:
    """Video and text tokens of one sequence (B, N, D), split per sample.

    modules: module names or one regular expression, as in :class:`TwoTower`.
    video_tokens: an int n (the first n positions are video, the rest text) or a callable on the model's inputs
        returning a (B, N) bool tensor, True at video tokens.
    padding_mask: model input name or callable giving a (B, N) mask of real positions (True / 1), or None; a name
        follows the rule of :class:`TwoTower`'s masks (default ``"attention_mask"``).
    """

    modules: str | Sequence[str]
    video_tokens: int | Callable[[Inputs], Tensor]
    padding_mask: MaskSpec = DEFAULT_MASK_INPUT


def check_weight(weight: object) -> float:
    """``weight`` as a float, or a ValueError if it is not a finite number >= 0."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(
            f"`weight` must be a finite number >= 0 (the PVLA term's factor in the loss), got {weight!r}"
        )
    return float(weight)


def check_pvla_arguments(loss: object, source: object, weight: object) -> float:
    """Check what attaching PVLA takes (a PVLALoss, a TwoTower / SingleStream, a weight); returns the weight."""
    if not isinstance(loss, PVLALoss):
        raise ValueError(f"`loss` must be a PVLALoss, got {type(loss).__name__}")
    if not isinstance(source, (TwoTower, SingleStream)):
        raise ValueError(f"`source` must be a TwoTower or SingleStream, got {type(source).__name__}")
    return check_weight(weight)


def resolve_modules(model: nn.Module, spec: str | Sequence[str], what: str) -> list[tuple[str, nn.Module]]:
    """Modules named by ``spec`` (names or one full-match regex), in model order; clear error if none match."""
    named = dict(model.named_modules())
    if isinstance(spec, str):
        if spec in named:
            return [(spec, named[spec])]
        found = [
            (n, m) for n, m in named.items() if re.fullmatch(spec, n) or re.fullmatch(rf".*\.(?:{spec})", n)
        ]
        if not found:
            raise ValueError(f"`{what}`: no module of {type(model).__name__} matches {spec!r}")
        return found
    out = []
    for name in spec:
        if name in named:
            out.append((name, named[name]))
            continue
        hits = [n for n in named if n.endswith("." + name)]
        if len(hits) != 1:
            why = "no module" if not hits else f"{len(hits)} modules ({hits[:3]}...)"
            raise ValueError(f"`{what}`: {why} of {type(model).__name__} named {name!r}")
        out.append((hits[0], named[hits[0]]))
    if not out:
        raise ValueError(f"`{what}` is empty")
    return out


def attach_pvla(
    model: nn.Module,
    loss: PVLALoss,
    source: TwoTower | SingleStream,
    *,
    weight: float = 1.0,
    add_to_loss: bool = True,
) -> PVLAAttachment:
    """Hook ``source`` on ``model`` so that training forwards add ``weight * loss(video, text)`` to ``output.loss``.

    Use as ``with attach_pvla(...) as pvla:`` or keep the handle and call ``pvla.remove()``. With
    ``add_to_loss=False`` the term is only computed and kept, unweighted, in ``pvla.term`` for you to add (times your
    own weight): ``weight`` is then unused and must stay at its default 1.0.
    """
    return PVLAAttachment(model, loss, source, weight=weight, add_to_loss=add_to_loss)


class PVLAAttachment:
    """Forward hooks that capture representations and add the PVLA term; see :func:`attach_pvla`."""

    def __init__(
        self,
        model: nn.Module,
        loss: PVLALoss,
        source: TwoTower | SingleStream,
        *,
        weight: float = 1.0,
        add_to_loss: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        check_pvla_arguments(loss, source, weight)
        if not add_to_loss and weight != 1.0:
            raise ValueError(
                f"`weight`={weight!r} has no effect with `add_to_loss`=False: `attachment.term` is the unweighted "
                "PVLA term, which you add to your loss with your own factor; drop `weight` or add_to_loss=True"
            )
        self.model, self.loss, self.source = model, loss, source
        self.weight, self.add_to_loss = float(weight), add_to_loss
        self.term: Tensor | None = None  # PVLA of the last training forward (with grad)
        self._sum: Tensor | None = None  # detached running sum for logging, no host sync per step
        self._count = 0
        self._active = False
        self._inputs: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []
        self._signature = _signature(model)
        for what, spec in _mask_specs(source):
            _check_mask_input(self._signature, model, what, spec)

        if isinstance(source, TwoTower):
            video = resolve_modules(model, source.video_modules, "video_modules")
            text = resolve_modules(model, source.text_modules, "text_modules")
            if len(video) != len(text):
                raise ValueError(
                    f"`video_modules` matched {len(video)} modules but `text_modules` {len(text)}; PVLA pairs them "
                    f"layer by layer (video: {[n for n, _ in video]}, text: {[n for n, _ in text]})"
                )
            self._proj = {
                side: None if name is None else resolve_modules(model, [name], f"{side}_projection")[0][1]
                for side, name in (("video", source.video_projection), ("text", source.text_projection))
            }
            groups = {"video": video, "text": text}
        else:
            if isinstance(source.video_tokens, bool) or not (
                callable(source.video_tokens)
                or (isinstance(source.video_tokens, int) and source.video_tokens > 0)
            ):
                raise ValueError(
                    f"`video_tokens` must be an int > 0 or a callable, got {source.video_tokens!r}"
                )
            groups = {"joint": resolve_modules(model, source.modules, "modules")}
        self._captured: dict[str, list[Tensor | None]] = {k: [None] * len(v) for k, v in groups.items()}
        self.module_names = {k: [n for n, _ in v] for k, v in groups.items()}
        try:
            for side, mods in groups.items():
                for i, (_, mod) in enumerate(mods):
                    self._handles.append(mod.register_forward_hook(self._capture_hook(side, i)))
            self._handles.append(model.register_forward_pre_hook(self._begin, with_kwargs=True))
            self._handles.append(model.register_forward_hook(self._end, with_kwargs=True))
        except Exception:
            self.remove()
            raise

    # ----------------------------------------------------------------------------------------------- lifecycle

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook this attachment registered (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._clear()

    def __enter__(self) -> PVLAAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def pop_mean(self) -> float | None:
        """Mean PVLA term over training forwards since the last call (None if there were none); resets."""
        if self._count == 0 or self._sum is None:
            return None
        value = float(self._sum) / self._count
        self._sum, self._count = None, 0
        return value

    # --------------------------------------------------------------------------------------------------- hooks

    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._clear()
        self._active = module.training and torch.is_grad_enabled()
        if self._active:
            self._inputs = _bind(self._signature, args, kwargs)

    def _capture_hook(self, side: str, index: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # Only inside a top-level training forward: not in eval, nor in gradient-checkpoint recomputation.
            if self._active:
                self._captured[side][index] = _first_tensor(output, side, self.module_names[side][index])

        return hook

    def _end(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if not self._active:
            return None
        try:
            video, text, vm, tm = self._representations()
            term = self.loss(video, text, vm, tm)
        finally:
            self._clear()
        self.term = term
        value = term.detach().float()
        self._sum = value if self._sum is None else self._sum + value
        self._count += 1
        if self.add_to_loss:
            _add_to_loss(output, self.weight * term)
        return output

    def _clear(self) -> None:
        self._active = False
        self._inputs = {}
        for slots in self._captured.values():
            for i in range(len(slots)):
                slots[i] = None

    # ------------------------------------------------------------------------------------------ representations

    def _representations(self) -> tuple[list[Tensor], list[Tensor], Tensor | None, Tensor | None]:
        for side, slots in self._captured.items():
            missing = [self.module_names[side][i] for i, t in enumerate(slots) if t is None]
            if missing:
                raise RuntimeError(f"PVLA: hooked modules {missing} did not run in this forward")
        if isinstance(self.source, TwoTower):
            src = self.source
            video = [self._side(t, src.video_transform, self._proj["video"]) for t in self._captured["video"]]
            text = [self._side(t, src.text_transform, self._proj["text"]) for t in self._captured["text"]]
            vm = _input_mask(src.video_mask, self._inputs, "video_mask")
            tm = _input_mask(src.text_mask, self._inputs, "text_mask")
            return video, text, vm, tm
        joint = [t for t in self._captured["joint"] if t is not None]
        return _split(joint, self.source, self._inputs)

    @staticmethod
    def _side(
        t: Tensor | None, transform: Callable[[Tensor], Tensor] | None, proj: nn.Module | None
    ) -> Tensor:
        assert t is not None
        if transform is not None:
            t = transform(t)
        if proj is not None:
            t = proj(t)
        return t


# ------------------------------------------------------------------------------------------------------ helpers


def _signature(model: nn.Module) -> inspect.Signature | None:
    try:
        return inspect.signature(model.forward)
    except (TypeError, ValueError):
        return None


def _bind(sig: inspect.Signature | None, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The model's inputs by parameter name (positional arguments included where the signature allows)."""
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs).arguments
            extra = {
                k: v for k, v in bound.items() if sig.parameters[k].kind is inspect.Parameter.VAR_KEYWORD
            }
            out = {k: v for k, v in bound.items() if k not in extra}
            for v in extra.values():
                out.update(v)
            return out
        except TypeError:
            pass
    return dict(kwargs)


def _mask_specs(source: TwoTower | SingleStream) -> list[tuple[str, MaskSpec]]:
    """(field name, value) of the source's mask fields."""
    names = ("video_mask", "text_mask") if isinstance(source, TwoTower) else ("padding_mask",)
    return [(name, getattr(source, name)) for name in names]


def _check_mask_input(sig: inspect.Signature | None, model: nn.Module, what: str, spec: MaskSpec) -> None:
    """A mask named by an input that ``model.forward`` cannot take would never apply: an error (except the default
    ``"attention_mask"``, documented to apply only where the model has that input)."""
    if not isinstance(spec, str) or spec == DEFAULT_MASK_INPUT or sig is None:
        return
    params = sig.parameters
    if spec in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    raise ValueError(
        f"`{what}`={spec!r} names no input of {type(model).__name__}.forward (its inputs: {list(params)}), so the "
        "mask would never apply; name one of those inputs, pass a callable on the inputs, or None for no padding"
    )


def _first_tensor(output: Any, side: str, name: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise RuntimeError(
        f"PVLA: module {name!r} ({side}) returned {type(output).__name__}, not a tensor or a "
        "tuple / model output whose first element is one"
    )


def _input_mask(spec: MaskSpec, inputs: Inputs, what: str) -> Tensor | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        mask = inputs.get(spec)
        if mask is None and spec != DEFAULT_MASK_INPUT:
            raise RuntimeError(
                f"PVLA: `{what}`={spec!r} names an input this forward did not get (its inputs: {sorted(inputs)}), so "
                "the mask would not apply; pass it, or name the mask with a callable returning None where none applies"
            )
        if mask is None:
            return None
    else:
        mask = spec(inputs)
    if mask is not None and not isinstance(mask, Tensor):
        raise RuntimeError(f"PVLA: `{what}` gave {type(mask).__name__}, expected a (B, N) tensor or None")
    return None if mask is None else mask.bool()


def _split(
    joint: list[Tensor], src: SingleStream, inputs: Inputs
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """Gather each sample's video tokens and text tokens of a joint (B, N, D) sequence into padded blocks."""
    b, n = joint[0].shape[:2]
    device = joint[0].device
    if isinstance(src.video_tokens, int):
        if src.video_tokens >= n:
            raise RuntimeError(f"PVLA: `video_tokens`={src.video_tokens} leaves no text in a sequence of {n}")
        is_video = (torch.arange(n, device=device) < src.video_tokens).expand(b, n)
    else:
        is_video = src.video_tokens(inputs)
        if not isinstance(is_video, Tensor) or tuple(is_video.shape) != (b, n):
            got = tuple(is_video.shape) if isinstance(is_video, Tensor) else type(is_video).__name__
            raise RuntimeError(f"PVLA: `video_tokens` must give a (B, N) = {(b, n)} bool tensor, got {got}")
        is_video = is_video.to(device, torch.bool)
    real = _input_mask(src.padding_mask, inputs, "padding_mask")
    real = torch.ones(b, n, dtype=torch.bool, device=device) if real is None else real.to(device)
    video_sel, text_sel = is_video & real, ~is_video & real
    v_idx, v_mask = _gather_index(video_sel)
    t_idx, t_mask = _gather_index(text_sel)
    video = [h.gather(1, v_idx[:, :, None].expand(-1, -1, h.shape[-1])) for h in joint]
    text = [h.gather(1, t_idx[:, :, None].expand(-1, -1, h.shape[-1])) for h in joint]
    return video, text, v_mask, t_mask


def _gather_index(select: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of the selected tokens, front-packed per row and padded, and the mask of real ones."""
    count = select.sum(1)
    width = max(int(count.max()), 1)
    order = torch.sort((~select).to(torch.int8), dim=1, stable=True).indices[:, :width]
    return order, torch.arange(width, device=select.device)[None, :] < count[:, None]


def _add_to_loss(output: Any, term: Tensor) -> None:
    """``output.loss += term`` for a dict / transformers ModelOutput (item and attribute stay in sync) or an object."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, Tensor):
        raise RuntimeError(
            f"PVLA: the model returned {type(output).__name__} without a `loss` tensor to add the PVLA term to; "
            "make it compute its loss (labels / return_loss=True) or attach with add_to_loss=False and add "
            "`attachment.term` yourself"
        )
    new = loss + term.to(loss.dtype)
    if isinstance(output, Mapping):
        output["loss"] = new
    else:
        output.loss = new
