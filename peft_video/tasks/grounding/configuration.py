"""Configuration of the Moment-DETR-style grounding model (Lei, Berg and Bansal, NeurIPS 2021).

The defaults are Moment-DETR's published setting for QVHighlights: hidden size 256, 2 encoder and 2 decoder
layers, 8 heads, FFN 1024, 10 moment queries, dropout 0.1, input dropout 0.5, two input projection layers,
temporal endpoint features, auxiliary decoding losses, and its loss and matching weights (span L1 10, gIoU 1,
class 4 with no-object weight 0.1, saliency 1 with margin 0.2). The input widths default to QVHighlights'
SlowFast + CLIP clip features (2304 + 512) and CLIP query token features (512).
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PretrainedConfig

__all__ = ["ACTIVATIONS", "INPUT_PROJECTIONS", "GroundingConfig"]

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu")
INPUT_PROJECTIONS: tuple[str, ...] = ("video_projection", "text_projection")
"""The modules that read the input features; rebuilt when the data's feature widths differ from the config's."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
    return float(value)


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a dropout probability in [0, 1), got {value!r}")
    return float(value)


class GroundingConfig(PretrainedConfig):
    """Configuration of :class:`~peft_video.tasks.grounding.GroundingModel`.

    Args:
        video_feature_dim: width D_v of the clip features the model reads (without the 2 temporal endpoint
            features, which the model appends itself when ``temporal_endpoint_features``).
        text_feature_dim: width D_q of the query token features (e.g. CLIP's text ``last_hidden_state``).
        temporal_endpoint_features: append each clip's normalised (start, end) in the video, Moment-DETR's
            "tef", to its feature (2 extra input dims).
        hidden_size, num_encoder_layers, num_decoder_layers, num_attention_heads, intermediate_size: the
            transformer (post-norm, DETR style).
        num_queries: learned moment queries (detection slots) of the decoder.
        dropout: dropout inside the transformer (attention weights, residual branches, FFN).
        input_dropout: dropout on the input features of each input projection layer.
        num_input_layers: layers (LayerNorm, dropout, Linear, ReLU except the last) of each input projection.
        activation: FFN activation, ``"relu"`` (Moment-DETR) or ``"gelu"``.
        max_clips: the most clips one forward reads (Moment-DETR: 75); longer videos are truncated in training and
            read through sliding windows by the predictor.
        max_query_tokens: query tokens kept (Moment-DETR: 32).
        clip_length: seconds per clip of the data the model was last trained on (QVHighlights: 2); the default
            for turning clip indices into seconds.
        aux_loss: also supervise every intermediate decoder layer's predictions (matched separately).
        span_loss_coef, giou_loss_coef, label_loss_coef, saliency_loss_coef: loss weights.
        eos_coef: class-loss weight of the "no moment" (background) class.
        saliency_margin: margin of the saliency ranking loss.
        match_cost_span, match_cost_giou, match_cost_class: Hungarian matching cost weights.
        reinitialized_modules: names of modules whose weights the pretrained checkpoint does not provide (the
            input projections, when rebuilt for new feature widths); every fine-tuning method trains them.
    """

    model_type = "peft_video_grounding"

    def __init__(
        self,
        video_feature_dim: int = 2816,
        text_feature_dim: int = 512,
        temporal_endpoint_features: bool = True,
        hidden_size: int = 256,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        num_attention_heads: int = 8,
        intermediate_size: int = 1024,
        num_queries: int = 10,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        num_input_layers: int = 2,
        activation: str = "relu",
        max_clips: int = 75,
        max_query_tokens: int = 32,
        clip_length: float = 2.0,
        aux_loss: bool = True,
        span_loss_coef: float = 10.0,
        giou_loss_coef: float = 1.0,
        label_loss_coef: float = 4.0,
        saliency_loss_coef: float = 1.0,
        eos_coef: float = 0.1,
        saliency_margin: float = 0.2,
        match_cost_span: float = 10.0,
        match_cost_giou: float = 1.0,
        match_cost_class: float = 4.0,
        reinitialized_modules: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        for name, value in (
            ("video_feature_dim", video_feature_dim),
            ("text_feature_dim", text_feature_dim),
            ("hidden_size", hidden_size),
            ("num_encoder_layers", num_encoder_layers),
            ("num_decoder_layers", num_decoder_layers),
            ("num_attention_heads", num_attention_heads),
            ("intermediate_size", intermediate_size),
            ("num_queries", num_queries),
            ("num_input_layers", num_input_layers),
            ("max_clips", max_clips),
            ("max_query_tokens", max_query_tokens),
        ):
            _positive_int(name, value)
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({hidden_size}) must be a multiple of `num_attention_heads` ({num_attention_heads})"
            )
        if num_input_layers > 3:
            raise ValueError(f"`num_input_layers` must be 1, 2 or 3 (Moment-DETR: 2), got {num_input_layers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}")
        if isinstance(clip_length, bool) or not isinstance(clip_length, (int, float)) or not clip_length > 0:
            raise ValueError(f"`clip_length` must be a number of seconds > 0, got {clip_length!r}")
        reinitialized = list(reinitialized_modules or [])
        unknown = [name for name in reinitialized if name not in INPUT_PROJECTIONS]
        if unknown:
            raise ValueError(
                f"`reinitialized_modules` may only name the input projections {INPUT_PROJECTIONS}, got {unknown}"
            )
        self.video_feature_dim = video_feature_dim
        self.text_feature_dim = text_feature_dim
        self.temporal_endpoint_features = bool(temporal_endpoint_features)
        self.hidden_size = hidden_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_queries = num_queries
        self.dropout = _probability("dropout", dropout)
        self.input_dropout = _probability("input_dropout", input_dropout)
        self.num_input_layers = num_input_layers
        self.activation = activation
        self.max_clips = max_clips
        self.max_query_tokens = max_query_tokens
        self.clip_length = float(clip_length)
        self.aux_loss = bool(aux_loss)
        self.span_loss_coef = _non_negative("span_loss_coef", span_loss_coef)
        self.giou_loss_coef = _non_negative("giou_loss_coef", giou_loss_coef)
        self.label_loss_coef = _non_negative("label_loss_coef", label_loss_coef)
        self.saliency_loss_coef = _non_negative("saliency_loss_coef", saliency_loss_coef)
        self.eos_coef = _non_negative("eos_coef", eos_coef)
        self.saliency_margin = _non_negative("saliency_margin", saliency_margin)
        self.match_cost_span = _non_negative("match_cost_span", match_cost_span)
        self.match_cost_giou = _non_negative("match_cost_giou", match_cost_giou)
        self.match_cost_class = _non_negative("match_cost_class", match_cost_class)
        if not (self.match_cost_span or self.match_cost_giou or self.match_cost_class):
            raise ValueError(
                "the matching costs `match_cost_span`, `match_cost_giou`, `match_cost_class` are all 0"
            )
        self.reinitialized_modules = [name for name in INPUT_PROJECTIONS if name in reinitialized]
        super().__init__(**kwargs)

    @property
    def video_input_dim(self) -> int:
        """Width of the video projection's input: the clip features plus 2 temporal endpoint features if used."""
        return self.video_feature_dim + (2 if self.temporal_endpoint_features else 0)
