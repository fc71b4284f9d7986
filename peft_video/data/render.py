"""Anti-aliased drawing of flat shapes on small RGB canvases (numpy only, deterministic)."""

from __future__ import annotations

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_SUPERSAMPLE = 4


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean inside-mask of ``shape`` in coordinates normalised by its radius (y grows downwards)."""
    if shape == "circle":
        return dx * dx + dy * dy <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85
    if shape == "triangle":  # apex up at dy=-1, base at dy=0.8 with half-width 1
        return (dy >= -1.0) & (dy <= 0.8) & (np.abs(dx) <= (dy + 1.0) / 1.8)
    if shape == "cross":
        arm = 0.34
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= 1.0)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= 1.0))
    raise ValueError(f"`shape` must be one of {SHAPES}, got {shape!r}")


def coverage(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Fraction (0..1) of each pixel of a ``size`` x ``size`` canvas covered by ``shape`` centred at (cx, cy) pixels."""
    if radius <= 0:
        raise ValueError(f"`radius` must be positive, got {radius!r}")
    offsets = (np.arange(size * _SUPERSAMPLE, dtype=np.float64) + 0.5) / _SUPERSAMPLE
    dx = (offsets[None, :] - cx) / radius
    dy = (offsets[:, None] - cy) / radius
    mask = _shape_mask(shape, dx, dy).astype(np.float32)
    return mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))


def paint(canvas: np.ndarray, alpha: np.ndarray, rgb: tuple[int, int, int]) -> None:
    """Alpha-blend the flat colour ``rgb`` into the float (H, W, 3) ``canvas`` in place."""
    canvas *= 1.0 - alpha[..., None]
    canvas += alpha[..., None] * np.asarray(rgb, dtype=np.float32)


def background(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """A dark grey (H, W, 3) float canvas with a little per-pixel noise, so no two frames are pixel-identical."""
    noise = rng.normal(0.0, 3.0, size=(size, size, 3)).astype(np.float32)
    return np.full((size, size, 3), level, dtype=np.float32) + noise


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round and clip a float canvas to uint8."""
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
