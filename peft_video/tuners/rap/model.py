"""RAP tuner: wraps the self-attention of CLIP vision blocks (LoRM + ASA) and text blocks (scale and shift).

ASA's projection and its patch / frame offsets are shared by all layers (eq. 5-7), so they live here, on the tuner,
as per-adapter containers that peft's structural state-dict code saves and loads once (like VeRA's shared state);
the layers only hold a reference to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from ...architectures import (
    OPEN_CLIP,
    VISION,
    BlockList,
    architecture_of,
    hf_model_of,
    open_clip_visual,
    resolve_blocks,
    tower_block_lists,
)
from ...architectures import (
    TEXT as TEXT_TOWER,
)
from .._wrapping import WrappingTuner
from .config import RapConfig
from .layer import TEXT, VIDEO, RapCLIPAttention, RapLayer, RapMultiheadAttention, RapShared

# RAP needs q/k/v projections (or nn.MultiheadAttention), a patch grid and a joint embedding space: CLIP models.
RAP_ARCHITECTURES = ("clip", "clip_vision_model", OPEN_CLIP)


@dataclass(frozen=True)
class RapTowers:
    """Where RAP acts in a model: the vision blocks (LoRM + ASA) and the text blocks (scale and shift), if any."""

    vision: BlockList
    text: BlockList | None

    def blocks(self, tower: str) -> BlockList | None:
        """The blocks of RAP's ``"video"`` or ``"text"`` tower."""
        return self.vision if tower == VIDEO else self.text

    def targets(self, tower: str, blocks: tuple[int, ...] | None = None) -> str:
        """Full-match regex of the self-attention modules of the tower's ``blocks`` (all for None)."""
        found = self.blocks(tower)
        assert found is not None
        return found.regex(blocks, found.anatomy.attention)

    def locate(self, key: str) -> tuple[str, int] | None:
        """``(tower, block index)`` if ``key`` is the self-attention module of a block, else None."""
        for tower in (VIDEO, TEXT):
            found = self.blocks(tower)
            place = found.locate(key) if found is not None else None
            if place is not None and place[1] == found.anatomy.attention:
                return tower, place[0]
        return None

    def tower_of(self, key: str) -> str:
        """'video' or 'text': which tower the module ``key`` belongs to, or a clear error."""
        place = self.locate(key)
        if place is None:
            patterns = sorted(self.targets(t) for t in (VIDEO, TEXT) if self.blocks(t) is not None)
            raise ValueError(
                f"RAP target {key!r} is not a self-attention module of a CLIP vision or text block "
                f"(patterns: {patterns}); check `target_modules`"
            )
        return place[0]


def rap_towers(model: nn.Module) -> RapTowers:
    """RAP's towers of ``model``, or a clear error for architectures RAP does not know."""
    architecture = architecture_of(model)
    towers = tower_block_lists(model) if architecture in RAP_ARCHITECTURES else {}
    if VISION not in towers:
        raise ValueError(
            f"RAP supports frame-wise CLIP video encoders: HF CLIPModel / CLIPVisionModel (model_type 'clip', "
            f"'clip_vision_model') and open_clip CLIP / VisionTransformer; got architecture {architecture!r}"
        )
    return RapTowers(towers[VISION], towers.get(TEXT_TOWER))


@dataclass(frozen=True)
class VisionGeometry:
    """What RAP needs to know about the vision tower: patch count N, block count, joint embedding width E."""

    num_patches: int
    depth: int
    condition_dim: int | None


