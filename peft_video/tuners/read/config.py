"""Configuration of READ, the recurrent adapter of READ-PVLA (Nguyen et al., AAAI 2024, section 3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...video import validate_num_frames
from .._config import PeftVideoConfig, check_choice, check_positive_int, check_probability

RNN_TYPES = ("rnn", "gru", "lstm", "none")
RECURRENT_TYPES = ("rnn", "gru", "lstm")
RECURRENCE_AXES = ("tokens", "frames")


@dataclass
class ReadConfig(PeftVideoConfig):
    """Configuration of a READ adapter: O~ = O + GELU(RNN(O W_down)) W_up on the output O of each target FFN.

    ``rnn_type="none"`` leaves the recurrence out: O~ = O + GELU(O W_down) W_up is the bottleneck adapter of Houlsby et
    al. (2019) after each FFN, with 2dk + d + k parameters per module, the cleanest ablation of what the recurrence
    buys. It goes through the same code path, targets and axis rule as the recurrent variants (so flipping
    ``rnn_type`` changes nothing else); since nothing recurs, the axis and ``num_frames`` only choose the default
    targets (e.g. the vision tower of a CLIP) and do not enter the computation.

    ``recurrence_axis="tokens"`` runs the recurrence over the sequence of a (B, L, D) input (text tokens, or the
    N_V frame features of a grounding / summarisation encoder). ``recurrence_axis="frames"`` is for frame-wise image
    encoders fed B*T frames: the (B*T, N, D) output is viewed as (B, T, N, D) and the recurrence runs over the T
    frames, separately for every token position.

    **How the axis is decided** (``recurrence_axis=None``, the default), so that it is never silently the wrong one:

    1. ``num_frames`` given: ``"frames"`` (here, at construction). ``recurrence_axis="tokens"`` together with
       ``num_frames`` is a ``ValueError`` naming both: token recurrence would never use T.
    2. Otherwise at injection, from the model: the targeted modules (``target_modules``, or the default ones) all in
       a frame-wise vision tower: ``"frames"``, with T set at run time by :func:`peft_video.use_num_frames`; none in
       one (text towers, encoder-decoder text models, unknown layouts): ``"tokens"``; both: a ``ValueError``. A
       vision-only model's default targets are its vision blocks, a text-only model's its text blocks; a model with
       both towers (CLIP) has no default tower: pass ``num_frames`` (or ``recurrence_axis="frames"``) for the vision
       tower, ``recurrence_axis="tokens"`` for the text tower, or ``target_modules``.
    3. ``recurrence_axis="frames"`` with targets in a text tower is a ``ValueError``.

    The decided axis is written into the config (and so into the saved ``adapter_config.json``), so a reload is
    unambiguous; saved configs with an explicit axis load as they are. Recurrence over patch tokens within each frame
    (no temporal order) stays available as an explicit ``recurrence_axis="tokens"`` on a vision tower.
    """

    method = "read"

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Names (suffix match) or a regex (full match) of the feed-forward modules whose output READ adapts. "
            "If None, chosen from the architecture (BART, mBART, T5, CLIP text/vision, BLIP vision, ViT, open_clip) "
            "and `recurrence_axis`."
        },
    )
    r: int = field(default=8, metadata={"help": "Bottleneck size k of READ (paper: k << d, e.g. 4-8)."})
    rnn_type: Literal["rnn", "gru", "lstm", "none"] = field(
        default="rnn",
        metadata={
            "help": "Recurrent cell in the bottleneck: 'rnn' (paper default), 'gru' or 'lstm'; 'none': no recurrence, "
            "the Houlsby adapter O + GELU(O W_down) W_up (the axis and num_frames then only choose the targets)."
        },
    )
    read_dropout: float = field(default=0.0, metadata={"help": "Dropout on the FFN output before W_down."})
    recurrence_axis: Literal["tokens", "frames"] | None = field(
        default=None,
        metadata={
            "help": "'tokens': recur over the sequence of (B, L, D); 'frames': recur over T of (B*T, N, D). None: "
            "decided from the config and the model: 'frames' if `num_frames` is given or every target lies in a "
            "frame-wise vision tower, else 'tokens' (a two-tower model needs one of the three set). The decided axis is "
            "saved with the adapter."
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={
            "help": "Frames per video T (can be overridden at run time with `peft_video.use_num_frames(T)`). Giving it "
            "means recurrence over frames: it implies recurrence_axis='frames' and is an error with 'tokens'."
        },
    )
    init_weights: bool | Literal["paper"] = field(
        default=True,
        metadata={
            "help": "True: W_down Kaiming-normal, RNN PyTorch default, W_up and biases zero, so the output is unchanged "
            "at init and every READ weight gets gradient from the second step. 'paper': the paper's literal init (RNN "
            "zero too), under which only W_up's bias ever gets gradient (the same as True with rnn_type='none'). "
            "False: random W_up (tests only)."
        },
    )

    def validate(self) -> None:
        check_positive_int(self.r, "r", "READ bottleneck size k")
        check_choice(self.rnn_type, "rnn_type", RNN_TYPES)
        if self.recurrence_axis is not None:
            check_choice(self.recurrence_axis, "recurrence_axis", RECURRENCE_AXES)
        if self.num_frames is not None:
            validate_num_frames(self.num_frames)
            if self.recurrence_axis is None:
                self.recurrence_axis = "frames"
        check_probability(self.read_dropout, "read_dropout")
        check_choice(self.init_weights, "init_weights", (True, False, "paper"))

    def unused_settings(self) -> dict[str, str]:
        if self.recurrence_axis == "tokens":
            return {
                "num_frames": "with `recurrence_axis`='tokens' (the recurrence runs over the tokens of each sequence, "
                "never over frames): for recurrence over frames pass recurrence_axis='frames' or leave it unset"
            }
        return {}

    def card_variant(self) -> str:
        if self.rnn_type == "none":
            return "adapter (Houlsby): READ without the recurrence, `O + GELU(O W_down) W_up`"
        cell = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[self.rnn_type]
        return f"READ, recurrent adapter: {cell} recurrence over {self.recurrence_axis or 'the decided axis'}"
