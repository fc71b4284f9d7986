"""A Moment-DETR-style temporal grounding model as a transformers ``PreTrainedModel``.

Clip features (B, L_v, D_v) and query token features (B, L_q, D_q) are projected to a shared width, concatenated
into one joint sequence [clips; query tokens] and read by a post-norm transformer encoder (sine positions on the
clips, none on the query, as in Moment-DETR). A decoder with ``num_queries`` learned moment queries attends to
the encoder output and predicts, per query, a normalised (centre, width) span and a foreground / background
logit; a linear saliency head scores every clip from the encoder output. Losses: :mod:`.losses`.

Layout for the fine-tuning methods: attention is four named Linear layers (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``) and every block's feed-forward network is a module ``ffn`` (``fc1`` -> activation -> dropout ->
``fc2``) whose output is READ's O. The encoder applies its FFN to the clip part and the query part of the joint
sequence in two calls: position-wise, this is the same computation, and it lets a sequence-aware adapter on the
FFN (READ's recurrence) run over the clip sequence and over the query tokens separately, never across the
boundary, with each part's padding at its end, so a clip's output never depends on how much padding the batch
has. :meth:`GroundingModel.method_targets` and :meth:`GroundingModel.pvla_source` tell the method registry and
PVLA where everything is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ...alignment import SingleStream
from .configuration import INPUT_PROJECTIONS, GroundingConfig
from .losses import moment_losses, saliency_margin_loss

try:  # transformers 5: initialisers that skip weights loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # pragma: no cover - transformers 4.x
    from torch.nn import init

__all__ = [
    "NOT_APPLICABLE",
    "GroundingModel",
    "GroundingOutput",
    "sine_positions",
    "temporal_endpoint_features",
]

logger = logging.getLogger(__name__)

_LAYERS = r"(.*\.)?(encoder|decoder)\.layers\.\d+"

NOT_APPLICABLE: dict[str, str] = {
    "prompt": "it reads pre-extracted clip and query token features, not token ids",
    "rap": "RAP is for two-tower CLIP retrieval",
    "token_mix": "it has no frame-wise vision tower",
}
"""The registry's methods that do not apply to :class:`GroundingModel`, and why (``MethodTargets.notes``)."""


# --------------------------------------------------------------------------------------------------- features


def temporal_endpoint_features(video_mask: Tensor) -> Tensor:
    """(B, L) real-clip mask -> (B, L, 2): clip i of a video of n clips gets (i / n, (i + 1) / n); padding 0."""
    mask = video_mask.bool()
    lengths = mask.sum(1, keepdim=True).clamp(min=1).to(torch.float32)
    index = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)[None, :]
    tef = torch.stack([index / lengths, (index + 1) / lengths], dim=-1)
    return tef * mask[..., None]


