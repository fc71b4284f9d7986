"""Training-step time and memory of each tuner against the no-adapter floor and peft LoRA, in one process.

open_clip ViT-B-32 with random weights (no download), a batch of 2 videos x 8 frames at 224 px. The floor is the
frozen backbone with gradients flowing back through every transformer block but not into the pixels, which is the
least work any adapter inside the blocks can cost. Methods are timed in interleaved rounds (same batch, same
process) and reported as ratios to the floor. Memory: bytes of tensors saved for backward plus trainable state
(params, grads, AdamW moments), measured in-process; on CUDA also the peak allocated memory.

    python benchmarks/train_step.py [--rounds 5] [--threads 2] [--device cpu|cuda] [--dtype bf16] [--clock process]

On a CPU shared with other jobs, wall-clock ratios are noisy: ``--threads 1 --clock process`` times the CPU this
process itself spends (immune to waiting for a core), a steadier measure of the work each step does.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
from _measure import saved_tensor_bytes, synchronize  # benchmarks/_measure.py, beside this script
from peft import LoraConfig, get_peft_model
from torch import nn

import peft_video

VIDEOS, FRAMES, IMAGE = 2, 8, 224


def floor(model: nn.Module) -> nn.Module:
    """No adapter: frozen weights; the patch embedding's output requires grad so backward crosses every block."""
    model.requires_grad_(False)
    model.visual.conv1.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model


def lora(model: nn.Module) -> nn.Module:
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["attn", "c_fc", "c_proj"]))


def read(model: nn.Module) -> nn.Module:
    return get_peft_model(model, peft_video.ReadConfig(recurrence_axis="frames", num_frames=FRAMES, r=8))


def token_mix(model: nn.Module) -> nn.Module:
    """Mixing + partial fine-tuning of the last block ("block"); no gradient is needed below it."""
    return get_peft_model(model, peft_video.TokenMixConfig(num_frames=FRAMES))


class RapConditioned(nn.Module):
    """RAP's ASA needs each video's caption embedding in the vision forward: a fixed random one per video here."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("captions", torch.randn(VIDEOS, 512, generator=torch.Generator().manual_seed(0)))

    def encode_image(self, frames: torch.Tensor) -> torch.Tensor:
        with peft_video.rap_condition(paired=self.captions):
            return self.model.encode_image(frames)


def rap(model: nn.Module) -> nn.Module:
    """LoRM + ASA in all 12 vision blocks; the text tower's scale/shift is not part of this image-only step."""
    return RapConditioned(
        get_peft_model(model, peft_video.RapConfig(num_frames=FRAMES, text_modulation=False))
    )


# name -> builder; every builder receives a fresh copy of the same random backbone.
METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "floor": floor,
    "lora": lora,
    "read": read,
    "token_mix": token_mix,
    "rap": rap,
}


class Runner:
    """One method's model, optimiser and training step on the shared batch."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        frames: torch.Tensor,
        autocast_dtype: torch.dtype | None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.name, self.model, self.frames, self.clock = name, model, frames, clock
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4) if self.params else None
        self.autocast_dtype = autocast_dtype
        self.times: list[float] = []

    def forward_loss(self) -> torch.Tensor:
        with torch.autocast(
            self.frames.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            return self.model.encode_image(self.frames).float().pow(2).mean()

    def step(self) -> None:
        loss = self.forward_loss()
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        synchronize(self.frames.device)
        start = self.clock()
        self.step()
        synchronize(self.frames.device)
        self.times.append(self.clock() - start)

    def trainable_state_bytes(self) -> int:
        return sum(p.numel() * p.element_size() * 4 for p in self.params)  # param, grad, two AdamW moments


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="wall", help="process: this process's CPU time"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    torch.manual_seed(0)
    backbone = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    frames = torch.randn(VIDEOS * FRAMES, 3, IMAGE, IMAGE, device=device)
    runners = []
    for name in args.methods:
        torch.manual_seed(0)
        model = METHODS[name](copy.deepcopy(backbone)).to(device)
        runners.append(Runner(name, model, frames, autocast_dtype, clock))

    memory = {}
    for runner in runners:
        runner.step()  # warm-up (allocator, lazy init)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        activations = saved_tensor_bytes(runner.forward_loss)
        if runner.optimizer is not None:
            runner.optimizer.zero_grad(set_to_none=True)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        memory[runner.name] = (activations + runner.trainable_state_bytes(), peak)

    for _ in range(args.rounds):
        for runner in runners:
            runner.timed_step()

    base = {r.name: r for r in runners}.get("floor")
    base_time = statistics.median(base.times) if base else None
    base_mem = memory["floor"][0] if base else None
    print(
        f"open_clip ViT-B-32 (random init), {VIDEOS} videos x {FRAMES} frames at {IMAGE}px, device={device}, "
        f"autocast={args.dtype}, threads={args.threads}, {args.clock} clock, median of {args.rounds} interleaved steps"
    )
    print(
        f"{'method':<12}{'trainable':>12}{'step s':>10}{'x floor':>9}{'memory GB':>11}{'x floor':>9}{'cuda peak GB':>14}"
    )
    for runner in runners:
        median = statistics.median(runner.times)
        trainable = sum(p.numel() for p in runner.params)
        mem, peak = memory[runner.name]
        ratio_t = f"{median / base_time:.3f}" if base_time else "-"
        ratio_m = f"{mem / base_mem:.3f}" if base_mem else "-"
        peak_s = f"{peak / 1e9:.2f}" if peak is not None else "-"
        print(
            f"{runner.name:<12}{trainable:>12,}{median:>10.3f}{ratio_t:>9}{mem / 1e9:>11.2f}{ratio_m:>9}{peak_s:>14}"
        )


if __name__ == "__main__":
    main()
