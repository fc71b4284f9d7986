"""Video-text data: the synthetic world, real MSR-VTT-style loaders, the collator and the shipped tiny CLIP."""

from .collate import VideoTextCollator
from .real import load_frames, load_video_text_dataset, read_annotations, uniform_indices
from .schema import COLUMNS, NO_PAIR, video_text_features
from .synthetic import (
    FAMILIES,
    SPLITS,
    event_captions,
    is_held_out,
    make_frame_dataset,
    make_video_dataset,
    split_combinations,
    vocabulary,
)
from .tiny_clip import build_tiny_clip_processor, tiny_clip_config, tiny_clip_path
from .tokenizer import build_word_tokenizer

__all__ = [
    "COLUMNS",
    "FAMILIES",
    "NO_PAIR",
    "SPLITS",
    "VideoTextCollator",
    "build_tiny_clip_processor",
    "build_word_tokenizer",
    "event_captions",
    "is_held_out",
    "load_frames",
    "load_video_text_dataset",
    "make_frame_dataset",
    "make_video_dataset",
    "read_annotations",
    "split_combinations",
    "tiny_clip_config",
    "tiny_clip_path",
    "uniform_indices",
    "video_text_features",
    "vocabulary",
]
