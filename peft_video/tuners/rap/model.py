"""RAP tuner: wraps the self-attention of CLIP vision blocks (LoRM + ASA) and text blocks (scale and shift).

ASA's projection and its patch / frame offsets are shared by all layers (eq. 5-7), so they live here, on the tuner,
as per-adapter containers that peft's structural state-dict code saves and loads once (like VeRA's shared state);
the layers only hold a reference to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from ...architectures import OPEN_CLIP, architecture_of, contains_open_clip_text_tower
from .._wrapping import WrappingTuner
from .config import RapConfig, resolve_blocks
from .layer import TEXT, VIDEO, RapCLIPAttention, RapLayer, RapMultiheadAttention, RapShared

BLOCKS = "{blocks}"  # placeholder for the block indices in the patterns below
_PREFIX = r"(?:.*\.)?"  # tolerate a task wrapper's prefix such as `backbone.`

# Self-attention modules per architecture and tower (regexes, full match). Vision blocks get LoRM + ASA, text blocks
# the text scale and shift. open_clip's bare VisionTransformer has no text tower: see `rap_towers`.
RAP_TARGET_MODULES: dict[str, dict[str, str]] = {
    "clip": {
        VIDEO: _PREFIX + r"vision_model\.encoder\.layers\.{blocks}\.self_attn",
        TEXT: _PREFIX + r"text_model\.encoder\.layers\.{blocks}\.self_attn",
    },
    # CLIPVisionModel is the bare vision transformer; CLIPVisionModelWithProjection nests it in `vision_model`
    "clip_vision_model": {VIDEO: _PREFIX + r"encoder\.layers\.{blocks}\.self_attn"},
    OPEN_CLIP: {
        VIDEO: _PREFIX + r"visual\.transformer\.resblocks\.{blocks}\.attn",
        TEXT: _PREFIX + r"(?<!visual\.)transformer\.resblocks\.{blocks}\.attn",
    },
}
_OPEN_CLIP_VISION_TOWER = {VIDEO: _PREFIX + r"transformer\.resblocks\.{blocks}\.attn"}


def rap_towers(model: nn.Module) -> dict[str, str]:
    """The per-tower attention patterns of ``model``, or a clear error for architectures RAP does not know."""
    architecture = architecture_of(model)
    if architecture == OPEN_CLIP and not contains_open_clip_text_tower(model):
        return _OPEN_CLIP_VISION_TOWER
    if architecture not in RAP_TARGET_MODULES:
        raise ValueError(
            f"RAP supports frame-wise CLIP video encoders: HF CLIPModel / CLIPVisionModel (model_type 'clip', "
            f"'clip_vision_model') and open_clip CLIP / VisionTransformer; got architecture {architecture!r}"
        )
    return RAP_TARGET_MODULES[architecture]


def tower_pattern(template: str, blocks: list[int] | None = None) -> str:
    """A tower's regex for the given block indices (all blocks for None)."""
    indices = r"\d+" if blocks is None else "(?:" + "|".join(str(b) for b in blocks) + ")"
    return template.replace(BLOCKS, indices)


def block_index(template: str, key: str) -> int | None:
    """The block index of ``key`` if it is one of the tower's attention modules, else None."""
    match = re.fullmatch(template.replace(BLOCKS, r"(?P<block>\d+)"), key)
    return int(match.group("block")) if match else None


def tower_of(towers: dict[str, str], key: str) -> str:
    """'video' or 'text': which tower the module ``key`` belongs to, or a clear error."""
    for tower, template in towers.items():
        if block_index(template, key) is not None:
            return tower
    raise ValueError(
        f"RAP target {key!r} is not a self-attention module of a CLIP vision or text block "
        f"(patterns: {sorted(tower_pattern(t) for t in towers.values())}); check `target_modules`"
    )


@dataclass(frozen=True)
class VisionGeometry:
    """What RAP needs to know about the vision tower: patch count N, block count, joint embedding width E."""

    num_patches: int
    depth: int
    condition_dim: int | None


def _open_clip_visual(model: nn.Module) -> nn.Module:
    """The open_clip VisionTransformer in ``model`` (itself, its ``visual``, or inside a task wrapper)."""
    from open_clip.transformer import VisionTransformer

    return next(m for m in model.modules() if isinstance(m, VisionTransformer))


def _hf_clip(model: nn.Module) -> nn.Module:
    """The outermost HF module in ``model`` that has a config (the CLIP model itself, or inside a task wrapper)."""
    return next(m for m in model.modules() if getattr(getattr(m, "config", None), "model_type", None))


