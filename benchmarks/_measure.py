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


class StepRunner:
    """One method's model, AdamW optimiser and training step on a shared batch of keyword inputs, timed by ``clock``
    (the model's forward returns an output with ``.loss``)."""

    def __init__(
        self, name: str, model: torch.nn.Module, batch: dict, clock: Callable[[], float], lr: float
    ) -> None:
        self.name, self.model, self.batch, self.clock = name, model.train(), batch, clock
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.times: list[float] = []
        self.device = next(v.device for v in batch.values() if isinstance(v, torch.Tensor))

    def forward_loss(self) -> torch.Tensor:
        return self.model(**self.batch).loss

    def step(self) -> None:
        self.forward_loss().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        synchronize(self.device)
        start = self.clock()
        self.step()
        synchronize(self.device)
        self.times.append(self.clock() - start)

    def trainable_state_bytes(self) -> int:
        """Parameters, gradients and AdamW's two moments of the trainable tensors."""
        return sum(p.numel() * p.element_size() * 4 for p in self.params)