def sine_positions(mask: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """(B, L) real-clip mask -> (B, L, dim) sine / cosine encodings of each clip's normalised position.

    The position of clip i (1-based) of n real clips is ``2 pi i / n`` (DETR's normalised sine embedding in one
    dimension); channel pair k holds ``sin`` and ``cos`` of it divided by ``temperature ** (2k / dim)``.
    """
    if dim % 2:
        raise ValueError(f"sine positions need an even width, got {dim}")
    steps = mask.float().cumsum(1)
    steps = steps / (steps[:, -1:] + 1e-6) * (2 * math.pi)
    pairs = torch.arange(dim // 2, device=mask.device, dtype=torch.float32)
    frequencies = temperature ** (2 * pairs / dim)
    angles = steps[..., None] / frequencies  # (B, L, dim/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(2)


# ----------------------------------------------------------------------------------------------------- blocks


class GroundingAttention(nn.Module):
    """Multi-head attention with separate q / k / v / out projections (targets for LoRA and IA3)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            linear._grounding_init = "attention"  # see GroundingModel._init_weights

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """(B, Lq, D) queries attend to (B, Lk, D) keys / values; ``key_mask`` (B, Lk) True at real keys."""
        q, k, v = (
            self._heads(self.q_proj(query)),
            self._heads(self.k_proj(key)),
            self._heads(self.v_proj(value)),
        )
        mask = None if key_mask is None else key_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """Position-wise FFN ``fc2(dropout(act(fc1(x))))``; its output is the O that READ adapts."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        for linear in (self.fc1, self.fc2):
            linear._grounding_init = "ffn"  # see GroundingModel._init_weights
        self.dropout = nn.Dropout(dropout)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class GroundingEncoderLayer(nn.Module):
    """Post-norm encoder block over the joint [clips; query tokens] sequence; positions enter queries and keys."""

    def __init__(self, config: GroundingConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.self_attn = GroundingAttention(d, config.num_attention_heads, config.dropout)
        self.ffn = FeedForward(d, config.intermediate_size, config.dropout, config.activation)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)

    def forward(self, hidden: Tensor, positions: Tensor, mask: Tensor, num_clips: int) -> Tensor:
        """``hidden`` (B, L_v + L_q, D); the first ``num_clips`` positions are clips. Returns (B, L_v + L_q, D)."""
        query_key = hidden + positions
        hidden = self.norm1(hidden + self.dropout1(self.self_attn(query_key, query_key, hidden, mask)))
        clips, tokens = hidden[:, :num_clips], hidden[:, num_clips:]
        update = torch.cat([self.ffn(clips), self.ffn(tokens)], dim=1)  # see the module docstring
        return self.norm2(hidden + self.dropout2(update))


class GroundingDecoderLayer(nn.Module):
    """Post-norm decoder block: moment queries self-attend, then attend to the encoder output, then FFN."""

    def __init__(self, config: GroundingConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.self_attn = GroundingAttention(d, config.num_attention_heads, config.dropout)
        self.cross_attn = GroundingAttention(d, config.num_attention_heads, config.dropout)
        self.ffn = FeedForward(d, config.intermediate_size, config.dropout, config.activation)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.dropout3 = nn.Dropout(config.dropout)

    def forward(
        self, hidden: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, memory_mask: Tensor
    ) -> Tensor:
        query_key = hidden + query_pos
        hidden = self.norm1(hidden + self.dropout1(self.self_attn(query_key, query_key, hidden)))
        attended = self.cross_attn(hidden + query_pos, memory + memory_pos, memory, memory_mask)
        hidden = self.norm2(hidden + self.dropout2(attended))
        return self.norm3(hidden + self.dropout3(self.ffn(hidden)))


class GroundingEncoder(nn.Module):
    """The encoder blocks (``layers``)."""

    def __init__(self, config: GroundingConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GroundingEncoderLayer(config) for _ in range(config.num_encoder_layers))

    def forward(self, hidden: Tensor, positions: Tensor, mask: Tensor, num_clips: int) -> Tensor:
        for layer in self.layers:
            hidden = layer(hidden, positions, mask, num_clips)
        return hidden


class GroundingDecoder(nn.Module):
    """The decoder blocks (``layers``) and the LayerNorm shared by every layer's output (``norm``)."""

    def __init__(self, config: GroundingConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GroundingDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(
        self, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, memory_mask: Tensor
    ) -> list[Tensor]:
        """Normalised outputs of every layer, first to last: each (B, Q, D)."""
        hidden = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            hidden = layer(hidden, query_pos, memory, memory_pos, memory_mask)
            outputs.append(self.norm(hidden))
        return outputs


class ProjectionLayer(nn.Module):
    """LayerNorm -> dropout -> Linear (-> ReLU): one layer of an input projection (Moment-DETR's LinearLayer)."""

    def __init__(self, in_features: int, out_features: int, dropout: float, relu: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, out_features)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(self.dropout(self.norm(x)))
        return F.relu(x) if self.relu else x


def input_projection(in_features: int, config: GroundingConfig) -> nn.Sequential:
    """``num_input_layers`` projection layers from ``in_features`` to the hidden size; ReLU after the first only
    when there are two (Moment-DETR: a ReLU after each layer except the last of the first two)."""
    relu = [True] * 3
    relu[config.num_input_layers - 1] = False
    sizes = [in_features] + [config.hidden_size] * config.num_input_layers
    return nn.Sequential(
        *(
            ProjectionLayer(sizes[i], sizes[i + 1], config.input_dropout, relu[i])
            for i in range(config.num_input_layers)
        )
    )


class SpanHead(nn.Module):
    """Three-layer MLP (ReLU between) from a decoder output to a (centre, width) logit pair."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Linear(hidden_size, hidden_size),
                nn.Linear(hidden_size, hidden_size),
                nn.Linear(hidden_size, 2),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


# ----------------------------------------------------------------------------------------------------- output


@dataclass
class GroundingOutput(ModelOutput):
    """Output of :class:`GroundingModel`.

    loss: weighted total (with labels). loss_span / loss_giou / loss_label / loss_saliency: the unweighted terms of
        the last decoder layer (auxiliary layers are in ``loss`` only).
    pred_logits: (B, Q, 2) foreground (index 0) / background logits per moment query.
    pred_spans: (B, Q, 2) normalised (centre, width) per moment query, in (0, 1).
    saliency_scores: (B, L_v) saliency per clip (values at padded clips are meaningless).
    aux_pred_logits / aux_pred_spans: (num_decoder_layers - 1, B, Q, 2) predictions of the earlier decoder layers.
    encoder_last_hidden_state: (B, L_v + L_q, D) encoder output over [clips; query tokens].
    """

    loss: Tensor | None = None
    loss_span: Tensor | None = None
    loss_giou: Tensor | None = None
    loss_label: Tensor | None = None
    loss_saliency: Tensor | None = None
    pred_logits: Tensor | None = None
    pred_spans: Tensor | None = None
    saliency_scores: Tensor | None = None
    aux_pred_logits: Tensor | None = None
    aux_pred_spans: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None

    def foreground_scores(self) -> Tensor:
        """(B, Q) probability that each moment query found a moment (Moment-DETR's ranking score)."""
        return self.pred_logits.float().softmax(-1)[..., 0]


# ------------------------------------------------------------------------------------------------------ model


def _video_positions(inputs: Mapping[str, Any]) -> Tensor:
    """PVLA: (B, L_v + L_q) True at the clip positions of the joint sequence, from the model's inputs."""
    video, text = inputs.get("video_features"), inputs.get("text_features")
    if not isinstance(video, Tensor) or not isinstance(text, Tensor):
        raise RuntimeError(
            "PVLA on GroundingModel needs `video_features` and `text_features` passed by keyword to the forward"
        )
    batch, num_clips = video.shape[:2]
    joint = num_clips + text.shape[1]
    return (torch.arange(joint, device=video.device) < num_clips).expand(batch, joint)


def _joint_mask(inputs: Mapping[str, Any]) -> Tensor:
    """PVLA: (B, L_v + L_q) True at real clips and real query tokens."""
    video, text = inputs["video_features"], inputs["text_features"]
    video_mask, text_mask = inputs.get("video_mask"), inputs.get("text_mask")
    if video_mask is None:
        video_mask = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
    if text_mask is None:
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    return torch.cat([video_mask.bool(), text_mask.bool().to(video_mask.device)], dim=1)


class GroundingModel(PreTrainedModel):
    """Moment-DETR-style moment retrieval and highlight detection over pre-extracted clip and query features.

    ``forward(video_features, text_features, video_mask, text_mask)`` returns spans, foreground logits and clip
    saliency; with ``span_labels`` / ``span_mask`` and / or ``saliency_pos_labels`` / ``saliency_neg_labels`` it
    also returns the loss (so ``transformers.Trainer`` trains it as is). Masks are True / 1 at real clips / tokens.

    Loading for data of other feature widths: ``GroundingModel.from_pretrained(path, video_feature_dim=...,
    text_feature_dim=...)`` rebuilds the input projections whose width changed (new random weights), records them
    in ``config.reinitialized_modules`` (every method trains them) and logs one line.
    """

    config_class = GroundingConfig
    base_model_prefix = "grounding"
    main_input_name = "video_features"
    supports_gradient_checkpointing = False
    _no_split_modules = ["GroundingEncoderLayer", "GroundingDecoderLayer"]

    def __init__(self, config: GroundingConfig) -> None:
        super().__init__(config)
        self.video_projection = input_projection(config.video_input_dim, config)
        self.text_projection = input_projection(config.text_feature_dim, config)
        self.encoder = GroundingEncoder(config)
        self.decoder = GroundingDecoder(config)
        self.query_embed = nn.Embedding(config.num_queries, config.hidden_size)
        self.class_head = nn.Linear(config.hidden_size, 2)
        self.span_head = SpanHead(config.hidden_size)
        self.saliency_head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    # ------------------------------------------------------------------------------------------ initialisation

    def _init_weights(self, module: nn.Module) -> None:
        """Moment-DETR's initialisation: Xavier-uniform matrices inside the transformer blocks (zero attention biases,
        as ``nn.MultiheadAttention``), PyTorch's default Linear initialisation elsewhere (projections, heads, FFN
        biases), unit-normal moment queries, identity LayerNorms. Block Linear layers carry a ``_grounding_init``
        mark because transformers calls this per module with parameters, never on the blocks themselves."""
        if isinstance(module, nn.Linear):
            kind = getattr(module, "_grounding_init", None)
            bound = 1 / math.sqrt(module.in_features)
            if kind is None:
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            else:
                init.xavier_uniform_(module.weight)
            if module.bias is not None:
                if kind == "attention":
                    init.zeros_(module.bias)
                else:
                    init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)

    # ------------------------------------------------------------------------------------- feature widths

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Any,
        *model_args: Any,
        video_feature_dim: int | None = None,
        text_feature_dim: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """``PreTrainedModel.from_pretrained``, then :meth:`rebuild_input_projections` for the widths given.

        A width that differs from the checkpoint's rebuilds that input projection (new weights, as
        ``ignore_mismatched_sizes`` does for a mismatched layer) and logs one line; the same widths change nothing.
        """
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.rebuild_input_projections(
            video_feature_dim=video_feature_dim, text_feature_dim=text_feature_dim
        )
        return loaded

    def rebuild_input_projections(
        self, video_feature_dim: int | None = None, text_feature_dim: int | None = None
    ) -> list[str]:
        """Replace the input projection(s) whose input width differs from the one given; returns their names.

        The new projections are freshly initialised (from torch's global RNG), on the old ones' device and dtype;
        the config takes the new widths and lists the rebuilt modules in ``reinitialized_modules``, which
        :meth:`method_targets` reports as ``new_modules`` (trained by every method). One log line says so.
        """
        config = self.config
        wanted = {"video_projection": video_feature_dim, "text_projection": text_feature_dim}
        current = {"video_projection": config.video_feature_dim, "text_projection": config.text_feature_dim}
        rebuilt = []
        for name in INPUT_PROJECTIONS:
            width = wanted[name]
            if width is None or width == current[name]:
                continue
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise ValueError(
                    f"the {name.split('_')[0]} feature width must be a positive integer, got {width!r}"
                )
            old = getattr(self, name)
            reference = next(old.parameters())
            if name == "video_projection":
                config.video_feature_dim = width
                in_features = config.video_input_dim
            else:
                config.text_feature_dim = width
                in_features = width
            new = input_projection(in_features, config)
            new.apply(self._init_weights)
            setattr(self, name, new.to(device=reference.device, dtype=reference.dtype))
            rebuilt.append(name)
        if rebuilt:
            config.reinitialized_modules = [
                name for name in INPUT_PROJECTIONS if name in {*config.reinitialized_modules, *rebuilt}
            ]
            changes = ", ".join(f"{name} ({current[name]} -> {wanted[name]} features)" for name in rebuilt)
            logger.warning(
                "GroundingModel: the data's feature widths differ from the checkpoint's; rebuilt %s with new "
                "weights, which every fine-tuning method trains",
                changes,
            )
        return rebuilt

    # ------------------------------------------------------------------------------------------ the methods

    def method_targets(self) -> Any:
        """Where each fine-tuning method of ``peft_video.tasks.methods`` applies (see ``MethodTargets``)."""
        from ..methods import MethodTargets

        return MethodTargets(
            backbone=("",),
            blocks=("encoder.layers", "decoder.layers"),
            projections=("class_head", "span_head", "saliency_head"),
            new_modules=tuple(self.config.reinitialized_modules),
            lora=rf"{_LAYERS}\.((self_attn|cross_attn)\.(q_proj|k_proj|v_proj|out_proj)|ffn\.(fc1|fc2))",
            ia3=rf"{_LAYERS}\.((self_attn|cross_attn)\.(k_proj|v_proj)|ffn\.fc2)",
            ia3_feedforward=rf"{_LAYERS}\.ffn\.fc2",
            read=rf"{_LAYERS}\.ffn",
            read_axis="tokens",
            notes=dict(NOT_APPLICABLE),
        )

    def pvla_source(self) -> SingleStream:
        """PVLA reads every encoder block's output, split into clips (video) and query tokens (text)."""
        return SingleStream(
            modules=r"(.*\.)?encoder\.layers\.\d+", video_tokens=_video_positions, padding_mask=_joint_mask
        )

    # -------------------------------------------------------------------------------------------- forward

    def _check_inputs(
        self,
        video_features: Tensor,
        video_mask: Tensor | None,
        text_features: Tensor,
        text_mask: Tensor | None,
    ) -> None:
        config = self.config
        for name, features, width in (
            ("video_features", video_features, config.video_feature_dim),
            ("text_features", text_features, config.text_feature_dim),
        ):
            if not isinstance(features, Tensor) or features.ndim != 3:
                got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
                raise ValueError(f"`{name}` must be a (B, L, D) tensor, got {got}")
            if features.shape[-1] != width:
                raise ValueError(
                    f"`{name}` are {features.shape[-1]} wide but the model reads {width}; load it with "
                    f"GroundingModel.from_pretrained(path, {name.split('_')[0]}_feature_dim={features.shape[-1]}) "
                    "to rebuild its input projection"
                )
            if features.shape[1] == 0:
                raise ValueError(f"`{name}` has no positions (L = 0): every sample needs at least one")
        if video_features.shape[0] != text_features.shape[0]:
            raise ValueError(
                f"`video_features` holds {video_features.shape[0]} samples but `text_features` "
                f"{text_features.shape[0]}"
            )
        for name, mask, features in (
            ("video_mask", video_mask, video_features),
            ("text_mask", text_mask, text_features),
        ):
            if mask is not None and tuple(mask.shape) != tuple(features.shape[:2]):
                raise ValueError(
                    f"`{name}` must be (B, L) = {tuple(features.shape[:2])}, got {tuple(mask.shape)}"
                )

    def forward(
        self,
        video_features: Tensor,
        text_features: Tensor,
        video_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
        span_labels: Tensor | None = None,
        span_mask: Tensor | None = None,
        saliency_pos_labels: Tensor | None = None,
        saliency_neg_labels: Tensor | None = None,
        return_dict: bool | None = None,
    ) -> GroundingOutput:
        """Predict spans and saliency; with labels, also the loss.

        video_features (B, L_v, D_v), text_features (B, L_q, D_q); masks (B, L) True / 1 at real positions
        (None: all real). span_labels (B, W, 2): normalised (centre, width) windows, span_mask (B, W) marks the
        real ones (None: all). saliency_pos_labels / saliency_neg_labels (B, P): clip indices of P (more / less
        salient) pairs, -1 for none.
        """
        self._check_inputs(video_features, video_mask, text_features, text_mask)
        batch, num_clips = video_features.shape[:2]
        device = video_features.device
        if video_mask is None:
            video_mask = torch.ones(batch, num_clips, dtype=torch.bool, device=device)
        if text_mask is None:
            text_mask = torch.ones(text_features.shape[:2], dtype=torch.bool, device=device)
        video_mask, text_mask = video_mask.bool(), text_mask.bool()

        if self.config.temporal_endpoint_features:
            tef = temporal_endpoint_features(video_mask).to(video_features.dtype)
            video_features = torch.cat([video_features, tef], dim=-1)
        clips = self.video_projection(video_features)
        tokens = self.text_projection(text_features)
        hidden = torch.cat([clips, tokens], dim=1)
        mask = torch.cat([video_mask, text_mask], dim=1)
        positions = torch.cat(
            [sine_positions(video_mask, self.config.hidden_size).to(hidden.dtype), torch.zeros_like(tokens)],
            dim=1,
        )

        memory = self.encoder(hidden, positions, mask, num_clips)
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        decoded = self.decoder(query_pos, memory, positions, mask)
        layers = torch.stack(decoded)  # (num_decoder_layers, B, Q, D)
        logits = self.class_head(layers)
        spans = self.span_head(layers).sigmoid()
        saliency = self.saliency_head(memory[:, :num_clips]).squeeze(-1)

        output = GroundingOutput(
            pred_logits=logits[-1],
            pred_spans=spans[-1],
            saliency_scores=saliency,
            aux_pred_logits=logits[:-1] if len(decoded) > 1 else None,
            aux_pred_spans=spans[:-1] if len(decoded) > 1 else None,
            encoder_last_hidden_state=memory,
        )
        if span_labels is not None or saliency_pos_labels is not None:
            self._add_loss(
                output, logits, spans, span_labels, span_mask, saliency_pos_labels, saliency_neg_labels
            )
        return output

    def _add_loss(
        self,
        output: GroundingOutput,
        logits: Tensor,
        spans: Tensor,
        span_labels: Tensor | None,
        span_mask: Tensor | None,
        positive: Tensor | None,
        negative: Tensor | None,
    ) -> None:
        config = self.config
        costs = {
            "eos_coef": config.eos_coef,
            "cost_span": config.match_cost_span,
            "cost_giou": config.match_cost_giou,
            "cost_class": config.match_cost_class,
        }
        total = logits.sum() * 0.0
        if span_labels is not None:
            if span_labels.ndim != 3 or span_labels.shape[-1] != 2 or span_labels.shape[0] != logits.shape[1]:
                raise ValueError(
                    f"`span_labels` must be (B, W, 2) with B = {logits.shape[1]}, got {tuple(span_labels.shape)}"
                )
            if span_mask is None:
                span_mask = torch.ones(span_labels.shape[:2], dtype=torch.bool, device=span_labels.device)
            elif tuple(span_mask.shape) != tuple(span_labels.shape[:2]):
                raise ValueError(
                    f"`span_mask` must be (B, W) = {tuple(span_labels.shape[:2])}, got {tuple(span_mask.shape)}"
                )
            span_mask = span_mask.bool()
            layers = range(logits.shape[0]) if config.aux_loss else [logits.shape[0] - 1]
            for layer in layers:
                terms = moment_losses(logits[layer], spans[layer], span_labels, span_mask, **costs)
                total = (
                    total
                    + config.span_loss_coef * terms.span
                    + config.giou_loss_coef * terms.giou
                    + config.label_loss_coef * terms.label
                )
            output.loss_span, output.loss_giou, output.loss_label = terms.span, terms.giou, terms.label
        if positive is not None:
            if negative is None:
                raise ValueError("`saliency_pos_labels` was given without `saliency_neg_labels`")
            saliency = saliency_margin_loss(
                output.saliency_scores, positive, negative, config.saliency_margin
            )
            output.loss_saliency = saliency
            total = total + config.saliency_loss_coef * saliency
        output.loss = total
