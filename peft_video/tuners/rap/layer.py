"""RAP layers: wrap one self-attention module; LoRM modulates its input, ASA warps its keys and values.

Everything RAP does to a block happens inside its self-attention call, so one wrapped module per block carries both
parts: LoRM (eq. 2) modulates the attention input u (the pre-attention LayerNorm's output, which eq. 4 feeds to
W_q, W_k, W_v), and ASA (eq. 7) replaces the keys and values of the selected patches. Wrapping the attention rather
than the block keeps RAP inside the block's own call, so HF gradient checkpointing recomputes it faithfully.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ...conditioning import SentenceCondition, current_sentence_condition
from ...video import check_frame_batch, flatten_frames, resolve_num_frames, unflatten_frames
from .._wrapping import ForwardsToBaseLayer
from .asa import WarpPlan, plan_warp, select_patches, sentence_directions
from .config import RapConfig

VIDEO, TEXT = "video", "text"


@dataclass(frozen=True)
class RapShared:
    """ASA's layer-shared parameters, owned by the tuner (one entry per adapter), referenced by every video layer."""

    proj: nn.ModuleDict  # Proj: nn.Linear(D, E, bias=False)
    patch_offset: nn.ParameterDict  # gamma, (N,)
    frame_offset: nn.ParameterDict  # delta, (T,)


@dataclass(frozen=True)
class RapLayerSettings:
    """Per-adapter switches a layer needs at run time."""

    num_frames: int
    top_k: int
    use_lorm: bool
    use_asa: bool


