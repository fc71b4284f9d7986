"""Evaluation for video-language tasks: ``evaluate`` modules shipped in the package and the ranking math they share.

``load(name)`` loads one of :data:`METRICS` from its script inside the installed package, so no Hub access happens.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .ranking import RECALL_KS, dual_softmax, expected_ranks, rank_metrics, recall_at_k, relevance_matrix

METRICS: tuple[str, ...] = ("video_text_retrieval", "order_pair_accuracy")

__all__ = [
    "METRICS",
    "RECALL_KS",
    "dual_softmax",
    "expected_ranks",
    "load",
    "metric_path",
    "rank_metrics",
    "recall_at_k",
    "relevance_matrix",
]


def metric_path(name: str) -> str:
    """Path of the script of the packaged ``evaluate`` module ``name``."""
    if name not in METRICS:
        raise ValueError(f"`name` must be one of {METRICS}, got {name!r}")
    return str(resources.files("peft_video.metrics") / f"{name}.py")


def load(name: str, **kwargs: Any):
    """``evaluate.load`` of the packaged module ``name`` (a local script: works with ``HF_HUB_OFFLINE=1``)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
