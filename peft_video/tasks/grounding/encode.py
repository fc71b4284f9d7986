"""Clip and query features from frames and sentences already in memory, with a HF CLIP (default: the shipped tiny one).

The synthetic grounding world renders frames in memory and needs features defined exactly as the clip-feature
extractor (``peft_video.tasks.features.ClipFeatureExtractor``) defines them for video files, without a file in
between: a clip's feature is the mean of the projected image embeddings (``get_image_features``) of its sampled
frames (one, the clip's centre frame, by default), raw (not normalised); a query's features are the text tower's
final per-token states (``last_hidden_state``) over its real tokens, start and end tokens included. The frames are
scaled to [0, 1] and normalised with the backbone's mean and std, at the backbone's image size. The method names
(``features_from_frames``, ``encode_text``) are the extractor's, so either object serves the world and the
predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPModel

from ...data.tiny_clip import IMAGE_MEAN, IMAGE_STD, tiny_clip_path

__all__ = ["FrameClipEncoder", "QueryFeatures"]


@dataclass(frozen=True)
class QueryFeatures:
    """A sentence's token features ``last_hidden_state`` (L, W) over its real tokens, and its pooled embedding."""

    last_hidden_state: np.ndarray
    pooler_output: np.ndarray


class FrameClipEncoder:
    """A HF ``CLIPModel`` turning in-memory clip frames into clip features and sentences into token features.

    ``model`` / ``tokenizer`` default to the shipped tiny CLIP; ``clip_length`` is recorded for users of the
    features (the predictor). Runs under ``torch.inference_mode`` on the model's device, ``batch_size`` images or
    sentences per forward.
    """

    def __init__(
        self,
        model: CLIPModel | None = None,
        tokenizer=None,
        *,
        clip_length: float = 2.0,
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
        batch_size: int = 512,
    ) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("give both `model` and `tokenizer`, or neither (the shipped tiny CLIP)")
        if model is None:
            model = CLIPModel.from_pretrained(tiny_clip_path())
            tokenizer = AutoTokenizer.from_pretrained(tiny_clip_path())
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.clip_length = float(clip_length)
        self.image_size = int(model.config.vision_config.image_size)
        self.batch_size = batch_size
        self._mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """(N, D) float32 projected image embeddings of (N, S, S, 3) uint8 frames at the model's image size."""
        frames = np.asarray(frames)
        size = self.image_size
        if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"`frames` must be (N, {size}, {size}, 3) uint8, got {frames.shape} {frames.dtype}"
            )
        if len(frames) == 0:
            raise ValueError("`frames` must hold at least one frame, got none")
        out = []
        for start in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch_size]))
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std
            features = self.model.get_image_features(pixel_values=x.to(self.device))
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            out.append(features.float().cpu())
        return torch.cat(out)

    def features_from_frames(self, frames: np.ndarray) -> np.ndarray:
        """(num_clips, D) float32 raw clip features from (num_clips, frames_per_clip, S, S, 3) uint8 frames."""
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(
                f"`frames` must be (num_clips, frames_per_clip, S, S, 3), got shape {frames.shape}"
            )
        clips, per_clip = frames.shape[:2]
        features = self.encode_images(frames.reshape(clips * per_clip, *frames.shape[2:]))
        return features.reshape(clips, per_clip, -1).mean(dim=1).numpy().astype(np.float32)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> list[QueryFeatures]:
        """Per-token final states (over real tokens) and the projected pooled embedding of each sentence."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("`texts` must be a sequence of strings")
        results = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            tokens = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(self.device)
            out = self.model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            pooled = self.model.text_projection(out.pooler_output).float().cpu().numpy()
            hidden = out.last_hidden_state.float().cpu().numpy()
            mask = tokens["attention_mask"].bool().cpu().numpy()
            for i in range(len(batch)):
                results.append(QueryFeatures(last_hidden_state=hidden[i][mask[i]], pooler_output=pooled[i]))
        return results
