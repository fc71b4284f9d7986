"""READ: the recurrent adapter of READ-PVLA (arXiv 2312.06950, section 3.2)."""

from .config import ReadConfig
from .layer import ReadLayer
from .model import ReadModel

__all__ = ["ReadConfig", "ReadLayer", "ReadModel"]
