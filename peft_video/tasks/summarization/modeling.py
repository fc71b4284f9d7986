"""Vision-guided BART and T5 (Yu et al., EMNLP 2021): the text encoder's output fused with video, read by the decoder.

:class:`VisionGuidedBart` is a ``BartForConditionalGeneration`` and :class:`VisionGuidedT5` a
``T5ForConditionalGeneration`` with one module more, ``fusion`` (:class:`VisionGuidedFusion`), applied to the text
encoder's last hidden states H (B, L, d):

1. video features (B, T, D_v) -> ``Linear`` -> ``LayerNorm`` + sinusoidal positions over time -> optional transformer
   layers over time (``video_layers``): V (B, T, d);
2. cross-modal attention with the text states as queries over the video as keys and values:
   A = MHA(Q = H W_q, K = V W_k, V = V W_v) W_o;
3. forget gate: G = sigmoid(W_g [A; H]), A' = G * A (Yu et al.'s "multi-head attention + forget gate" variant);
4. H' = H + W_f [H; A'].

Yu et al. write the last step as H' = W_f [H; A']; we add H and start W_f at zero, the same family of functions but
one that starts exactly at the pretrained text model (a vision-guided model before training generates what the text
model generates), which matters when only a few parameters train. The decoder cross-attends to H'. ``generate()``
takes ``video_features`` / ``video_mask`` like any model input (beam search repeats them per beam), and so does
``Seq2SeqTrainer(predict_with_generate=True)``. ``text_only=True`` builds no fusion: the plain text model.

Fine-tuning methods (:meth:`method_targets`): the fusion is new, so every method trains it (``frozen`` trains only
it). READ adapts the feed-forward modules of the *encoder* only. Why not the decoder's: READ's recurrence runs over
the tokens a module sees in one call. In teacher forcing the decoder sees the whole summary at once, and a forward
RNN leaks nothing from later tokens, but in cached incremental decoding (``generate()``) each call sees one new
token, so the RNN would restart from a zero state at every step and generation would not compute the function that
was trained. Carrying the RNN state in the cache (and reordering it with the beams) would fix that at a cost in
generation speed; keeping READ in the encoder gives the same output with and without a cache (tested) and leaves
generation speed untouched. The encoder's tokens are all present at once, so there is nothing to leak there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BartForConditionalGeneration, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from ...alignment import TwoTower
from .configuration import VisionGuidedBartConfig, VisionGuidedT5Config

try:  # transformers 5: initialisers that skip weights loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # pragma: no cover - transformers 4.x
    from torch.nn import init

__all__ = [
    "VideoEncoder",
    "VisionGuidedBart",
    "VisionGuidedFusion",
    "VisionGuidedT5",
    "sinusoidal_positions",
]


def sinusoidal_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(length, width) fixed sine / cosine positions (Vaswani et al.): the video's time order, with no weights."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width)
    )
    table = torch.zeros(length, width, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : width // 2]
    return table.to(dtype)


def _safe_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) real-frame mask with one position opened in videos that have none (so attention has a key), and the
    (B,) flags of videos that do have frames (the others get no video at all)."""
    has_video = mask.any(1)
    if bool(has_video.all()):
        return mask, has_video
    safe = mask.clone()
    safe[~has_video, 0] = True
    return safe, has_video


class _ZeroLinear(nn.Linear):
    """A Linear layer whose weights start at zero (the fusion's output: the fused model starts at the text model)."""