def vision_geometry(model: nn.Module, towers: RapTowers) -> VisionGeometry:
    """Read N, depth and E from a HF or open_clip CLIP model."""
    depth = towers.vision.depth
    visual = open_clip_visual(model)
    if visual is not None:
        rows, cols = visual.grid_size
        return VisionGeometry(rows * cols, depth, getattr(visual, "output_dim", None))
    config = hf_model_of(model).config
    vision = getattr(config, "vision_config", config)
    condition_dim = getattr(config, "projection_dim", None) or getattr(vision, "projection_dim", None)
    return VisionGeometry((vision.image_size // vision.patch_size) ** 2, depth, condition_dim)


def visual_projection(model: nn.Module) -> torch.Tensor | None:
    """The model's frozen patch-to-joint-space projection as an (E, D) matrix, if it has one."""
    visual = open_clip_visual(model)
    if visual is not None:
        proj = getattr(visual, "proj", None)
        return proj.detach().T if isinstance(proj, torch.Tensor) else None
    projection = getattr(hf_model_of(model), "visual_projection", None)
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
        if not (peft_config.use_lorm or peft_config.use_asa) and towers.text is None:
            raise ValueError(
                "`use_lorm` and `use_asa` are False and this vision-only model has no text tower for "
                "`text_modulation`: the adapter would do nothing"
            )
        blocks = resolve_blocks(
            peft_config.blocks, geometry.depth, where=f"the vision tower `{towers.vision.path}`"
        )
        vision_on = peft_config.use_lorm or peft_config.use_asa
        text_modulation = peft_config.text_modulation
        if peft_config.target_modules is None:
            if text_modulation is True and towers.text is None:
                raise ValueError(
                    f"`text_modulation`=True, but this model (architecture {architecture_of(self.model)!r}) has no "
                    "text tower to modulate: leave it None (in every text block, if there is a text tower) or False"
                )
            text_modulation = towers.text is not None if text_modulation is None else text_modulation
            patterns = [towers.targets(VIDEO, blocks)] if vision_on else []
            if text_modulation:
                patterns.append(towers.targets(TEXT))
            peft_config.target_modules = "|".join(f"(?:{p})" for p in patterns)
        else:
            targeted = self._targeted_blocks(peft_config, towers)
            if text_modulation is None:
                text_modulation = bool(targeted[TEXT])
            if text_modulation and not targeted[TEXT]:
                raise ValueError(
                    "`text_modulation`=True, but `target_modules` selects no text-tower self-attention; leave it None "
                    "(it then follows the targets) or False"
                )
            if vision_on and not targeted[VIDEO]:
                raise ValueError(
                    "`use_lorm` / `use_asa` are on, but `target_modules` selects no vision-tower self-attention, so "
                    "neither would run: set both False for a RAP on the text tower only"
                )
            if peft_config.blocks != "all" and vision_on and targeted[VIDEO] != list(blocks):
                raise ValueError(
                    f"`blocks`={peft_config.blocks!r} selects vision blocks {list(blocks)}, but `target_modules` "
                    f"targets vision blocks {targeted[VIDEO]}; pass one of the two (blocks only shapes the default "
                    "target_modules)"
                )
        peft_config.text_modulation = text_modulation
        self.pvrap_geometry = geometry
        self.pvrap_towers = towers
        return peft_config

    def _targeted_blocks(self, config: RapConfig, towers: RapTowers) -> dict[str, list[int]]:
        """Per tower, the sorted indices of the blocks whose self-attention ``config.target_modules`` selects."""
        targeted: dict[str, list[int]] = {VIDEO: [], TEXT: []}
        for key, _ in self.model.named_modules():
            place = towers.locate(key)
            if place is not None and check_target_module_exists(config, key):
                targeted[place[0]].append(place[1])
        return {tower: sorted(indices) for tower, indices in targeted.items()}

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
        tower = self.pvrap_towers.tower_of(current_key)
        if tower == TEXT and not peft_config.text_modulation:
            raise ValueError(f"{current_key!r} is a text-tower attention but `text_modulation` is False")
        if tower == VIDEO and not (peft_config.use_lorm or peft_config.use_asa):
            raise ValueError(f"{current_key!r} is a vision attention but `use_lorm` and `use_asa` are False")
        if tower == VIDEO and peft_config.use_asa:
            self._create_shared(adapter_name, peft_config, target)
        self._wrap_or_update(
            peft_config,
            adapter_name,
            target,
            target_name,
            parent,
            lambda: _layer_class(target, current_key)(
                target,
                adapter_name,
                peft_config,
                tower=tower,
                num_patches=self.pvrap_geometry.num_patches,
                shared=self.pvrap_shared,
            ),
        )

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