class RapLayer(ForwardsToBaseLayer, nn.Module, BaseTunerLayer):
    """A self-attention module plus, per adapter, LoRM factors (video) or a scale and shift (text).

    Subclasses know how to read the attention input and how to call the base module with warped keys and values.
    """

    adapter_prefix = "pvrap_"
    adapter_layer_names = (
        "pvrap_scale_a",
        "pvrap_scale_b",
        "pvrap_shift_a",
        "pvrap_shift_b",
        "pvrap_text_scale",
        "pvrap_text_shift",
    )
    other_param_names = ("pvrap_settings",)

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: RapConfig,
        *,
        tower: str,
        num_patches: int,
        shared: RapShared,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.pvrap_scale_a = nn.ParameterDict()  # T x R
        self.pvrap_scale_b = nn.ParameterDict()  # R x D
        self.pvrap_shift_a = nn.ParameterDict()  # T x R
        self.pvrap_shift_b = nn.ParameterDict()  # R x D
        self.pvrap_text_scale = nn.ParameterDict()  # D
        self.pvrap_text_shift = nn.ParameterDict()  # D
        self.pvrap_settings: dict[str, RapLayerSettings] = {}
        self.pvrap_tower = tower
        self.pvrap_num_patches = num_patches
        self.pvrap_shared = shared
        self._disable_adapters = False
        self.merged_adapters = []
        self.features = self.attention_width()
        self.update_layer(adapter_name, config)

    def attention_width(self) -> int:
        """Width D of the attention input."""
        raise NotImplementedError

    def update_layer(self, adapter_name: str, config: RapConfig) -> None:
        """Create (or re-create) the RAP weights of ``adapter_name`` in this layer and keep the active adapters."""
        dim = self.features
        if self.pvrap_tower == VIDEO:
            if config.use_lorm:
                frames, rank = config.num_frames, config.rank
                self.pvrap_scale_a[adapter_name] = nn.Parameter(torch.empty(frames, rank))
                self.pvrap_scale_b[adapter_name] = nn.Parameter(torch.empty(rank, dim))
                self.pvrap_shift_a[adapter_name] = nn.Parameter(torch.empty(frames, rank))
                self.pvrap_shift_b[adapter_name] = nn.Parameter(torch.empty(rank, dim))
        else:
            self.pvrap_text_scale[adapter_name] = nn.Parameter(torch.empty(dim))
            self.pvrap_text_shift[adapter_name] = nn.Parameter(torch.empty(dim))
        self.pvrap_settings[adapter_name] = RapLayerSettings(
            num_frames=config.num_frames,
            top_k=config.top_k,
            use_lorm=config.use_lorm and self.pvrap_tower == VIDEO,
            use_asa=config.use_asa and self.pvrap_tower == VIDEO,
        )
        self.reset_rap_parameters(adapter_name, config.init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    @torch.no_grad()
    def reset_rap_parameters(self, adapter_name: str, init_weights: bool) -> None:
        """Zero R x D factors and text scale/shift (identity at init); T x R factors ~ N(0, 1/R).

        u = (1 + A_c B_c) * x + A_s B_s is the identity while B_c = B_s = 0; B gets gradient at the first step
        because A is random, and A from the second step on, once B is non-zero (LoRA's pattern, transposed).
        """
        if adapter_name in self.pvrap_scale_a:
            rank = self.pvrap_scale_a[adapter_name].shape[1]
            for name in ("pvrap_scale_a", "pvrap_shift_a"):
                nn.init.normal_(getattr(self, name)[adapter_name], std=rank**-0.5)
            for name in ("pvrap_scale_b", "pvrap_shift_b"):
                factor = getattr(self, name)[adapter_name]
                nn.init.zeros_(factor) if init_weights else nn.init.normal_(factor, std=0.1)
        if adapter_name in self.pvrap_text_scale:
            for name in ("pvrap_text_scale", "pvrap_text_shift"):
                vector = getattr(self, name)[adapter_name]
                nn.init.zeros_(vector) if init_weights else nn.init.normal_(vector, std=0.1)

    def _get_base_layer_device_and_dtype(
        self, base_layer: nn.Module
    ) -> tuple[torch.device | None, torch.dtype | None]:
        """Device and dtype of the wrapped attention's first floating parameter (attention modules have no .weight)."""
        for parameter in base_layer.parameters():
            if parameter.is_floating_point():
                return parameter.device, parameter.dtype
        return None, None

    def _get_available_adapters(self) -> set[str]:
        return set(self.pvrap_settings)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "RAP adapters cannot be merged into the base weights: LoRM depends on the frame index and ASA on the "
            "input. Keep the adapter unmerged (or use `unload()` to drop it)."
        )

    def unmerge(self) -> None:
        """Nothing is ever merged, so there is nothing to undo."""

    def _rap_adapter(self) -> str | None:
        """The one active adapter this layer has weights for, None if none; several at once is an error."""
        if self.disable_adapters:
            return None
        active = [name for name in self.active_adapters if name in self.pvrap_settings]
        if len(active) > 1:
            raise ValueError(
                f"RAP applies one adapter at a time, but adapters {active} are active together: choose one with "
                "`set_adapter(name)`"
            )
        return active[0] if active else None

    # -- the math ---------------------------------------------------------------------------------------------------

    def modulate(self, hidden: torch.Tensor, adapter_name: str, num_frames: int) -> torch.Tensor:
        """LoRM (eq. 2, video: per-frame T x D scale and shift) or eq. 3 (text: D), in the adapter's dtype."""
        if self.pvrap_tower == TEXT:
            scale = self.pvrap_text_scale[adapter_name]
            x = self._cast_input_dtype(hidden, scale.dtype)
            return torch.addcmul(self.pvrap_text_shift[adapter_name], x, 1 + scale).to(hidden.dtype)
        scale = self.pvrap_scale_a[adapter_name] @ self.pvrap_scale_b[adapter_name]  # (T, D)
        shift = self.pvrap_shift_a[adapter_name] @ self.pvrap_shift_b[adapter_name]
        x = unflatten_frames(self._cast_input_dtype(hidden, scale.dtype), num_frames)  # (B, T, L, D)
        u = torch.addcmul(shift.unsqueeze(1), x, (1 + scale).unsqueeze(1))
        return flatten_frames(u).to(hidden.dtype)

    def plan(self, u: torch.Tensor, adapter_name: str, settings: RapLayerSettings) -> WarpPlan:
        """Eq. 5-7 for this layer: the selected patches of each frame and where their keys and values come from."""
        shared = self.pvrap_shared
        proj = shared.proj[adapter_name]
        video = unflatten_frames(u, settings.num_frames)
        patches = video.shape[2] - 1
        if patches != self.pvrap_num_patches:
            raise ValueError(
                f"RAP's ASA was built for {self.pvrap_num_patches} patches per frame (+1 [CLS] token), but this "
                f"forward has {video.shape[2]} tokens per frame; feed the image size the model was built for and "
                "disable patch dropout"
            )
        directions = sentence_directions(proj.weight, _asa_condition(), video[:, :, 0].to(proj.weight.dtype))
        index, gate = select_patches(video, directions, settings.top_k)
        return plan_warp(index, gate, shared.frame_offset[adapter_name], shared.patch_offset[adapter_name])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        adapter_name = self._rap_adapter()
        if adapter_name is None:
            return self.base_layer(*args, **kwargs)
        settings = self.pvrap_settings[adapter_name]
        hidden, run = self.bind(args, kwargs)
        num_frames = 1
        if self.pvrap_tower == VIDEO:
            num_frames = resolve_num_frames(settings.num_frames)
            if num_frames != settings.num_frames:
                raise ValueError(
                    f"`num_frames`={num_frames} is in force (peft_video.use_num_frames), but this RAP adapter's "
                    f"temporal parameters have T={settings.num_frames} rows; RAP needs clips of exactly that length"
                )
            check_frame_batch(hidden.shape[0], num_frames)
        u = (
            self.modulate(hidden, adapter_name, num_frames)
            if self.pvrap_tower == TEXT or settings.use_lorm
            else hidden
        )
        plan = self.plan(u, adapter_name, settings) if settings.use_asa else None
        return run(u, plan)

    def bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor, WarpPlan | None], Any]]:
        """Split a call into its (batch, tokens, D) attention input and a function running the base module on a
        modulated input, with keys and values warped by a plan (or not, for None)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return "pvrap." + super().__repr__()


def _asa_condition() -> SentenceCondition:
    """The sentence condition in force, or a ``RuntimeError`` saying how to provide one (ASA never runs unconditioned)."""
    condition = current_sentence_condition()
    if condition is None:
        raise RuntimeError(
            "RAP's asynchronous self-attention (use_asa=True) needs the conditioning sentence embeddings, but this "
            "vision forward ran outside `peft_video.rap_condition(...)`. Wrap it in "
            "`with peft_video.rap_condition(paired=caption_embeds):` for training (one caption per video) or "
            "`with peft_video.rap_condition(candidates=all_text_embeds):` for retrieval; or use_asa=False. "
            "(`peft_video.conditioning.sentence_condition` is the same.)"
        )
    return condition


class RapCLIPAttention(RapLayer):
    """RAP around a HF CLIP-style attention (``q_proj``, ``k_proj``, ``v_proj`` Linears, batch-first input).

    ASA warps the outputs of ``k_proj`` and ``v_proj`` (eq. 7 as written) through forward hooks that live only for
    the duration of this call, so the base attention runs its own code path and zero offsets are bitwise exact.
    """

    def attention_width(self) -> int:
        return self.base_layer.k_proj.in_features

    def bind(self, args, kwargs):
        kwargs = dict(kwargs)
        if args:
            hidden, rest = args[0], args[1:]
        elif "hidden_states" in kwargs:
            hidden, rest = kwargs.pop("hidden_states"), ()
        else:
            raise TypeError("RAP expected the attention input as `hidden_states` (first argument)")

        def run(u: torch.Tensor, plan: WarpPlan | None) -> Any:
            if plan is None:
                return self.base_layer(u, *rest, **kwargs)
            hooks = [
                projection.register_forward_hook(lambda _module, _inputs, output: plan.apply(output))
                for projection in (self.base_layer.k_proj, self.base_layer.v_proj)
            ]
            try:
                return self.base_layer(u, *rest, **kwargs)
            finally:
                for hook in hooks:
                    hook.remove()

        return hidden, run


class RapMultiheadAttention(RapLayer):
    """RAP around ``nn.MultiheadAttention`` used as self-attention (open_clip's ``attn``).

    ASA warps the key and value *inputs*; since the in-projection is linear and the interpolation weights sum to
    one, this equals warping the projected keys and values (eq. 7). With zero offsets the output is bitwise the base
    module's on the same (query, key, value) tensors; against the plain self-attention call it agrees to float
    rounding (~1e-7), because torch's fused inference path and packed in-projection need query is key is value.
    """

    def attention_width(self) -> int:
        return self.base_layer.embed_dim

    def bind(self, args, kwargs):
        kwargs = dict(kwargs)
        names = ("query", "key", "value")
        qkv = list(args[:3]) + [kwargs.pop(name) for name in names[len(args[:3]) :] if name in kwargs]
        rest = args[3:]
        if len(qkv) != 3 or qkv[1] is not qkv[0] or qkv[2] is not qkv[0]:
            raise ValueError(
                "RAP wraps nn.MultiheadAttention used as self-attention (query is key is value), as in open_clip's "
                "residual blocks; this call passes distinct key/value tensors"
            )
        batch_first = self.base_layer.batch_first
        hidden = qkv[0] if batch_first else qkv[0].transpose(0, 1)

        def run(u: torch.Tensor, plan: WarpPlan | None) -> Any:
            query = u if batch_first else u.transpose(0, 1)
            if plan is None:
                return self.base_layer(query, query, query, *rest, **kwargs)
            warped = plan.apply(u)
            key_value = warped if batch_first else warped.transpose(0, 1)
            return self.base_layer(query, key_value, key_value, *rest, **kwargs)

        return hidden, run
