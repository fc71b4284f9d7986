"""The base of every peft-video config: stamps its ``PEFT_VIDEO_*`` peft type and the package version."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig

from .._version import __version__


@dataclass
class PeftVideoConfig(PeftConfig):
    """A ``PeftConfig`` whose subclasses name their method (class attribute ``method``, e.g. ``"read"``)."""

    method = ""  # not a dataclass field: set by each subclass

    peft_video_version: str = field(
        default=__version__, metadata={"help": "peft-video version that wrote this config (informational)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from .._registry import peft_type_of

        self.peft_type = peft_type_of(self.method)
