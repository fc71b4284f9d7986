"""One feature per clip of a video, and per-token / pooled features of a text, from any CLIP backbone.

How frames are chosen (:func:`plan_clips`), fixed here once for grounding, summarization and users' own videos:

* Times are measured from the video's first frame (a file's packet timestamps; ``i / fps`` for the i-th image of
  a frame folder). Clip ``j`` holds the frames shown in ``[j * clip_length, (j + 1) * clip_length)``.
* The number of clips is ``floor(t_last / clip_length) + 1`` where ``t_last`` is the last frame's time: every clip
  holds at least one frame. For a constant-rate video of ``N`` frames (duration ``N / fps``) whose clips hold a
  whole number of frames this is ``ceil(duration / clip_length)``: a 150-s video gives 75 clips of 2 s, as
  QVHighlights' features have, a 5-s video 3 clips (the last one 1 s long), and a video shorter than one clip
  gives one clip.
* Within a clip, ``frames_per_clip`` frames are taken at the midpoints of equal segments of its frames
  (:func:`peft_video.data.real.uniform_indices`), so the default single frame is the clip's centre frame; with
  several, the clip's feature is the mean of their image features. (Moment-DETR's ``run_on_video`` and the HERO
  extractor take one frame per clip through ffmpeg's ``fps=1/2`` filter, i.e. the frame at each clip's *start*;
  the centre frame describes the clip better and the clip count is the same for whole-clip durations.) A clip of
  a variable-rate video that holds no frame (a gap longer than ``clip_length``) uses the frame on screen through
  it, the last one before it.

The video feature is the backbone's projected image embedding (HF ``get_image_features``, open_clip
``encode_image``), the same space as the text's ``pooler_output``; the text features are the text tower's final
(layer-normed, unprojected) per-token states over the query's real tokens (start and end tokens included, padding
left out) and the projected pooled embedding, as Moment-DETR's ``qid{qid}.npz`` files hold them. Features are raw
unless ``normalize=True``, which L2-normalises every row (each clip feature after averaging its frames, each token
state, the pooled text vector); Moment-DETR's loader normalises again at load time, which leaves normalised rows
unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from ...architectures import is_open_clip_model
from ...data.real import (
    decode_frames_at,
    frame_files,
    load_frame_images,
    uniform_indices,
    video_frame_times,
)
from ..backbones import ClipBackbone, load_clip_backbone

# Frame times come from integer timestamps times a rational time base; this absorbs float rounding at clip borders.
_TIME_EPS = 1e-9
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ClipSampling:
    """Which frames of a video stand for each clip: ``frame_indices`` (num_clips, frames_per_clip) into the video's
    frames in presentation order, ``frame_times`` the same frames' times in seconds from the first frame."""

    frame_indices: np.ndarray
    frame_times: np.ndarray
    num_frames: int
    clip_length: float

    @property
    def num_clips(self) -> int:
        """How many clips the video has (rows of the feature array)."""
        return int(self.frame_indices.shape[0])


@dataclass(frozen=True)
class TextFeatures:
    """A query's text features: ``last_hidden_state`` (L, W) over its real tokens, ``pooler_output`` (D,)."""

    last_hidden_state: np.ndarray
    pooler_output: np.ndarray


def _check_positive_number(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def plan_clips(
    times: Sequence[float] | np.ndarray, clip_length: float, frames_per_clip: int = 1
) -> ClipSampling:
    """The frames that stand for each ``clip_length``-second clip of a video whose frames are shown at ``times``
    (seconds, ascending); see the module docstring for the rule and the clip count."""
    clip_length = _check_positive_number("clip_length", clip_length)
    frames_per_clip = _check_positive_int("frames_per_clip", frames_per_clip)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"`times` must be a non-empty 1-D sequence of frame times, got shape {times.shape}")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise ValueError("`times` must be finite and ascending (frame times in presentation order)")
    relative = times - times[0]
    clip_of = np.floor((relative + _TIME_EPS) / clip_length).astype(np.int64)
    num_clips = int(clip_of[-1]) + 1
    clips = np.arange(num_clips)
    starts = np.searchsorted(clip_of, clips, side="left")
    ends = np.searchsorted(clip_of, clips, side="right")
    indices = np.empty((num_clips, frames_per_clip), dtype=np.int64)
    for j in range(num_clips):
        if ends[j] > starts[j]:
            indices[j] = starts[j] + np.asarray(uniform_indices(int(ends[j] - starts[j]), frames_per_clip))
        else:  # a gap in a variable-rate video: the frame still on screen (clip 0 always holds frame 0)
            indices[j] = starts[j] - 1
    return ClipSampling(
        frame_indices=indices,
        frame_times=relative[indices],
        num_frames=int(times.size),
        clip_length=clip_length,
    )


