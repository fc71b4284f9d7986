"""Small helpers for training peft-video adapters in a plain Accelerate loop (Accelerate places and wraps models).

They only read the adapter through the wrappers Accelerate puts around a model (DDP, compile) and save it once:
no device placement or wrapping of our own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState

from .card_info import set_card_info, unwrap_peft_model


def check_launch(accelerator: Accelerator | PartialState) -> None:
    """Fail early if a multi-process launch became independent single-process runs.

    On a machine without GPUs, ``accelerate launch --multi_gpu --num_processes N`` starts N processes, but each only
    joins the gloo group when the Accelerator is created with ``cpu=True``; otherwise every process trains alone.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but Accelerate sees "
            f"num_processes={accelerator.num_processes}: each would train alone. On a machine without GPUs create the "
            "Accelerator with cpu=True (the recipes' --cpu flag) to train data parallel over gloo."
        )


def launch_state() -> PartialState:
    """The processes of this launch, as the ``transformers.Trainer`` recipes see them (checked with :func:`check_launch`).

    The Trainer recipes train with ``use_cpu`` on machines without a GPU; the state is created the same way here, so
    ``accelerate launch --multi_gpu --num_processes N`` on such a machine is one gloo group of N processes (data
    parallel), and ``is_main_process`` tells the one process that writes results.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    check_launch(state)
    return state


def adapter_vector(model: Any) -> torch.Tensor:
    """All trainable parameters of the PeftModel inside ``model``, flattened in name order (float32, detached)."""
    peft_model = unwrap_peft_model(model)
    params = [
        p.detach().float().flatten() for _, p in sorted(peft_model.named_parameters()) if p.requires_grad
    ]
    if not params:
        raise ValueError(
            "`model` has no trainable parameters: was the adapter loaded with is_trainable=False?"
        )
    return torch.cat(params)


def max_rank_divergence(accelerator: Accelerator, model: Any) -> float:
    """Largest absolute difference between any process's adapter weights and the main process's (0.0 if in sync).

    Data-parallel training keeps replicas identical by averaging gradients; this checks it with one all-gather.
    """
    vector = adapter_vector(model).to(accelerator.device)
    gathered = accelerator.gather(vector.unsqueeze(0))
    return (gathered - gathered[0]).abs().max().item()


def save_adapter(accelerator: Accelerator, model: Any, output_dir: str | Path, **card_info: Any) -> Path:
    """Save the adapter (and its card, filled with ``card_info`` for ``set_card_info``) from the main process only.

    All processes must call it: it waits for every process before and after saving.
    """
    accelerator.wait_for_everyone()
    peft_model = unwrap_peft_model(accelerator.unwrap_model(model))
    if card_info:
        set_card_info(peft_model, **card_info)
    peft_model.save_pretrained(str(output_dir), is_main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return Path(output_dir)
