"""Video-language tasks, one folder each (``retrieval``, ``grounding``, ``summarization``, ``captioning``), and what
they share: the method registry every recipe's ``--method`` uses, backbone loading and reporting."""

from .backbones import ClipBackbone, OpenClipTokenizer, load_clip_backbone
from .methods import FRAME_WISE, METHODS, peft_config_for, prepare_model, trainable_parameters

__all__ = [
    "FRAME_WISE",
    "METHODS",
    "ClipBackbone",
    "OpenClipTokenizer",
    "load_clip_backbone",
    "peft_config_for",
    "prepare_model",
    "trainable_parameters",
]