class VideoEncoder(nn.Module):
    """Video features (B, T, D_v) -> (B, T, d): projection, LayerNorm, time positions, optional transformer layers."""

    def __init__(self, feature_dim: int, width: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Linear(feature_dim, width)
        self.norm = nn.LayerNorm(width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        hidden = self.norm(self.projection(features))
        hidden = hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device, hidden.dtype)
        hidden = self.dropout(hidden)
        for layer in self.layers:
            hidden = layer(hidden, src_key_padding_mask=~mask)
        return hidden * mask[:, :, None].to(hidden.dtype)


class VisionGuidedFusion(nn.Module):
    """Cross-modal attention (text queries over video keys / values) and a forget gate; see the module docstring."""

    def __init__(self, config: VisionGuidedBartConfig | VisionGuidedT5Config, width: int) -> None:
        super().__init__()
        self.heads = config.video_heads
        self.video_encoder = VideoEncoder(
            config.video_feature_dim, width, config.video_layers, config.video_heads, config.fusion_dropout
        )
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_output = nn.Linear(width, width)
        self.forget_gate = nn.Linear(2 * width, width)
        self.output = _ZeroLinear(2 * width, width)
        self.dropout = nn.Dropout(config.fusion_dropout)

    def forward(self, text: Tensor, video_features: Tensor, video_mask: Tensor) -> Tensor:
        """Fused states (B, L, d) from text states (B, L, d) and video features (B, T, D_v) with mask (B, T)."""
        mask, has_video = _safe_mask(video_mask)
        video = self.video_encoder(video_features.to(text.dtype), mask)
        batch, length, width = text.shape
        heads, head_width = self.heads, width // self.heads

        def split(x: Tensor) -> Tensor:
            return x.view(batch, -1, heads, head_width).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(text)),
            split(self.key(video)),
            split(self.value(video)),
            attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        attended = self.attention_output(attended.transpose(1, 2).reshape(batch, length, width))
        attended = attended * has_video[:, None, None].to(attended.dtype)
        gate = self.dropout(torch.sigmoid(self.forget_gate(torch.cat([attended, text], dim=-1))))
        return text + self.output(torch.cat([text, gate * attended], dim=-1))


class FusedEncoder:
    """What ``generate()`` calls as the encoder: the text encoder, then the fusion. A view on the model (it holds no
    weights of its own, so parameter names stay those of the text model)."""

    main_input_name = "input_ids"

    def __init__(self, model: _VisionGuidedMixin) -> None:
        self._model = model

    def __call__(self, *args: Any, **kwargs: Any) -> BaseModelOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        video_features: Tensor | None = None,
        video_mask: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = True,
    ) -> BaseModelOutput:
        text = self._model.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        fused = self._model.fuse(text.last_hidden_state, video_features, video_mask)
        return BaseModelOutput(
            last_hidden_state=fused, hidden_states=text.hidden_states, attentions=text.attentions
        )


