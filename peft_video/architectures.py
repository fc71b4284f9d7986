"""Where CLIP-family, ViT, BLIP and open_clip models keep their towers and blocks: the one place that knows.

Every tuner and task that needs "the vision blocks of this model" asks here, so that the layout of each supported
architecture is written down once:

- **architecture**: the HF ``config.model_type`` of the outermost HF model in a module tree (so task wrappers work),
  or ``"open_clip"``.
- **tower**: ``"vision"`` (the frame-wise image encoder) or ``"text"``.
- **block list**: the ``nn.ModuleList`` of a tower's transformer blocks, found by its dotted path
  (:data:`TOWER_BLOCK_LISTS`). A path also matches as a suffix (``backbone.vision_model.encoder.layers`` for
  ``vision_model.encoder.layers``), so models inside task wrappers or under peft are found too. A text tower's list
  is never the vision tower's (open_clip names both ``...transformer.resblocks``).
- **block anatomy**: the attribute names inside one block (:data:`BLOCK_ANATOMIES`): the attention, the feed-forward
  module, and the parts (norms, layer scales) that go with each.
- **block indices**: ``"all"``, ``"light"`` (the last :data:`LIGHT_BLOCKS`), one index or a list of indices, Python
  style (``-1`` is the last block), resolved once by :func:`resolve_blocks`.

Regexes built here (:func:`block_regex`) name a tower's block list by its path *in the model they were computed on*
and are full-match patterns (peft's ``target_modules`` convention), so they match exactly those modules and nothing
in another tower.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

OPEN_CLIP = "open_clip"
VISION, TEXT = "vision", "text"
TOWERS = (VISION, TEXT)

BLOCK_PRESETS = ("all", "light")
LIGHT_BLOCKS = 4  # "light": the last four blocks (RAP_light, Table 3 of the RAP paper)

# Dotted paths of each tower's ModuleList of blocks, per architecture; the first path present in the model wins.
TOWER_BLOCK_LISTS: dict[str, dict[str, tuple[str, ...]]] = {
    "clip": {VISION: ("vision_model.encoder.layers",), TEXT: ("text_model.encoder.layers",)},
    # CLIPVisionModel keeps `encoder.layers` at the top, CLIPVisionModelWithProjection under `vision_model.`
    "clip_vision_model": {VISION: ("encoder.layers",)},
    "clip_text_model": {TEXT: ("encoder.layers",)},
    # BLIP's text tower is BERT-shaped (`text_model.encoder.layer`, cross-attention): no tuner adapts it
    "blip": {VISION: ("vision_model.encoder.layers",)},
    "blip_vision_model": {VISION: ("encoder.layers",)},
    "video_blip_caption": {VISION: ("vision_model.encoder.layers",)},  # tasks/captioning: BLIP on videos
    # transformers 5 names ViT's blocks `layers` (`vit.layers` in task heads); 4.x `encoder.layer`
    "vit": {VISION: ("layers", "encoder.layer")},
    # open_clip: CLIP has `visual.transformer.resblocks` and the text `transformer.resblocks`; a bare
    # VisionTransformer has only `transformer.resblocks`, which is then its vision tower
    OPEN_CLIP: {
        VISION: ("visual.transformer.resblocks", "transformer.resblocks"),
        TEXT: ("transformer.resblocks",),
    },
}

# Feed-forward modules (name suffixes) of the encoder-decoder text models READ adapts, which have no towers.
SEQUENCE_FFNS: dict[str, tuple[str, ...]] = {
    "bart": ("fc2",),
    "mbart": ("fc2",),
    "t5": ("DenseReluDense",),
    "mt5": ("DenseReluDense",),
}


@dataclass(frozen=True)
class BlockAnatomy:
    """Attribute names inside one transformer block.

    ``attention``: the self-attention module. ``attention_parts``: the other modules that go with it (its pre-norm,
    open_clip's layer scale). ``ffn``: the (dotted) module whose output is the feed-forward output O.
    ``ffn_parts``: the feed-forward modules with their pre-norm and layer scale. ``attention_parts`` and
    ``ffn_parts`` together with ``attention`` cover every parameter of the block.
    """

    attention: str
    attention_parts: tuple[str, ...]
    ffn: str
    ffn_parts: tuple[str, ...]

    @property
    def required(self) -> tuple[str, ...]:
        """The attributes whose presence identifies this layout."""
        return (self.attention, self.attention_parts[0], *self.ffn_parts[:2])


BLOCK_ANATOMIES: tuple[BlockAnatomy, ...] = (
    BlockAnatomy(
        "self_attn", ("layer_norm1",), "mlp", ("layer_norm2", "mlp")
    ),  # HF CLIP (both towers), BLIP vision
    BlockAnatomy(
        "attention", ("layernorm_before",), "mlp", ("layernorm_after", "mlp")
    ),  # HF ViT, transformers 5
    # HF ViT, transformers 4.x: the FFN is `intermediate` + `output` (whose forward adds the residual)
    BlockAnatomy(
        "attention", ("layernorm_before",), "output.dense", ("layernorm_after", "intermediate", "output")
    ),
    BlockAnatomy(
        "attn", ("ln_1", "ls_1"), "mlp", ("ln_2", "mlp", "ls_2")
    ),  # open_clip ResidualAttentionBlock
)


def architecture_of(model: nn.Module) -> str | None:
    """HF ``config.model_type`` of ``model`` or of the outermost HF model inside it (e.g. in a task wrapper);
    ``"open_clip"`` for open_clip models; else ``None``."""
    for module in model.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(model_type, str) and model_type != "custom":
            return model_type
    if is_open_clip_model(model):
        return OPEN_CLIP
    return None


def is_open_clip_model(model: nn.Module) -> bool:
    """True if ``model`` is or contains (e.g. inside a task wrapper) an open_clip ``VisionTransformer`` tower."""
    try:
        from open_clip.transformer import VisionTransformer
    except ImportError:  # pragma: no cover - open_clip is a dependency, but stay importable without it
        return False
    return any(isinstance(module, VisionTransformer) for module in model.modules())


def hf_model_of(model: nn.Module) -> nn.Module | None:
    """The outermost module of ``model`` with a HF config (the HF model itself, or the one inside a wrapper)."""
    return next(
        (
            m
            for m in model.modules()
            if isinstance(getattr(getattr(m, "config", None), "model_type", None), str)
        ),
        None,
    )


def open_clip_visual(model: nn.Module) -> nn.Module | None:
    """The open_clip ``VisionTransformer`` in ``model`` (itself, its ``visual``, or inside a wrapper), if any."""
    if not is_open_clip_model(model):
        return None
    from open_clip.transformer import VisionTransformer

    return next(m for m in model.modules() if isinstance(m, VisionTransformer))


def unwrapped(module: nn.Module) -> nn.Module:
    """The original module under peft tuner layers (peft-video's included)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    while isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    return module


# -- block lists ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockList:
    """One tower's blocks in one model: the dotted ``path`` of their ModuleList and the list itself."""

    tower: str
    path: str
    blocks: nn.ModuleList

    @property
    def depth(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    @property
    def anatomy(self) -> BlockAnatomy:
        """The layout of the tower's blocks (read from the first one)."""
        return block_anatomy(self.blocks[0])

    def names(self, blocks: Sequence[int] | None = None, member: str | None = None) -> list[str]:
        """Full module names of the given blocks (all for None), or of ``member`` (dotted) inside each."""
        indices = range(self.depth) if blocks is None else blocks
        suffix = f".{member}" if member else ""
        return [f"{self.path}.{index}{suffix}" for index in indices]

    def regex(self, blocks: Sequence[int] | None = None, members: Sequence[str] | str | None = None) -> str:
        """A full-match regex for the given blocks (all for None), or for ``members`` (dotted names) inside each."""
        indices = r"\d+" if blocks is None else "(?:" + "|".join(str(int(b)) for b in blocks) + ")"
        pattern = re.escape(self.path) + r"\." + indices
        if members:
            names = [members] if isinstance(members, str) else list(members)
            pattern += r"\.(?:" + "|".join(re.escape(m) for m in names) + ")"
        return pattern

    def locate(self, key: str) -> tuple[int, str] | None:
        """``(block index, rest)`` if the module name ``key`` is one of the blocks (rest ``""``) or inside one."""
        prefix = self.path + "."
        if not key.startswith(prefix):
            return None
        index, _, rest = key[len(prefix) :].partition(".")
        return (int(index), rest) if index.isdigit() else None


def find_block_list(
    model: nn.Module, tower: str = VISION, block_list: str | None = None, *, hint: str = ""
) -> BlockList:
    """The ``tower``'s blocks of ``model``: at ``block_list`` (a dotted path, also as a suffix) if given, else where
    :data:`TOWER_BLOCK_LISTS` says for the model's architecture; a clear ``ValueError`` otherwise (also when a path
    matches several ModuleLists, e.g. a wrapper holding two CLIPs).

    ``hint`` ends the error messages (e.g. which argument of the caller names the blocks by hand).
    """
    lists = dict(_module_lists(model))
    exclude: set[str] = set()
    if tower == TEXT and block_list is None:  # the text tower is never the vision tower's list
        vision = _find(model, VISION, None, lists, set(), hint)
        exclude = {vision.path} if isinstance(vision, BlockList) else set()
    found = _find(model, tower, block_list, lists, exclude, hint)
    if isinstance(found, BlockList):
        return found
    raise ValueError(found + (f"; {hint}" if hint else ""))


def tower_block_lists(model: nn.Module) -> dict[str, BlockList]:
    """The towers ``model`` has, by name (``"vision"`` first), each with its blocks; empty for unknown layouts.

    A path of :data:`TOWER_BLOCK_LISTS` that matches several ModuleLists is a ``ValueError``.
    """
    lists = dict(_module_lists(model))
    towers: dict[str, BlockList] = {}
    for tower in TOWERS:
        found = _find(model, tower, None, lists, {t.path for t in towers.values()})
        if isinstance(found, BlockList):
            towers[tower] = found
    return towers


def vision_blocks_path(model: nn.Module) -> str:
    """Dotted path of the vision tower's ModuleList of blocks in ``model`` (e.g.
    ``backbone.vision_model.encoder.layers``); a clear error if there is none."""
    return find_block_list(model, VISION).path


def text_blocks_path(model: nn.Module) -> str:
    """Dotted path of the text tower's ModuleList of blocks in ``model``; a clear error for vision-only models."""
    return find_block_list(model, TEXT).path


def block_regex(
    model: nn.Module,
    tower: str = VISION,
    *,
    blocks: object = None,
    members: Sequence[str] | str | None = None,
) -> str:
    """Full-match regex for the ``blocks`` (see :func:`resolve_blocks`; None: all) of ``model``'s ``tower``, or for
    ``members`` (dotted names such as ``"mlp"`` or ``["self_attn.q_proj", "mlp.fc1"]``) inside each of them.

    E.g. PVLA's layer-by-layer source of a retrieval model: ``block_regex(model, "vision")`` and
    ``block_regex(model, "text")``; LoRA on the vision tower:
    ``block_regex(model, "vision", members=linear_members(find_block_list(model).blocks[0]))``.
    """
    found = find_block_list(model, tower)
    indices = None if blocks is None else resolve_blocks(blocks, found.depth, where=f"`{found.path}`")
    return found.regex(indices, members)


def _module_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module)
    ]


def _find(
    model: nn.Module,
    tower: str,
    block_list: str | None,
    lists: dict[str, nn.ModuleList],
    exclude: set[str],
    hint: str = "",
) -> BlockList | str:
    """The tower's BlockList, or why there is none (an error message); a ``ValueError`` if a path is ambiguous."""
    if tower not in TOWERS:
        raise ValueError(f"`tower` must be one of {TOWERS}, got {tower!r}")
    architecture = architecture_of(model)
    candidates = (block_list,) if block_list else TOWER_BLOCK_LISTS.get(architecture or "", {}).get(tower, ())
    if not candidates:
        known = sorted(a for a, towers in TOWER_BLOCK_LISTS.items() if tower in towers)
        return (
            f"peft-video does not know where the {tower} blocks of {type(model).__name__} (architecture "
            f"{architecture!r}) are; known architectures: {known}"
        )
    for path in candidates:
        found = [
            name for name in lists if (name == path or name.endswith("." + path)) and name not in exclude
        ]
        if len(found) == 1:
            return BlockList(tower, found[0], lists[found[0]])
        if len(found) > 1:
            raise ValueError(
                f"the {tower} block path {path!r} matches several ModuleLists {found} in {type(model).__name__}; "
                "name the full dotted path of the blocks" + (f"; {hint}" if hint else "")
            )
    return (
        f"no non-empty ModuleList of {tower} blocks at {list(candidates)} in {type(model).__name__} (architecture "
        f"{architecture!r})"
    )


# -- block anatomy -------------------------------------------------------------------------------------------------


def block_anatomy(block: nn.Module) -> BlockAnatomy:
    """The layout of ``block`` among :data:`BLOCK_ANATOMIES` (peft tuner layers in it are fine), or a clear error."""
    for anatomy in BLOCK_ANATOMIES:
        if all(isinstance(getattr(block, name, None), nn.Module) for name in anatomy.required):
            return anatomy
    raise ValueError(
        f"peft-video does not know the layout of block {type(block).__name__}: expected an attention named one of "
        f"{sorted({a.attention for a in BLOCK_ANATOMIES})} beside its norms and feed-forward module "
        f"(known layouts: {[a.required for a in BLOCK_ANATOMIES]})"
    )


def linear_members(block: nn.Module) -> tuple[str, ...]:
    """Dotted names, relative to ``block``, of the Linear layers of its attention and feed-forward module, in model
    order; an ``nn.MultiheadAttention`` (open_clip) is named whole, as its in-projection is not a Linear layer.

    These are the modules a LoRA-style tuner adapts in a block.
    """
    anatomy = block_anatomy(block)
    names: list[str] = []
    for part in (anatomy.attention, *anatomy.ffn_parts):
        names.extend(_linears(block.get_submodule(part), part))
    return tuple(names)


def _linears(module: nn.Module, name: str) -> list[str]:
    """Names of the Linear layers in ``module`` (itself included), a peft tuner layer counting as what it wraps."""
    base = unwrapped(module)
    if isinstance(base, (nn.Linear, nn.MultiheadAttention)):
        return [name]
    if base is not module:  # a tuner layer around a composite module: look inside the original
        return _linears(base, name)
    return [
        found
        for child_name, child in module.named_children()
        for found in _linears(child, f"{name}.{child_name}")
    ]


# -- block indices -------------------------------------------------------------------------------------------------


def validate_blocks(blocks: object, *, argument: str = "blocks") -> str | list[int]:
    """``blocks`` in its stored form: a preset (``"all"``, ``"light"``) or a non-empty list of distinct ints (one int
    becomes a one-element list); a ``ValueError`` naming ``argument`` otherwise. Range checks need the model: see
    :func:`resolve_blocks`."""
    if isinstance(blocks, str) and blocks in BLOCK_PRESETS:
        return blocks
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        return [blocks]
    if isinstance(blocks, (list, tuple)) and blocks:
        integers = all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)
        if integers and len(set(blocks)) == len(blocks):
            return list(blocks)
    raise ValueError(
        f"`{argument}` must be a non-empty list of distinct block indices (ints, Python style: -1 is the last block), "
        f"one index, or one of {BLOCK_PRESETS} ('light': the last {LIGHT_BLOCKS}); got {blocks!r}"
    )