def load_clip_frames(
    video: str | Path,
    clip_length: float,
    frames_per_clip: int,
    image_size: int,
    fps: float | None = None,
) -> tuple[ClipSampling, np.ndarray]:
    """Plan a video's clips and load their frames: (sampling, (num_clips, frames_per_clip, S, S, 3) uint8).

    ``video`` is a video file (its packet timestamps give the frame times; ``fps`` is not used) or a frame folder
    (``fps``, its frames per second, is required). Each distinct frame is decoded once. Unreadable input raises
    :class:`peft_video.data.real.VideoReadError` naming the file.
    """
    path = Path(video)
    if path.is_dir():
        if fps is None:
            raise ValueError(
                f"frame folder {path} needs `fps` (how many of its images make one second) to be cut into clips"
            )
        fps = _check_positive_number("fps", fps)
        files = frame_files(path)
        sampling = plan_clips(np.arange(len(files)) / fps, clip_length, frames_per_clip)
        unique, inverse = np.unique(sampling.frame_indices, return_inverse=True)
        frames = load_frame_images([files[i] for i in unique], image_size)
    elif path.is_file():
        times = video_frame_times(path)
        sampling = plan_clips(times, clip_length, frames_per_clip)
        unique, inverse = np.unique(sampling.frame_indices, return_inverse=True)
        frames = decode_frames_at(path, times[unique].tolist(), image_size)
    else:
        raise FileNotFoundError(f"video {str(video)!r} is neither a video file nor a folder of frames")
    return sampling, frames[inverse.reshape(sampling.frame_indices.shape)]


