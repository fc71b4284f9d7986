"""Video captioning on BLIP with Token Mixing (Token Mixing's main task): model, data, metrics, training.

* :class:`VideoBlipForCaptioning` / :class:`VideoBlipCaptionConfig`: BLIP's captioner reading B videos of T frames
  (frame tokens flattened into the decoder's cross-attention); every registry method applies to its vision tower,
  prepared as the paper compares them by :func:`~peft_video.tasks.captioning.training.prepare_captioner`.
* Data (``data``): LAVIS / Token Mixing annotation files, decoded videos, training rows, the caption collator; the
  synthetic world's captioning splits and generation / scoring (``evaluation``), temporal facts (``temporal``).
* The shipped tiny captioner (``assets``): :func:`~peft_video.tasks.captioning.assets.load_captioner`.
* Metrics: the ``coco_caption`` module (``peft_video.metrics.load("coco_caption")``) in ``metrics/``.
"""

from .modeling import (
    LM_HEAD,
    PAPER_ALSO_TRAINED,
    VISION_BLOCKS,
    VideoBlipCaptionConfig,
    VideoBlipForCaptioning,
    encoder_updated_parameters,
)

__all__ = [
    "LM_HEAD",
    "PAPER_ALSO_TRAINED",
    "VISION_BLOCKS",
    "VideoBlipCaptionConfig",
    "VideoBlipForCaptioning",
    "encoder_updated_parameters",
]