def resolve_blocks(
    blocks: object, depth: int, *, argument: str = "blocks", where: str = "the tower"
) -> tuple[int, ...]:
    """The sorted non-negative block indices that ``blocks`` names among ``depth`` blocks.

    ``"all"``: every block; ``"light"``: the last :data:`LIGHT_BLOCKS` (all of a shallower tower); an int or a list of
    ints: Python-style indices (``-1`` is the last). An index out of ``-depth..depth-1`` and two entries naming one
    block (``1`` and ``-1`` of two blocks) are ``ValueError``s naming ``argument`` and ``where`` the blocks are.
    """
    blocks = validate_blocks(blocks, argument=argument)
    if blocks == "all":
        return tuple(range(depth))
    if blocks == "light":
        return tuple(range(max(depth - LIGHT_BLOCKS, 0), depth))
    resolved: dict[int, int] = {}
    for index in blocks:
        if not -depth <= index < depth:
            raise ValueError(
                f"`{argument}` entry {index} is out of range: {where} has {depth} blocks (valid indices "
                f"{-depth}..{depth - 1})"
            )
        absolute = index % depth
        if absolute in resolved:
            raise ValueError(
                f"`{argument}` entries {resolved[absolute]} and {index} name the same block {absolute} of {where}"
            )
        resolved[absolute] = index
    return tuple(sorted(resolved))
