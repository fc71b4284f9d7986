"""Text-video retrieval with a frame-wise CLIP: encode frames, mean-pool over time, symmetric InfoNCE.

:class:`VideoTextRetrievalModel` is the task model that peft adapters are applied to, e.g.
``get_peft_model(VideoTextRetrievalModel(clip), ReadConfig(recurrence_axis="frames", num_frames=T))``: the default
targets of peft-video's methods find the towers inside ``self.backbone``, and ``Trainer`` saves only the adapter.
Videos are conditioned on sentence embeddings for RAP's asynchronous self-attention (harmless for other methods):
in training each video on its own caption, in retrieval each video on its best-matching candidate sentence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ...alignment import TwoTower
from ...architectures import block_regex, is_open_clip_model, linear_members, tower_block_lists
from ...conditioning import sentence_condition
from ...video import mean_pool_frames, unflatten_frames, use_num_frames, video_to_frame_batch
from ..methods import MethodTargets

_PROJECTIONS = {  # open_clip keeps its projections as bare parameters
    False: ("backbone.visual_projection", "backbone.text_projection"),
    True: ("backbone.visual.proj", "backbone.text_projection"),
}
_IA3_MEMBERS = {  # (targets, feed-forward targets) inside a vision block; open_clip's fused attention takes no IA3
    False: (("self_attn.k_proj", "self_attn.v_proj", "mlp.fc2"), ("mlp.fc2",)),
    True: (("mlp.c_fc", "mlp.c_proj"), ("mlp.c_proj",)),
}
"""IA3 scales keys, values and the FFN's inner activations (the input of its second layer)."""

TEXT_EMBEDDINGS = "token_embedding"
"""Name (suffix) of the text tower's word-embedding table in HF CLIP and open_clip: the recipes' `--text-embeddings`
trains it (``prepare_model(..., also_train=[TEXT_EMBEDDINGS])``) for words the backbone never learned."""

MAX_LOGIT_SCALE = 100.0
"""CLIP clamps its learned logit scale (inverse temperature) at 100; so does this task's loss."""


@dataclass
class VideoTextRetrievalOutput(ModelOutput):
    """``loss`` (symmetric InfoNCE), ``logits_per_text`` (B texts x B videos), and the L2-normalised embeddings."""

    loss: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None


