"""The video captioner: transformers' BLIP captioning model reading B videos of T frames (Token Mixing's model).

The vision tower encodes the B*T frames one by one (video-major, :mod:`peft_video.video`), so every tuner of the
package applies there (TokenMix in the last block, READ over frames, LoRA, ...); the (B*T, N, D) frame tokens are
flattened to (B, T*N, D) and read by the text decoder's cross-attention, as in Token Mixing (section "Architecture
Details"). Training uses the decoder's language-model loss; :meth:`VideoBlipForCaptioning.generate` decodes videos
with any ``generate()`` option (beam search, min / max length).

The class is a ``BlipForConditionalGeneration`` with a video forward, so its parameter names are BLIP's: any BLIP
caption checkpoint (``Salesforce/blip-image-captioning-base``, a local copy) loads with ``from_pretrained``, and
``save_pretrained`` writes a ``video_blip_caption`` config with ``num_frames``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, BlipConfig, BlipForConditionalGeneration
from transformers.models.blip.modeling_blip import BlipForConditionalGenerationModelOutput

from ...video import use_num_frames, validate_num_frames, video_to_frame_batch
from ..methods import MethodTargets

VISION_BLOCKS = "vision_model.encoder.layers"
LM_HEAD = "text_decoder.cls"
PAPER_ALSO_TRAINED: tuple[str, ...] = (
    "vision_model.embeddings",
    "vision_model.post_layernorm",
    "text_decoder.bert.embeddings",
    LM_HEAD,
)
"""What Token Mixing trains beside the tuned vision block in every experiment ("the linear projection layer and
language head are both fine-tuned in all experiments"). The authors' code freezes only the vision blocks (but the
tuned one) and the text decoder's transformer layers, so this is everything else: the vision embeddings (the ViT's
linear patch projection, class and position embeddings), the vision tower's final LayerNorm, the decoder's
embeddings and its language head (whose output matrix is the word table, tied)."""


class VideoBlipCaptionConfig(BlipConfig):
    """A ``BlipConfig`` with the frames per video the captioner was built for (``num_frames``, the default T of the
    frame-wise tuners; every forward takes its T from the input's shape)."""

    model_type = "video_blip_caption"
    num_frames: int = 8


class VideoBlipForCaptioning(BlipForConditionalGeneration):
    """BLIP's captioning model on videos: ``pixel_values`` (B, T, 3, H, W) -> frame tokens (B, T*N, D) -> text
    decoder. Also accepts (B, 3, H, W) images (T = 1), so still-frame pretraining uses the same class."""

    config_class = VideoBlipCaptionConfig

    def method_targets(self) -> MethodTargets:
        """Where each method of the registry acts (``peft_video.tasks.methods``), all in the vision tower, which
        Token Mixing's Table 1 counts ("updated parameters in the video encoder"): ``token_mix`` mixes and tunes the
        last block, with :data:`PAPER_ALSO_TRAINED` in ``modules_to_save``; ``partial`` tunes the last vision block;
        ``lora`` every Linear of the vision blocks; ``adapter`` / ``read`` (frames axis) the vision MLPs; ``bitfit``
        the vision biases; ``proj`` the language head. Prompt tuning, IA3 and RAP do not apply."""
        return MethodTargets(
            backbone=("vision_model",),
            blocks=(VISION_BLOCKS,),
            projections=(LM_HEAD,),
            lora=VISION_BLOCKS.replace(".", r"\.")
            + r"\.\d+\.(?:self_attn\.qkv|self_attn\.projection|mlp\.fc1|mlp\.fc2)",
            read_axis="frames",
            num_frames=self.config.num_frames,
            token_mix={"blocks": [-1], "finetune": "block", "modules_to_save": list(PAPER_ALSO_TRAINED)},
            notes={
                "prompt": "peft's prompt tuning prepends virtual tokens to a language model's input embeddings; the "
                "video side takes pixels, and the caption decoder's prompt is what it generates",
                "ia3": "not part of Token Mixing's comparison; not declared for the captioner",
                "rap": "RAP is a two-tower CLIP retrieval method",
            },
        )

    def encode_video(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """(B, T, 3, H, W) videos (or (B, 3, H, W) images) -> (B, T*N, D) frame tokens for the cross-attention."""
        if pixel_values.ndim == 4:
            pixel_values = pixel_values[:, None]
        if pixel_values.ndim != 5:
            raise ValueError(
                "`pixel_values` must be videos (B, T, 3, H, W) or images (B, 3, H, W), got shape "
                f"{tuple(pixel_values.shape)}"
            )
        videos, frames = pixel_values.shape[:2]
        with use_num_frames(validate_num_frames(frames)):
            tokens = self.vision_model(
                pixel_values=video_to_frame_batch(pixel_values),
                interpolate_pos_encoding=interpolate_pos_encoding,
            ).last_hidden_state
        return tokens.reshape(videos, frames * tokens.shape[1], tokens.shape[2])

    def caption_labels(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """LM targets: the caption tokens, padding ignored (-100); the first token (BOS) is never predicted."""
        mask = (
            attention_mask
            if attention_mask is not None
            else input_ids != self.config.text_config.pad_token_id
        )
        return input_ids.masked_fill(mask == 0, -100)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Any,
    ) -> BlipForConditionalGenerationModelOutput:
        """LM loss of the captions ``input_ids`` given the videos. The first token is replaced by the decoder's BOS
        (BLIP's convention: tokenizers start captions with their own start token); ``labels`` default to
        ``input_ids`` with padding ignored."""
        if input_ids is None:
            raise ValueError(
                "`input_ids` (the tokenized captions) are required to compute the captioning loss"
            )
        video_embeds = self.encode_video(pixel_values, interpolate_pos_encoding)
        input_ids = input_ids.clone()
        input_ids[:, 0] = self.config.text_config.bos_token_id
        if labels is None:
            labels = self.caption_labels(input_ids, attention_mask)
        outputs = self.text_decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=video_embeds,
            labels=labels,
            reduction="mean",
        )
        return BlipForConditionalGenerationModelOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            image_embeds=video_embeds,
            last_hidden_state=video_embeds,
        )

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Caption token ids for (B, T, 3, H, W) videos; ``generate_kwargs`` go to the decoder's ``generate()``
        (``num_beams``, ``max_length``, ``min_length``, ...). Starts from BOS (or from a prompt's ``input_ids``)."""
        video_embeds = self.encode_video(pixel_values, interpolate_pos_encoding)
        batch = video_embeds.shape[0]
        text = self.config.text_config
        if input_ids is None:
            input_ids = torch.full(
                (batch, 1), text.bos_token_id, dtype=torch.long, device=video_embeds.device
            )
        else:  # a tokenized prompt ends with the tokenizer's end token: drop it, start with BOS
            input_ids = input_ids[:, :-1].clone()
            input_ids[:, 0] = text.bos_token_id
            attention_mask = attention_mask[:, :-1] if attention_mask is not None else None
        video_mask = torch.ones(video_embeds.shape[:-1], dtype=torch.long, device=video_embeds.device)
        return self.text_decoder.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            eos_token_id=text.sep_token_id,
            pad_token_id=text.pad_token_id,
            encoder_hidden_states=video_embeds,
            encoder_attention_mask=video_mask,
            **generate_kwargs,
        )


AutoConfig.register(VideoBlipCaptionConfig.model_type, VideoBlipCaptionConfig, exist_ok=True)


def encoder_updated_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters in the vision tower's blocks (adapters inside them included): Token Mixing's "UP"
    column ("updated parameters in the video encoder"), without :data:`PAPER_ALSO_TRAINED`, which every trained
    method updates alike. Counted once per tensor."""
    seen: set[int] = set()
    total = 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or f"{VISION_BLOCKS}." not in name or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total