def vision_geometry(model: nn.Module, towers: dict[str, str]) -> VisionGeometry:
    """Read N, depth and E from a HF or open_clip CLIP model."""
    depth = 1 + max(
        (i for key, _ in model.named_modules() if (i := block_index(towers[VIDEO], key)) is not None),
        default=-1,
    )
    if architecture_of(model) == OPEN_CLIP:
        visual = _open_clip_visual(model)
        rows, cols = visual.grid_size
        return VisionGeometry(rows * cols, depth, getattr(visual, "output_dim", None))
    config = _hf_clip(model).config
    vision = getattr(config, "vision_config", config)
    condition_dim = getattr(config, "projection_dim", None) or getattr(vision, "projection_dim", None)
    return VisionGeometry((vision.image_size // vision.patch_size) ** 2, depth, condition_dim)


def visual_projection(model: nn.Module) -> torch.Tensor | None:
    """The model's frozen patch-to-joint-space projection as an (E, D) matrix, if it has one."""
    if architecture_of(model) == OPEN_CLIP:
        proj = getattr(_open_clip_visual(model), "proj", None)
        return proj.detach().T if isinstance(proj, torch.Tensor) else None
    projection = getattr(_hf_clip(model), "visual_projection", None)
    return projection.weight.detach() if isinstance(projection, nn.Linear) else None


class RapModel(WrappingTuner):
    """Creates RAP modules (LoRM + ASA, text scale/shift) on a CLIP model; see :class:`RapConfig`.

    Example::

        >>> import peft_video
        >>> from peft import get_peft_model
        >>> model = get_peft_model(clip, peft_video.RapConfig(num_frames=12))
        >>> with peft_video.rap_condition(paired=caption_embeds):
        ...     frame_embeds = model.get_image_features(pixel_values=frames).pooler_output  # frames: (B*T, 3, H, W)
    """

    prefix: str = "pvrap_"
    tuner_layer_cls = RapLayer
    target_module_mapping: dict = {}
    uses_shared_state: bool = True

    def _pre_injection_hook(self, model: nn.Module, config: PeftConfig, adapter_name: str) -> None:
        self.pvrap_proj = nn.ModuleDict()
        self.pvrap_patch_offset = nn.ParameterDict()
        self.pvrap_frame_offset = nn.ParameterDict()
        self.pvrap_shared = RapShared(self.pvrap_proj, self.pvrap_patch_offset, self.pvrap_frame_offset)

    def _prepare_adapter_config(self, peft_config: RapConfig, model_config: dict) -> RapConfig:
        towers = rap_towers(self.model)
        geometry = vision_geometry(self.model, towers)
        if peft_config.use_asa and peft_config.top_k > geometry.num_patches:
            raise ValueError(
                f"`top_k`={peft_config.top_k} exceeds the {geometry.num_patches} patches per frame of this model"
            )
        if not (peft_config.use_lorm or peft_config.use_asa) and TEXT not in towers:
            raise ValueError(
                "`use_lorm` and `use_asa` are False and this vision-only model has no text tower for "
                "`text_modulation`: the adapter would do nothing"
            )
        blocks = resolve_blocks(peft_config.blocks, geometry.depth)
        patterns = []
        if peft_config.use_lorm or peft_config.use_asa:
            patterns.append(tower_pattern(towers[VIDEO], blocks))
        if peft_config.text_modulation and TEXT in towers:
            patterns.append(tower_pattern(towers[TEXT]))
        if peft_config.target_modules is None:
            peft_config.target_modules = "|".join(f"(?:{p})" for p in patterns)
        elif peft_config.blocks != "all" and (peft_config.use_lorm or peft_config.use_asa):
            self._check_blocks_match_targets(peft_config, towers[VIDEO], blocks)
        self.pvrap_geometry = geometry
        self.pvrap_towers = towers
        return peft_config

    def _check_blocks_match_targets(self, config: RapConfig, video_template: str, blocks: list[int]) -> None:
        """Explicit ``target_modules`` with a ``blocks`` selection must target exactly those vision blocks."""
        targeted = sorted(
            i
            for key, _ in self.model.named_modules()
            if (i := block_index(video_template, key)) is not None and check_target_module_exists(config, key)
        )
        if targeted != blocks:
            raise ValueError(
                f"`blocks`={config.blocks!r} selects vision blocks {blocks}, but `target_modules` targets vision "
                f"blocks {targeted}; pass one of the two (blocks only shapes the default target_modules)"
            )

    def _create_and_replace(
        self,
        peft_config: RapConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs,
    ) -> None:
        tower = tower_of(self.pvrap_towers, current_key)
        if tower == TEXT and not peft_config.text_modulation:
            raise ValueError(f"{current_key!r} is a text-tower attention but `text_modulation` is False")
        if tower == VIDEO and not (peft_config.use_lorm or peft_config.use_asa):
            raise ValueError(f"{current_key!r} is a vision attention but `use_lorm` and `use_asa` are False")
        if tower == VIDEO and peft_config.use_asa:
            self._create_shared(adapter_name, peft_config, target)
        if isinstance(target, RapLayer):
            target.update_layer(adapter_name, peft_config)
            return
        layer_cls = _layer_class(target, current_key)
        new_module = layer_cls(
            target,
            adapter_name,
            peft_config,
            tower=tower,
            num_patches=self.pvrap_geometry.num_patches,
            shared=self.pvrap_shared,
        )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _create_shared(self, adapter_name: str, config: RapConfig, target: nn.Module) -> None:
        """ASA's shared Proj (D -> E), gamma (N) and delta (T) for ``adapter_name``, once per adapter."""
        if adapter_name in self.pvrap_proj:
            return
        geometry = self.pvrap_geometry
        base = target.get_base_layer() if isinstance(target, RapLayer) else target
        reference = next(p for p in base.parameters() if p.is_floating_point())
        width = base.k_proj.in_features if hasattr(base, "k_proj") else base.embed_dim
        condition_dim = config.condition_dim or geometry.condition_dim
        if condition_dim is None:
            raise ValueError(
                "`condition_dim` is None and the model does not tell its joint embedding width: set it"
            )
        factory = {"device": reference.device, "dtype": reference.dtype}
        proj = nn.Linear(width, condition_dim, bias=False, **factory)
        projection = visual_projection(self.model)
        fits = projection is not None and tuple(projection.shape) == (condition_dim, width)
        if config.proj_init == "model" and not fits:
            raise ValueError(
                f"`proj_init`='model' needs a visual projection of shape ({condition_dim}, {width}) in the model, "
                f"found {None if projection is None else tuple(projection.shape)}; use 'auto' or 'random'"
            )
        with torch.no_grad():
            if config.proj_init != "random" and fits and proj.weight.device.type != "meta":
                proj.weight.copy_(projection)  # (on meta under low_cpu_mem_usage: loaded weights come later)
            patch_offset = torch.zeros(geometry.num_patches, **factory)
            frame_offset = torch.zeros(config.num_frames, **factory)
            if not config.init_weights:
                patch_offset.normal_(std=1.0)
                frame_offset.normal_(std=1.0)
        self.pvrap_proj[adapter_name] = proj
        self.pvrap_patch_offset[adapter_name] = nn.Parameter(patch_offset)
        self.pvrap_frame_offset[adapter_name] = nn.Parameter(frame_offset)
        self._set_shared_requires_grad(adapter_name, adapter_name in self.active_adapters)

    def _shared_items(self, adapter_name: str) -> list[nn.Module | nn.Parameter]:
        containers = (self.pvrap_proj, self.pvrap_patch_offset, self.pvrap_frame_offset)
        return [container[adapter_name] for container in containers if adapter_name in container]

    def _set_shared_requires_grad(self, adapter_name: str, requires_grad: bool) -> None:
        for item in self._shared_items(adapter_name):
            item.requires_grad_(requires_grad)

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        names = [adapter_name] if isinstance(adapter_name, str) else adapter_name
        for name in self.pvrap_proj.keys():
            self._set_shared_requires_grad(name, name in names and not inference_mode)

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        super().set_requires_grad(adapter_names, requires_grad=requires_grad)
        for name in [adapter_names] if isinstance(adapter_names, str) else adapter_names:
            self._set_shared_requires_grad(name, requires_grad)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for container in (self.pvrap_proj, self.pvrap_patch_offset, self.pvrap_frame_offset):
            if adapter_name in container:
                del container[adapter_name]

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """peft's upcast of fp16/bf16 adapter weights to fp32, extended to the shared ASA parameters."""
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if not autocast_adapter_dtype:
            return
        low = (torch.float16, torch.bfloat16)
        if adapter_name in self.pvrap_proj and self.pvrap_proj[adapter_name].weight.dtype in low:
            self.pvrap_proj[adapter_name].float()
        for container in (self.pvrap_patch_offset, self.pvrap_frame_offset):
            if adapter_name in container and container[adapter_name].dtype in low:
                parameter = container[adapter_name]
                container[adapter_name] = nn.Parameter(parameter.detach().float(), parameter.requires_grad)


def _layer_class(target: nn.Module, key: str) -> type[RapLayer]:
    """The RAP layer class for an attention module, or a clear error for modules RAP cannot wrap."""
    if isinstance(target, nn.MultiheadAttention):
        return RapMultiheadAttention
    if all(isinstance(getattr(target, name, None), nn.Linear) for name in ("q_proj", "k_proj", "v_proj")):
        return RapCLIPAttention
    raise ValueError(
        f"RAP wraps self-attention modules (nn.MultiheadAttention, or HF attention with q_proj/k_proj/v_proj); "
        f"{key!r} is a {type(target).__name__}"
    )