def same_text_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: rows i and j hold the same token sequence (a caption repeated within the batch)."""
    return (input_ids[:, None, :] == input_ids[None, :, :]).all(dim=-1)


def symmetric_info_nce(logits_per_text: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on (B texts x B videos) logits; pair i is text i with video i.

    ``positives`` (B, B) bool marks further correct pairs (e.g. the same caption twice in a batch, which templated
    captions make common): the target of each row then spreads evenly over its positives instead of calling a
    correct caption a negative. Without duplicates it is exactly CLIP's loss.
    """
    if logits_per_text.ndim != 2 or logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(
            f"`logits_per_text` must be a square (B, B) tensor, got shape {tuple(logits_per_text.shape)}"
        )
    size = logits_per_text.shape[0]
    eye = torch.eye(size, dtype=torch.bool, device=logits_per_text.device)
    if positives is None:
        positives = eye
    elif positives.shape != (size, size):
        raise ValueError(f"`positives` must have shape {(size, size)}, got {tuple(positives.shape)}")
    targets = (positives | eye).to(logits_per_text.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)  # symmetric relation: row sums equal column sums
    text_to_video = -(targets * logits_per_text.log_softmax(dim=1)).sum(dim=1).mean()
    video_to_text = -(targets * logits_per_text.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (text_to_video + video_to_text) / 2


def _condition(
    paired: torch.Tensor | None = None, candidates: torch.Tensor | None = None
) -> contextlib.AbstractContextManager:
    """The sentence condition of the vision forward inside (``peft_video.sentence_condition``, which RAP's ASA
    reads), or nothing."""
    if paired is None and candidates is None:
        return contextlib.nullcontext()
    return sentence_condition(paired, candidates=candidates)


class VideoTextRetrievalModel(nn.Module):
    """A CLIP (HF ``CLIPModel`` or open_clip ``CLIP``) as a text-video retrieval model over frame-wise encodings.

    ``logit_scale=None`` uses the backbone's learned logit scale (clamped at 100), which is trained only where the
    backbone is (full fine-tuning); a float fixes it. The loss is :func:`symmetric_info_nce` with repeated captions
    of a batch counted as positives.
    """

    def __init__(self, backbone: nn.Module, logit_scale: float | None = None) -> None:
        super().__init__()
        self.is_open_clip = is_open_clip_model(backbone)
        needed = (
            ("encode_image", "encode_text")
            if self.is_open_clip
            else ("get_image_features", "get_text_features")
        )
        missing = [name for name in (*needed, "logit_scale") if not hasattr(backbone, name)]
        if missing:
            raise ValueError(
                f"`backbone` must be a CLIP-like model (HF CLIPModel or open_clip CLIP) with {list(needed)} and "
                f"`logit_scale`; {type(backbone).__name__} lacks {missing}"
            )
        if logit_scale is not None and not (isinstance(logit_scale, (int, float)) and 0 < logit_scale <= 1e4):
            raise ValueError(
                f"`logit_scale` must be None (the backbone's) or a positive number, got {logit_scale!r}"
            )
        self.backbone = backbone
        # peft records this as the adapter's `base_model_name_or_path` (and the card shows it)
        self.name_or_path = getattr(backbone, "name_or_path", None) or None
        self.fixed_logit_scale = None if logit_scale is None else float(logit_scale)

    def method_targets(self) -> MethodTargets:
        """Where each method of the registry acts on this model (``peft_video.tasks.methods``): LoRA (every Linear
        of a block), IA3, READ (frames axis), the adapter, RAP and TokenMix on the vision tower; ``partial`` on the
        last block(s) of both towers, ``proj`` on both projections, ``bitfit`` on every bias of the CLIP. Prompt
        tuning does not apply."""
        towers = tower_block_lists(self)
        vision = towers["vision"]
        ia3, ia3_feedforward = _IA3_MEMBERS[self.is_open_clip]
        return MethodTargets(
            backbone=("backbone",),
            blocks=(vision.path, towers["text"].path),
            projections=_PROJECTIONS[self.is_open_clip],
            lora=block_regex(self, "vision", members=linear_members(vision.blocks[0])),
            ia3=block_regex(self, "vision", members=ia3),
            ia3_feedforward=block_regex(self, "vision", members=ia3_feedforward),
            read_axis="frames",
            token_mix={},
            rap=True,
            notes={
                "prompt": "peft's prompt tuning prepends virtual tokens to a language model's input embeddings; "
                "a CLIP vision tower takes pixels (visual prompt tuning is a different method)"
            },
        )

    def pvla_source(self, num_frames: int) -> TwoTower:
        """Where PVLA reads video and text representations: see :func:`pvla_source`."""
        return pvla_source(self, num_frames)

    def logit_scale(self) -> torch.Tensor | float:
        """The inverse temperature of the loss."""
        if self.fixed_logit_scale is not None:
            return self.fixed_logit_scale
        return self.backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, E) projected image embeddings (not normalised)."""
        if self.is_open_clip:
            return self.backbone.encode_image(frames)
        return _pooled(self.backbone.get_image_features(pixel_values=frames))

    def encode_texts(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) tokens -> (B, E) L2-normalised sentence embeddings."""
        if self.is_open_clip:
            return F.normalize(self.backbone.encode_text(input_ids), dim=-1)
        features = self.backbone.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(_pooled(features), dim=-1)

    def encode_videos(
        self,
        pixel_values: torch.Tensor,
        *,
        paired: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, 3, H, W) videos -> (B, E) L2-normalised, mean-pooled video embeddings.

        The frame count of every peft-video layer is set to T for this call. ``paired`` (B, E) or ``candidates``
        (M, E) sentence embeddings condition RAP (one per video, or each video picks its best match); give one of
        them when the model carries a RAP adapter.
        """
        frames = video_to_frame_batch(pixel_values)
        num_frames = pixel_values.shape[1]
        with use_num_frames(num_frames), _condition(paired, candidates):
            return mean_pool_frames(self.frame_features(frames), num_frames)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> VideoTextRetrievalOutput:
        """Embed B captions, then B videos (each conditioned on its own caption), and score all pairs."""
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"`pixel_values` holds {pixel_values.shape[0]} videos but `input_ids` {input_ids.shape[0]} captions; "
                "pass one caption per video"
            )
        text_embeds = self.encode_texts(input_ids, attention_mask)
        video_embeds = self.encode_videos(pixel_values, paired=text_embeds)
        logits_per_text = self.logit_scale() * text_embeds @ video_embeds.T
        loss = symmetric_info_nce(logits_per_text, same_text_mask(input_ids)) if return_loss else None
        return VideoTextRetrievalOutput(
            loss=loss, logits_per_text=logits_per_text, text_embeds=text_embeds, video_embeds=video_embeds
        )


def _pooled(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """transformers 5 returns the projected features as ``pooler_output`` of a ModelOutput; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def pvla_source(model: nn.Module, num_frames: int) -> TwoTower:
    """Where PVLA reads video and text from in a :class:`VideoTextRetrievalModel` (bare or under peft): every block
    of both towers, the video side as each frame's [CLS] token (B, T, D), the text side as its tokens (B, L, D)
    with the attention mask; HF CLIP's visual / text projections bring both to the joint space."""

    def frame_tokens(hidden: torch.Tensor) -> torch.Tensor:
        return unflatten_frames(hidden[:, 0], num_frames)

    if is_open_clip_model(model):  # open_clip keeps its projections as bare matrices: widths must agree
        return TwoTower(
            video_modules=block_regex(model, "vision"),
            text_modules=block_regex(model, "text"),
            video_transform=frame_tokens,
        )
    return TwoTower(
        video_modules=block_regex(model, "vision"),
        text_modules=block_regex(model, "text"),
        video_transform=frame_tokens,
        video_projection="backbone.visual_projection",
        text_projection="backbone.text_projection",
        text_mask="attention_mask",
    )
