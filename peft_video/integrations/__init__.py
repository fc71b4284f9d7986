"""peft-video's integrations with the Hugging Face workflow: model cards, Hub upload, Accelerate helpers, and the
Trainer callback that adds the PVLA loss."""

from .card_info import CardInfo, get_card_info, set_card_info
from .hub import push_adapter_to_hub
from .model_card import render_model_card, write_model_card
from .pvla_callback import PVLACallback

__all__ = [
    "CardInfo",
    "PVLACallback",
    "get_card_info",
    "push_adapter_to_hub",
    "render_model_card",
    "set_card_info",
    "write_model_card",
]
