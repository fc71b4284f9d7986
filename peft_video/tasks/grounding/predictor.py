"""Ground a sentence in a video file: the top moments in seconds with scores, and a saliency score per clip.

:class:`GroundingPredictor` joins a trained grounding model (bare or under peft) and a clip-feature extractor:
anything with ``extract(video_path) -> (num_clips, D)`` clip features, ``encode_text([sentence])`` returning objects
with a ``last_hidden_state`` (L, D_q), and a ``clip_length`` in seconds -- the house extractor
(``peft_video.tasks.features.ClipFeatureExtractor``; for frames already in memory, its ``features_from_frames``
gives arrays that ``predict`` takes as they are). The extractor must be the
backbone the model was trained with features of (same widths, same space). Videos longer than the model's
``max_clips`` are read in overlapping sliding windows whose moments are merged by temporal NMS and whose
saliency is averaged per clip (:func:`~.inference.predict_features` states the rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inference import predict_features

__all__ = ["GroundingPredictor"]


class GroundingPredictor:
    """Predict moments and saliency for (video, sentence) pairs.

    Args:
        model: a :class:`~.modeling.GroundingModel` (or a peft model around one), put in eval mode for predicting.
        extractor: the clip-feature extractor (see the module docstring); None to pass features only.
        clip_length: seconds per clip of the features; default the extractor's, else the model config's.
        max_moments: moments returned per prediction (the QVHighlights scorer reads 10).
        nms_threshold: IoU at which a moment from an overlapping sliding window suppresses a weaker one.
        stride: clips between sliding windows (default: half of ``max_clips``).
        round_to_clips: round moment boundaries to clip boundaries (Moment-DETR's post-processing).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        extractor: Any = None,
        *,
        clip_length: float | None = None,
        max_moments: int = 10,
        nms_threshold: float = 0.7,
        stride: int | None = None,
        round_to_clips: bool = True,
    ) -> None:
        self.model = model.eval()
        self.extractor = extractor
        self.clip_length = float(
            clip_length
            or getattr(extractor, "clip_length", None)
            or getattr(model.config, "clip_length", 2.0)
        )
        self.max_moments, self.nms_threshold, self.stride = max_moments, nms_threshold, stride
        self.round_to_clips = round_to_clips

    def _need_extractor(self, what: str) -> Any:
        if self.extractor is None:
            raise ValueError(
                f"GroundingPredictor has no extractor to turn {what} into features; pass features"
            )
        return self.extractor

    def video_features(self, video: str | Path | np.ndarray) -> tuple[np.ndarray, str | None]:
        """(num_clips, D) features of a video file (through the extractor) or of given features; and its path."""
        if isinstance(video, (str, Path)):
            path = Path(video)
            if not path.exists():
                raise FileNotFoundError(f"video {path} does not exist")
            return np.asarray(self._need_extractor("a video file").extract(path), dtype=np.float32), str(path)
        return np.asarray(video, dtype=np.float32), None

    def query_features(self, sentence: str | np.ndarray) -> np.ndarray:
        """(num_tokens, D_q) token features of a sentence (through the extractor) or given features."""
        if isinstance(sentence, str):
            if not sentence.strip():
                raise ValueError("the sentence is empty: there is nothing to ground")
            return np.asarray(self._need_extractor("a sentence").encode_text([sentence])[0].last_hidden_state)
        return np.asarray(sentence, dtype=np.float32)

    def predict(
        self, video: str | Path | np.ndarray, sentence: str | np.ndarray, *, duration: float | None = None
    ) -> dict[str, Any]:
        """``{"query", "vid", "pred_relevant_windows": [[start, end, score], ...] best first (seconds),
        "pred_saliency_scores": [one per clip], "clip_length"}`` for a video (file path or (L, D) features) and a
        sentence (text or (L_q, D_q) token features). ``duration`` bounds the moments (default: the clips' time)."""
        features, path = self.video_features(video)
        tokens = self.query_features(sentence)
        prediction = predict_features(
            self.model,
            features,
            tokens,
            clip_length=self.clip_length,
            duration=duration,
            stride=self.stride,
            max_moments=self.max_moments,
            nms_threshold=self.nms_threshold,
            round_to_clips=self.round_to_clips,
        )
        return {
            "query": sentence if isinstance(sentence, str) else None,
            "vid": path,
            **prediction,
            "clip_length": self.clip_length,
        }
