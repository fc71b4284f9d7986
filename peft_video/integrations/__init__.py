"""Integrations with training frameworks (transformers' Trainer)."""

from .trainer import PVLACallback

__all__ = ["PVLACallback"]