class _VisionGuidedMixin:
    """What VG-BART and VG-T5 share: the fusion, the fused encoder, the forward with video, the method targets."""

    config: VisionGuidedBartConfig | VisionGuidedT5Config
    _text_encoder_path: str
    _embeddings: str
    _lora_pattern: str
    _ia3_pattern: str
    _ia3_feedforward: str
    _read_pattern: str
    _blocks: tuple[str, ...]
    _backbone: tuple[str, ...]

    def post_init(self) -> None:
        # Called at the end of the text model's __init__: build the fusion first, so the usual initialisation
        # (and from_pretrained's handling of weights a checkpoint lacks) covers it.
        if not self.config.text_only and "fusion" not in self._modules:
            self.fusion = VisionGuidedFusion(self.config, self.config.d_model)
        super().post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # first, always: BART's random stream (and weights) stay what they were
        if isinstance(module, _ZeroLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif self._fan_in_fusion_init and isinstance(module, nn.Linear) and self._in_fusion(module):
            # T5 draws every Linear it does not know at std = initializer_factor (1.0), not its own layers'
            # factor / sqrt(fan_in): the fusion's states would grow ~sqrt(d) per layer (VisionGuidedT5's docstring)
            factor = getattr(self.config, "initializer_factor", 1.0)
            init.normal_(module.weight, mean=0.0, std=factor * module.in_features**-0.5)
            if module.bias is not None:
                init.zeros_(module.bias)

    _fan_in_fusion_init = False
    """Whether the fusion's Linear layers are drawn at std factor / sqrt(fan_in) (T5) rather than by the text
    model's own ``_init_weights`` (BART: N(0, init_std = 0.02), unchanged)."""

    def _in_fusion(self, module: nn.Module) -> bool:
        fusion = self._modules.get("fusion")
        return fusion is not None and any(module is part for part in fusion.modules())

    @property
    def text_encoder(self) -> nn.Module:
        """The text model's own encoder (BART's ``model.encoder``, T5's ``encoder``)."""
        return self.get_submodule(self._text_encoder_path)

    def get_encoder(self, modality: str | None = None) -> FusedEncoder:
        """The encoder ``generate()`` runs: text encoder + fusion (see :class:`FusedEncoder`)."""
        return FusedEncoder(self)

    def fuse(self, text: Tensor, video_features: Tensor | None, video_mask: Tensor | None) -> Tensor:
        """The fusion applied to text states (B, L, d); text-only models return them unchanged."""
        if self.config.text_only:
            return text
        if video_features is None:
            raise ValueError(
                f"{type(self).__name__} is vision-guided and needs `video_features` (B, T, "
                f"{self.config.video_feature_dim}); load it with text_only=True for the text-only model"
            )
        if not isinstance(video_features, Tensor) or video_features.ndim != 3:
            got = tuple(video_features.shape) if isinstance(video_features, Tensor) else type(video_features)
            raise ValueError(f"`video_features` must be a (B, T, D_v) tensor, got {got}")
        batch, frames, width = video_features.shape
        if width != self.config.video_feature_dim:
            raise ValueError(
                f"`video_features` are {width} wide but the model reads {self.config.video_feature_dim}; load it "
                f"with video_feature_dim={width} to rebuild its video projection"
            )
        if batch != text.shape[0]:
            raise ValueError(f"`video_features` has batch {batch} but the text has {text.shape[0]}")
        if frames > self.config.max_video_frames:
            raise ValueError(
                f"`video_features` has {frames} frames, more than max_video_frames={self.config.max_video_frames}; "
                "truncate them (the data loaders do)"
            )
        if video_mask is None:
            video_mask = torch.ones(batch, frames, dtype=torch.bool, device=video_features.device)
        elif tuple(video_mask.shape) != (batch, frames):
            raise ValueError(
                f"`video_mask` must be (B, T) = {(batch, frames)}, got {tuple(video_mask.shape)}"
            )
        return self.fusion(text, video_features, video_mask.to(torch.bool))

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        video_features: Tensor | None = None,
        video_mask: Tensor | None = None,
        encoder_outputs: Any = None,
        inputs_embeds: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """The text model's forward with ``video_features`` (B, T, D_v) and ``video_mask`` (B, T) added; they are
        read when the encoder runs (not when ``encoder_outputs`` are given, as in each step of ``generate()``)."""
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                video_features=video_features,
                video_mask=video_mask,
                output_attentions=kwargs.get("output_attentions"),
                output_hidden_states=kwargs.get("output_hidden_states"),
            )
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs, **kwargs
        )

    def generate(self, *args: Any, labels: Tensor | None = None, **kwargs: Any) -> Any:
        """``generate()`` of the text model; ``labels`` (which ``Seq2SeqTrainer`` passes along with the inputs) are
        not a generation input and are dropped."""
        return super().generate(*args, **kwargs)

    # ------------------------------------------------------------------------------------------ the method registry

    def method_targets(self) -> Any:
        """Where each fine-tuning method applies. The fusion is new: every method trains it. ``proj`` trains the LM
        head, which BART and T5 tie to the token embeddings (so the embeddings move too: the paper's 38.6M for
        VG-BART's Proj is that matrix). READ adapts the encoder's FFNs only (see the module docstring)."""
        from ..methods import MethodTargets

        new = () if self.config.text_only else ("fusion",)
        tied = getattr(self.config, "tie_word_embeddings", True)
        head = self._embeddings if tied else "lm_head"  # a tied head is listed under the embeddings' name
        return MethodTargets(
            backbone=self._backbone,
            blocks=self._blocks,
            projections=(head,),
            new_modules=new,
            lora=self._lora_pattern,
            ia3=self._ia3_pattern,
            ia3_feedforward=self._ia3_feedforward,
            read=self._read_pattern,
            read_axis="tokens",
            prompt_task_type="SEQ_2_SEQ_LM",
            notes={
                "rap": "RAP is for two-tower CLIP retrieval",
                "token_mix": "it has no frame-wise vision tower",
            },
        )

    def pvla_source(self) -> TwoTower:
        """PVLA at the fusion: the projected video (``fusion.video_encoder``'s output, (B, T, d)) against the text
        encoder's output tokens (B, L, d), the two inputs of the cross-modal attention."""
        if self.config.text_only:
            raise ValueError("PVLA aligns video with text at the fusion, and a text-only model has no video")
        return TwoTower(
            # under peft the fusion is a modules_to_save copy: hook the copy that runs
            video_modules=r"fusion(\.modules_to_save\.[^.]+)?\.video_encoder",
            text_modules=self._text_encoder_path.replace(".", r"\."),
            video_mask=_video_mask,
            text_mask="attention_mask",
        )

    @classmethod
    def from_text_model(cls, name_or_path: str, **video_kwargs: Any) -> Any:
        """A vision-guided model from a plain BART / T5 checkpoint (a path or Hub id): the text weights load, the
        fusion is new (``video_kwargs``: the fields of :func:`~.configuration.video_fields`)."""
        from transformers import AutoConfig

        text_config = AutoConfig.from_pretrained(name_or_path)
        expected = cls.config_class.__mro__[1].model_type  # "bart" / "t5"
        if text_config.model_type not in (expected, cls.config_class.model_type):
            raise ValueError(
                f"{cls.__name__}.from_text_model needs a {expected!r} checkpoint, {name_or_path!r} is a "
                f"{text_config.model_type!r} model"
            )
        fields = {k: v for k, v in text_config.to_dict().items() if k not in ("model_type", "architectures")}
        config = cls.config_class(**{**fields, "text_only": False, **video_kwargs})
        return cls.from_pretrained(name_or_path, config=config)