def _projected(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """transformers 5 returns projected features as ``pooler_output`` of a ModelOutput, 4.x a bare tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipFeatureExtractor:
    """A CLIP backbone that turns videos into (num_clips, D) clip features and queries into text features.

    Args:
        backbone: None for the shipped tiny CLIP, a HF CLIP Hub id or local directory, ``"open_clip:<name>"``, or a
            loaded :class:`~peft_video.tasks.backbones.ClipBackbone` (its model is moved to ``device`` in place).
        pretrained: open_clip weights (tag or checkpoint file) for an ``open_clip:`` backbone.
        clip_length: seconds per clip (Moment-DETR / QVHighlights: 2).
        frames_per_clip: frames averaged per clip, taken at the midpoints of equal segments of the clip.
        batch_size: images (or texts) per forward pass.
        device: where the model runs; default ``"cuda"`` when available, else ``"cpu"``.
        normalize: L2-normalise every output row (see the module docstring); default False (raw features).
        dtype: the model's dtype while extracting (``"float32"``, ``"float16"``, ``"bfloat16"`` or a torch
            dtype); outputs are float32 either way.

    On CUDA, PyTorch's default TF32 convolutions (the patch embedding) make image features differ from CPU ones by
    about 1e-4 relative (measured on an H200: 4e-4 absolute on features of norm 8; text features 1e-6);
    ``torch.backends.cudnn.allow_tf32 = False`` removes that.
    """

    def __init__(
        self,
        backbone: str | Path | ClipBackbone | None = None,
        *,
        pretrained: str | None = None,
        clip_length: float = 2.0,
        frames_per_clip: int = 1,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        normalize: bool = False,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        self.clip_length = _check_positive_number("clip_length", clip_length)
        self.frames_per_clip = _check_positive_int("frames_per_clip", frames_per_clip)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        if not isinstance(normalize, bool):
            raise ValueError(f"`normalize` must be True or False, got {normalize!r}")
        self.normalize = normalize
        if isinstance(backbone, ClipBackbone):
            if pretrained is not None:
                raise ValueError(
                    "`pretrained` only applies when `backbone` is a name or path to load, not a loaded one"
                )
            self.backbone = backbone
        else:
            self.backbone = load_clip_backbone(backbone, pretrained=pretrained)
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.dtype = _resolve_dtype(dtype)
        self.model = self.backbone.model.to(device=self.device, dtype=self.dtype).eval()
        self.is_open_clip = is_open_clip_model(self.model)
        self._mean = torch.tensor(self.backbone.image_mean, dtype=torch.float32, device=self.device).view(
            1, 3, 1, 1
        )
        self._std = torch.tensor(self.backbone.image_std, dtype=torch.float32, device=self.device).view(
            1, 3, 1, 1
        )

    @property
    def image_size(self) -> int:
        """Side of the square frames the backbone reads."""
        return self.backbone.image_size

    # -- video ---------------------------------------------------------------------------------------------------

    def clip_frames(self, video: str | Path, fps: float | None = None) -> tuple[ClipSampling, np.ndarray]:
        """The clip plan and the chosen frames (num_clips, frames_per_clip, S, S, 3) uint8 of a file or frame folder."""
        return load_clip_frames(video, self.clip_length, self.frames_per_clip, self.image_size, fps)

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """(N, 3, S, S) model input on the device from (N, S, S, 3) uint8 frames: scaled to [0, 1] and normalised
        with the backbone's mean / std, as :class:`peft_video.data.VideoTextCollator` does for training."""
        frames = np.asarray(frames)
        size = self.image_size
        if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"`frames` must be (N, {size}, {size}, 3) uint8 (the backbone's image size), got shape "
                f"{frames.shape} and dtype {frames.dtype}"
            )
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return ((x - self._mean) / self._std).to(self.dtype)

    @torch.inference_mode()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """(N, D) float32 projected image embeddings (on the CPU) of (N, S, S, 3) uint8 frames, ``batch_size`` at a
        time."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            x = self.pixel_values(frames[start : start + self.batch_size])
            if self.is_open_clip:
                features = self.model.encode_image(x)
            else:
                features = _projected(self.model.get_image_features(pixel_values=x))
            out.append(features.float().cpu())
        if not out:
            raise ValueError("`frames` must hold at least one frame, got none")
        return torch.cat(out)

    def features_from_frames(self, frames: np.ndarray) -> np.ndarray:
        """(num_clips, D) float32 clip features from (num_clips, frames_per_clip, S, S, 3) uint8 frames: the mean of
        each clip's frame embeddings, L2-normalised when ``normalize``."""
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(
                f"`frames` must be (num_clips, frames_per_clip, S, S, 3), got shape {frames.shape}"
            )
        clips, per_clip = frames.shape[:2]
        features = self.encode_images(frames.reshape(clips * per_clip, *frames.shape[2:]))
        features = features.reshape(clips, per_clip, -1).mean(dim=1)
        if self.normalize:
            features = F.normalize(features, dim=-1)
        return features.numpy().astype(np.float32, copy=False)

    def extract(self, video: str | Path, fps: float | None = None) -> np.ndarray:
        """(num_clips, D) float32: one feature per ``clip_length`` seconds of a video file or frame folder (frame
        folders need ``fps``)."""
        _, frames = self.clip_frames(video, fps)
        return self.features_from_frames(frames)

    __call__ = extract

    # -- text ----------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> list[TextFeatures]:
        """Per-token states over each text's real tokens and its pooled, projected embedding, ``batch_size`` texts
        per forward pass (the tokenizer truncates to the model's context length)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("`texts` must be a sequence of strings")
        results: list[TextFeatures] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            tokens = self.backbone.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            ids = tokens["input_ids"].to(self.device)
            mask = tokens["attention_mask"].to(self.device).bool()
            if self.is_open_clip:
                hidden, pooled = self._open_clip_text(ids)
            else:
                out = self.model.text_model(input_ids=ids, attention_mask=mask.long())
                hidden, pooled = out.last_hidden_state, self.model.text_projection(out.pooler_output)
            hidden, pooled = hidden.float(), pooled.float()
            if self.normalize:
                hidden, pooled = F.normalize(hidden, dim=-1), F.normalize(pooled, dim=-1)
            for i in range(len(batch)):
                results.append(
                    TextFeatures(
                        last_hidden_state=hidden[i][mask[i]].cpu().numpy(),
                        pooler_output=pooled[i].cpu().numpy(),
                    )
                )
        return results

    def _open_clip_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """open_clip's ``encode_text`` only returns the pooled vector: read the per-token states off its final
        layer norm (the tensor it pools from) with a forward hook during the same call."""
        final_norm = getattr(self.model, "ln_final", None)
        if final_norm is None:
            final_norm = getattr(getattr(self.model, "text", None), "ln_final", None)
        if final_norm is None:
            raise ValueError(
                f"open_clip backbone {self.backbone.name!r} has no text `ln_final` to read per-token states from "
                "(e.g. a Hugging Face text tower); only its pooled text features are available"
            )
        captured: list[torch.Tensor] = []
        handle = final_norm.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            pooled = self.model.encode_text(ids)
        finally:
            handle.remove()
        return captured[-1], pooled


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"`dtype` must be one of {sorted(_DTYPES)} (or that torch dtype), got {dtype!r}")
