"""RAP's training-step time and memory against the no-adapter floor, in one process (target: <= 1.15x on CPU).

Same setup as the READ issue's benchmark: open_clip ViT-B-32 with random weights (no download), 2 videos x 8 frames
at 224 px, loss on the image embeddings. The floor is the frozen backbone with gradients flowing back through every
block (the patch embedding's output requires grad) but no adapter, the least work any in-block adapter can cost.
Methods are timed in interleaved rounds on the same batch; medians are reported as ratios to the floor. Memory is
the bytes of tensors saved for backward plus trainable state (param, grad, two AdamW moments).

    PYTHONPATH=. python benchmarks/rap_step.py [--rounds 7] [--threads 2] [--device cpu|cuda] [--clock wall|process]

On a machine shared with other jobs, wall-clock ratios are noisy; ``--threads 1 --clock process`` times the CPU
this process itself spends (immune to waiting for a core), a steadier measure of the work each step does.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
from peft import get_peft_model
from torch import nn

import peft_video

VIDEOS, FRAMES, IMAGE = 2, 8, 224


class Conditioned(nn.Module):
    """Runs ``encode_image`` inside ``rap_condition``: ASA needs each video's caption embedding (random here)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("captions", torch.randn(VIDEOS, 512, generator=torch.Generator().manual_seed(0)))

    def encode_image(self, frames: torch.Tensor) -> torch.Tensor:
        with peft_video.rap_condition(paired=self.captions):
            return self.model.encode_image(frames)


def floor(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    model.visual.conv1.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model


def rap_variant(**kwargs) -> Callable[[nn.Module], nn.Module]:
    def build(model: nn.Module) -> nn.Module:
        # the text tower is not part of this image-only step
        config = peft_video.RapConfig(num_frames=FRAMES, rank=3, top_k=3, text_modulation=False, **kwargs)
        return Conditioned(get_peft_model(model, config))

    return build


METHODS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "floor": floor,
    "rap": rap_variant(),
    "rap_lorm": rap_variant(use_asa=False),
    "rap_asa": rap_variant(use_lorm=False),
    "rap_light": rap_variant(blocks="light"),
}


def saved_tensor_bytes(step: Callable[[], torch.Tensor]) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = step()
    loss.backward()
    return sum(storages.values())


class Runner:
    def __init__(self, name: str, model: nn.Module, frames: torch.Tensor, clock: Callable[[], float]) -> None:
        self.name, self.model, self.frames, self.clock = name, model, frames, clock
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4) if self.params else None
        self.times: list[float] = []

    def forward_loss(self) -> torch.Tensor:
        return self.model.encode_image(self.frames).float().pow(2).mean()

    def step(self) -> None:
        self.forward_loss().backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        synchronize(self.frames.device)
        start = self.clock()
        self.step()
        synchronize(self.frames.device)
        self.times.append(self.clock() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    backbone = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    frames = torch.randn(VIDEOS * FRAMES, 3, IMAGE, IMAGE, device=device)
    runners = [
        Runner(name, METHODS[name](copy.deepcopy(backbone)).to(device), frames, clock)
        for name in args.methods
    ]

    memory = {}
    for runner in runners:
        runner.step()  # warm-up
        state = sum(p.numel() * p.element_size() * 4 for p in runner.params)
        memory[runner.name] = saved_tensor_bytes(runner.forward_loss) + state
        if runner.optimizer is not None:
            runner.optimizer.zero_grad(set_to_none=True)
    for _ in range(args.rounds):
        for runner in runners:
            runner.timed_step()

    base_time = statistics.median(runners[0].times)
    print(
        f"open_clip ViT-B-32 (random init), {VIDEOS} videos x {FRAMES} frames at {IMAGE}px, device={device}, "
        f"threads={args.threads}, {args.clock} clock, median of {args.rounds} interleaved steps; "
        f"ratios to {runners[0].name!r}"
    )
    print(
        f"{'method':<11}{'trainable':>11}{'step s':>9}{'x floor':>9}{'min x':>8}{'memory GB':>11}{'x floor':>9}"
    )
    for runner in runners:
        median = statistics.median(runner.times)
        trainable = sum(p.numel() for p in runner.params)
        ratio_m = memory[runner.name] / memory[runners[0].name]
        print(
            f"{runner.name:<11}{trainable:>11,}{median:>9.3f}{median / base_time:>9.3f}"
            f"{min(runner.times) / min(runners[0].times):>8.3f}{memory[runner.name] / 1e9:>11.3f}{ratio_m:>9.3f}"
        )


if __name__ == "__main__":
    main()