def _video_mask(inputs: Mapping[str, Any]) -> Tensor | None:
    """PVLA: the forward's ``video_mask`` (None: every frame is real)."""
    mask = inputs.get("video_mask")
    return None if mask is None else mask.bool()


_BART_LAYERS = r"(.*\.)?model\.(encoder|decoder)\.layers\.\d+"
_T5_BLOCKS = r"(.*\.)?(encoder|decoder)\.block\.\d+"


class VisionGuidedBart(_VisionGuidedMixin, BartForConditionalGeneration):
    """VG-BART: ``BartForConditionalGeneration`` with the video fusion at the encoder output (module docstring)."""

    config_class = VisionGuidedBartConfig
    _text_encoder_path = "model.encoder"
    _embeddings = "model.shared"
    _backbone = ("model", "lm_head")
    _blocks = ("model.encoder.layers", "model.decoder.layers")
    _lora_pattern = rf"{_BART_LAYERS}\.(self_attn|encoder_attn)\.(q_proj|v_proj)"
    _ia3_pattern = rf"{_BART_LAYERS}\.((self_attn|encoder_attn)\.(k_proj|v_proj)|fc2)"
    _ia3_feedforward = rf"{_BART_LAYERS}\.fc2"
    _read_pattern = r"(.*\.)?model\.encoder\.layers\.\d+\.fc2"


class VisionGuidedT5(_VisionGuidedMixin, T5ForConditionalGeneration):
    """VG-T5: ``T5ForConditionalGeneration`` with the video fusion at the encoder output (module docstring).

    T5's ``_init_weights`` draws a Linear layer it does not know (all of the fusion's) at std = initializer_factor
    (1.0), where its own layers get factor / sqrt(fan_in); each fusion layer then multiplied its input's scale by
    ~sqrt(d), and a few AdamW steps on the zero output layer put fused states hundreds of times the encoder's
    output (RMS ~0.9) into the decoder. The fusion's Linear layers are therefore drawn at factor / sqrt(fan_in)."""

    config_class = VisionGuidedT5Config
    _fan_in_fusion_init = True
    _text_encoder_path = "encoder"
    _embeddings = "shared"
    _backbone = ("shared", "encoder", "decoder", "lm_head")
    _blocks = ("encoder.block", "decoder.block")
    _lora_pattern = rf"{_T5_BLOCKS}\.layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|v)"
    _ia3_pattern = rf"{_T5_BLOCKS}\.layer\.\d+\.((SelfAttention|EncDecAttention)\.(k|v)|DenseReluDense\.wo)"
    _ia3_feedforward = rf"{_T5_BLOCKS}\.layer\.\d+\.DenseReluDense\.wo"
    _read_pattern = r"(.*\.)?encoder\.block\.\d+\.layer\.1\.DenseReluDense"
