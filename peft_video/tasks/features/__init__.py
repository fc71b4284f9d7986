"""The clip-feature extractor shared by grounding, summarization and users' own videos.

Video files or frame folders in, one feature per ``clip_length`` seconds out, from any CLIP backbone; query text
features too; written as Moment-DETR's ``{vid}.npz`` / ``qid{qid}.npz`` or VG-GPLMs' How2 ``{id}.npy``, resumably.
See :mod:`.extractor` for how frames are chosen and :mod:`.writers` for the layouts.
"""

from .extractor import ClipFeatureExtractor, ClipSampling, TextFeatures, load_clip_frames, plan_clips
from .writers import (
    LAYOUTS,
    ExtractionReport,
    atomic_write,
    collect_videos,
    extract_text_features,
    extract_video_features,
    output_name,
    read_queries,
)

__all__ = [
    "LAYOUTS",
    "ClipFeatureExtractor",
    "ClipSampling",
    "ExtractionReport",
    "TextFeatures",
    "atomic_write",
    "collect_videos",
    "extract_text_features",
    "extract_video_features",
    "load_clip_frames",
    "output_name",
    "plan_clips",
    "read_queries",
]
