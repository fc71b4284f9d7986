"""Evaluation for video-language tasks: ``load(name)`` for every ``evaluate`` module shipped in the package.

Each task keeps its metric scripts in its own folder (``peft_video/tasks/<task>/metrics/``); this module only knows
where each one lives, so ``peft_video.metrics.load(name)`` works for all of them without any Hub access.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

METRIC_PACKAGES: dict[str, str] = {
    "video_text_retrieval": "peft_video.tasks.retrieval.metrics",
    "order_pair_accuracy": "peft_video.tasks.retrieval.metrics",
    "qvhighlights": "peft_video.tasks.grounding.metrics",
    "youtube_highlights": "peft_video.tasks.grounding.metrics",
    "tvsum": "peft_video.tasks.grounding.metrics",
    "rouge": "peft_video.tasks.summarization.metrics",
    "coco_caption": "peft_video.tasks.captioning.metrics",
}
"""Packaged ``evaluate`` modules: metric name -> the package whose ``<name>.py`` is the metric script."""

METRICS: tuple[str, ...] = tuple(METRIC_PACKAGES)

__all__ = ["METRICS", "METRIC_PACKAGES", "load", "metric_path"]


def metric_path(name: str) -> str:
    """Path of the script of the packaged ``evaluate`` module ``name``."""
    if name not in METRIC_PACKAGES:
        raise ValueError(f"`name` must be one of {METRICS}, got {name!r}")
    return str(resources.files(METRIC_PACKAGES[name]) / f"{name}.py")


def load(name: str, **kwargs: Any):
    """``evaluate.load`` of the packaged module ``name`` (a local script: works with ``HF_HUB_OFFLINE=1``)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
