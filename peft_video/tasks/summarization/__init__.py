"""Video-language summarization with vision-guided BART / T5 (READ-PVLA's second task): model, data, metrics, training.

* :class:`VisionGuidedBart` / :class:`VisionGuidedT5` and their configs (registered with ``AutoConfig`` /
  ``AutoModelForSeq2SeqLM`` as ``peft_video_vg_bart`` / ``peft_video_vg_t5``).
* Data (:mod:`.data`): How2 layout and jsonl readers, ``.npy`` features, the collator; the synthetic world
  (:mod:`.synthetic`); training and scoring with ``Seq2SeqTrainer`` (:mod:`.training`).
* The shipped tiny BART and T5: :func:`tiny_summarizer_path`, :func:`load_summarizer`.
"""

from transformers import AutoConfig, AutoModelForSeq2SeqLM

from .assets import BACKBONES, load_summarizer, tiny_summarizer_path
from .configuration import VIDEO_FIELDS, VisionGuidedBartConfig, VisionGuidedT5Config, video_fields
from .modeling import FusedEncoder, VideoEncoder, VisionGuidedBart, VisionGuidedFusion, VisionGuidedT5

for _config, _model in ((VisionGuidedBartConfig, VisionGuidedBart), (VisionGuidedT5Config, VisionGuidedT5)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForSeq2SeqLM.register(_config, _model, exist_ok=True)

__all__ = [
    "BACKBONES",
    "load_summarizer",
    "tiny_summarizer_path",
    "VIDEO_FIELDS",
    "FusedEncoder",
    "VideoEncoder",
    "VisionGuidedBart",
    "VisionGuidedBartConfig",
    "VisionGuidedFusion",
    "VisionGuidedT5",
    "VisionGuidedT5Config",
    "video_fields",
]
