"""The one place that knows how frame-wise encoders lay out video: (B*T, ...) <-> (B, T, ...).

Frame-wise image encoders (CLIP, ViT, BLIP, open_clip) see a batch of B videos with T frames as B*T images. Every
tuner that models time reshapes through these helpers so that the layout convention (video-major: the T frames of a
video are consecutive) and its validation live once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_NUM_FRAMES_OVERRIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "peft_video_num_frames", default=None
)


def validate_num_frames(num_frames: object, *, argument: str = "num_frames") -> int:
    """Return ``num_frames`` as an int, or raise ``ValueError`` naming ``argument`` if it is not a positive integer."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"`{argument}` must be a positive integer (frames per video), got {num_frames!r}")
    return num_frames


@contextlib.contextmanager
def use_num_frames(num_frames: int) -> Iterator[None]:
    """Within this context, every peft-video layer uses ``num_frames`` instead of its config value.

    Use it when one model sees clips of several lengths (e.g. training on 8 frames, evaluating on 12).
    """
    token = _NUM_FRAMES_OVERRIDE.set(validate_num_frames(num_frames))
    try:
        yield
    finally:
        _NUM_FRAMES_OVERRIDE.reset(token)


def resolve_num_frames(configured: int | None) -> int:
    """The frame count in force: the innermost ``use_num_frames`` context, else ``configured``."""
    override = _NUM_FRAMES_OVERRIDE.get()
    if override is not None:
        return override
    if configured is None:
        raise ValueError(
            "`num_frames` is not set: pass `num_frames=T` in the config or run the forward inside "
            "`peft_video.use_num_frames(T)`"
        )
    return configured


def check_frame_batch(frame_batch: int, num_frames: int) -> int:
    """Return the number of videos B in a batch of ``frame_batch`` = B*T frames, or raise a clear ``ValueError``."""
    if frame_batch % num_frames != 0:
        raise ValueError(
            f"`num_frames`={num_frames} does not divide the frame batch of size {frame_batch}: frame-wise encoders "
            f"expect B*T frames, video-major (the {num_frames} frames of each video consecutive)"
        )
    return frame_batch // num_frames


def unflatten_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, ...) -> (B, T, ...): split the leading frame batch into videos and frames."""
    videos = check_frame_batch(x.shape[0], num_frames)
    return x.reshape(videos, num_frames, *x.shape[1:])


def flatten_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B*T, ...): the inverse of :func:`unflatten_frames`."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def frames_to_time_major_tokens(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, N, D) -> (B*N, T, D): one sequence over time per video and token position (for recurrences)."""
    videos = check_frame_batch(x.shape[0], num_frames)
    tokens, dim = x.shape[1], x.shape[2]
    return (
        x.reshape(videos, num_frames, tokens, dim).transpose(1, 2).reshape(videos * tokens, num_frames, dim)
    )


def time_major_tokens_to_frames(x: torch.Tensor, num_frames: int, tokens: int) -> torch.Tensor:
    """(B*N, T, D) -> (B*T, N, D): the inverse of :func:`frames_to_time_major_tokens`."""
    videos = x.shape[0] // tokens
    dim = x.shape[-1]
    return (
        x.reshape(videos, tokens, num_frames, dim).transpose(1, 2).reshape(videos * num_frames, tokens, dim)
    )


def video_to_frame_batch(pixel_values: torch.Tensor) -> torch.Tensor:
    """Videos (B, T, C, H, W) -> frames (B*T, C, H, W) for a frame-wise image encoder, with shape validation."""
    if pixel_values.ndim != 5:
        raise ValueError(
            f"`pixel_values` must be a video batch of shape (B, T, C, H, W), got shape {tuple(pixel_values.shape)}"
        )
    return flatten_frames(pixel_values)


def mean_pool_frames(frame_embeds: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, E) frame embeddings -> (B, E) video embeddings: L2-normalise each frame, average over T, normalise.

    CLIP4Clip's parameter-free "meanP" pooling, which the RAP paper uses; the one video pooling of the package
    (retrieval's task model and ``retrieval_scores`` both call it). Frame-wise encoders pooled this way give a video
    and its time-reversal the same embedding.
    """
    frames = torch.nn.functional.normalize(frame_embeds, dim=-1)
    return torch.nn.functional.normalize(unflatten_frames(frames, num_frames).mean(dim=1), dim=-1)
