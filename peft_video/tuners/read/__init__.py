"""READ: the recurrent adapter of READ-PVLA (arXiv 2312.06950, section 3.2)."""

from .config import ReadConfig
from .layer import ReadLayer
from .model import READ_TARGET_MODULES, ReadModel

__all__ = ["READ_TARGET_MODULES", "ReadConfig", "ReadLayer", "ReadModel"]
