"""peft-video: parameter-efficient video-language tuners as Hugging Face PEFT methods.

``import peft_video`` registers READ, RAP and TokenMix with peft, so that ``get_peft_model``,
``PeftModel.from_pretrained`` and friends accept their configs and saved adapters.
"""

from ._registry import register_method
from ._version import __version__
from .alignment import PVLALoss, SingleStream, TwoTower, attach_pvla, partial_ot
from .conditioning import rap_condition, sentence_condition
from .integrations import PVLACallback
from .integrations import peft_hooks as _peft_hooks  # noqa: F401  (peft-video model cards and push_to_hub)
from .tasks.retrieval.metrics.ranking import retrieval_scores
from .tuners.rap import RapConfig, RapModel
from .tuners.read import ReadConfig, ReadModel
from .tuners.token_mix import TokenMixConfig, TokenMixModel
from .video import use_num_frames

register_method(name="read", config_cls=ReadConfig, model_cls=ReadModel)
register_method(name="token_mix", config_cls=TokenMixConfig, model_cls=TokenMixModel)
register_method(name="rap", config_cls=RapConfig, model_cls=RapModel)

__all__ = [
    "PVLACallback",
    "PVLALoss",
    "RapConfig",
    "RapModel",
    "ReadConfig",
    "ReadModel",
    "SingleStream",
    "TokenMixConfig",
    "TokenMixModel",
    "TwoTower",
    "__version__",
    "attach_pvla",
    "partial_ot",
    "rap_condition",
    "retrieval_scores",
    "sentence_condition",
    "use_num_frames",
]
