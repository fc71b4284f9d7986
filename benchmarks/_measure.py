"""What every training-step benchmark measures the same way: autograd's saved tensors, and device synchronisation."""

from __future__ import annotations

from collections.abc import Callable

import torch


def saved_tensor_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct storages autograd saves for backward during ``step()``'s forward pass."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(storages.values())


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall clock read after it covers the step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
