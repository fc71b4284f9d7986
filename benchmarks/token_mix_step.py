"""Training-step time and memory of TokenMix against the no-adapter floor and peft LoRA, in one process.

Same set-up as the READ training-step benchmark: open_clip ViT-B-32 with random weights (no download), 2 videos x 8
frames at 224 px, AdamW. TokenMix mixes and fine-tunes the last block ("block", the paper's setting). The floor is
the frozen backbone with gradients flowing back through every block (the patch embedding's output requires grad);
LoRA is r=8 on every block's attention and MLP. TokenMix needs no gradient below its last block, so it can beat the
floor. Methods run interleaved on the same batch; medians are reported as ratios to the floor and to LoRA. Memory:
bytes of tensors saved for backward plus trainable state (params, grads, two AdamW moments); on CUDA also the peak.

    PYTHONPATH=. python benchmarks/token_mix_step.py [--rounds 5] [--threads 2] [--device cpu|cuda] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import peft_video

VIDEOS, FRAMES, IMAGE = 2, 8, 224


def floor(model: nn.Module) -> nn.Module:
    """No adapter: frozen weights; backward still crosses every block (the least any in-block adapter costs)."""
    model.requires_grad_(False)
    model.visual.conv1.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model


def lora(model: nn.Module) -> nn.Module:
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["attn", "c_fc", "c_proj"]))


def token_mix(model: nn.Module) -> nn.Module:
    return get_peft_model(model, peft_video.TokenMixConfig(num_frames=FRAMES))  # last block, finetune="block"


METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {"floor": floor, "lora": lora, "token_mix": token_mix}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One method's model, optimiser and training step on the shared batch."""

    def __init__(self, name: str, model: nn.Module, frames: torch.Tensor, dtype: torch.dtype | None) -> None:
        self.name, self.model, self.frames, self.dtype = name, model, frames, dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4) if self.params else None
        self.times: list[float] = []

    def loss(self) -> torch.Tensor:
        with torch.autocast(self.frames.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.model.encode_image(self.frames).float().pow(2).mean()

    def step(self) -> None:
        self.loss().backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        synchronize(self.frames.device)
        start = time.perf_counter()
        self.step()
        synchronize(self.frames.device)
        self.times.append(time.perf_counter() - start)

    def memory_bytes(self) -> int:
        """Storages autograd saves for backward in one forward, plus param + grad + two AdamW moments."""
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = self.loss()
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        return sum(storages.values()) + sum(p.numel() * p.element_size() * 4 for p in self.params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    torch.manual_seed(0)
    backbone = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    frames = torch.randn(VIDEOS * FRAMES, 3, IMAGE, IMAGE, device=device)
    runners = [
        Runner(name, build(copy.deepcopy(backbone)).to(device), frames, dtype)
        for name, build in METHODS.items()
    ]

    memory, peaks = {}, {}
    for runner in runners:
        runner.step()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        memory[runner.name] = runner.memory_bytes()
        peaks[runner.name] = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    for _ in range(args.rounds):
        for runner in runners:
            runner.timed_step()

    median = {r.name: statistics.median(r.times) for r in runners}
    print(
        f"open_clip ViT-B-32 (random init), {VIDEOS} videos x {FRAMES} frames at {IMAGE}px, device={device}, "
        f"autocast={args.dtype}, threads={args.threads}, median of {args.rounds} interleaved steps"
    )
    header = (
        "method",
        "trainable",
        "step s",
        "x floor",
        "x lora",
        "memory GB",
        "x floor",
        "x lora",
        "cuda peak GB",
    )
    print("{:<11}{:>11}{:>9}{:>9}{:>8}{:>11}{:>9}{:>8}{:>14}".format(*header))
    for runner in runners:
        name = runner.name
        peak = f"{peaks[name]:.2f}" if peaks[name] is not None else "-"
        print(
            f"{name:<11}{sum(p.numel() for p in runner.params):>11,}{median[name]:>9.3f}"
            f"{median[name] / median['floor']:>9.3f}{median[name] / median['lora']:>8.3f}"
            f"{memory[name] / 1e9:>11.3f}{memory[name] / memory['floor']:>9.3f}{memory[name] / memory['lora']:>8.3f}"
            f"{peak:>14}"
        )


if __name__ == "__main__":
    main()
