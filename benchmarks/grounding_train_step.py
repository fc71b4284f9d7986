"""Training-step time and memory of READ, the adapter and LoRA on the grounding model, against the frozen floor.

The model is Moment-DETR's size (hidden 256, 2 + 2 layers, 8 heads, FFN 1024, 10 queries) with random weights,
reading QVHighlights-wide features (2816 video + 2 temporal endpoint, 512 text); a batch of 32 videos of 75 clips
and 32 query tokens with one to three windows each and Moment-DETR's saliency pairs. A step is the model's full
training step: forward, Hungarian matching and loss, backward, AdamW. The floor is the frozen model with gradients
flowing back through every block to the input projections' outputs (the least work any adapter inside the blocks
can cost). Methods run in interleaved rounds on the same batch in one process; times are medians, ratios are to the
floor. Memory: bytes of tensors saved for backward plus trainable state (parameter, gradient, two AdamW moments), as
``benchmarks/train_step.py`` counts them; on CUDA also the peak allocated memory of a step.

PVLA's share: READ with PVLA (partial OT between clips and query tokens at both encoder blocks) against READ alone,
``(t_read+pvla - t_read) / t_read+pvla``.

    python benchmarks/grounding_train_step.py [--rounds 7] [--threads 1] [--clock process] [--device cuda]

Targets (CPU and GPU alike): READ <= 1.10x the floor and faster than LoRA; PVLA <= 10% of the step.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from _measure import saved_tensor_bytes, synchronize  # benchmarks/_measure.py, beside this script
from peft import LoraConfig, get_peft_model
from torch import nn

import peft_video
from peft_video.tasks.grounding import GroundingConfig, GroundingModel
from peft_video.tasks.grounding.training import DEFAULT_PVLA_WEIGHT

BATCH, CLIPS, TOKENS = 32, 75, 32
VIDEO_DIM, TEXT_DIM = 2304 + 512, 512


def floor(model: GroundingModel) -> nn.Module:
    """Frozen; the input projections' outputs require grad, so backward crosses every block."""
    model.requires_grad_(False)
    for projection in (model.video_projection, model.text_projection):
        projection.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model


def read(model: GroundingModel) -> nn.Module:
    return get_peft_model(model, peft_video.ReadConfig(target_modules=model.method_targets().read, r=8))


def adapter(model: GroundingModel) -> nn.Module:
    """READ's bottleneck without the recurrence (``rnn_type="none"``), where peft-video has it."""
    return get_peft_model(
        model, peft_video.ReadConfig(target_modules=model.method_targets().read, r=8, rnn_type="none")
    )


def lora(model: GroundingModel) -> nn.Module:
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=model.method_targets().lora))


METHODS: dict[str, Callable[[GroundingModel], nn.Module]] = {
    "floor": floor,
    "read": read,
    "adapter": adapter,
    "lora": lora,
    "read+pvla": read,
}


def make_batch(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(1, 4, (BATCH,), generator=g)
    starts = torch.rand(BATCH, 3, generator=g) * 0.6
    spans = torch.stack([starts + 0.1, torch.full_like(starts, 0.15)], dim=-1)
    batch = {
        "video_features": torch.randn(BATCH, CLIPS, VIDEO_DIM, generator=g),
        "text_features": torch.randn(BATCH, TOKENS, TEXT_DIM, generator=g),
        "video_mask": torch.ones(BATCH, CLIPS, dtype=torch.bool),
        "text_mask": torch.ones(BATCH, TOKENS, dtype=torch.bool),
        "span_labels": spans,
        "span_mask": torch.arange(3)[None, :] < windows[:, None],
        "saliency_pos_labels": torch.randint(0, CLIPS // 2, (BATCH, 2), generator=g),
        "saliency_neg_labels": torch.randint(CLIPS // 2, CLIPS, (BATCH, 2), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


class Runner:
    """One method's model, optimiser and training step on the shared batch."""

    def __init__(self, name: str, model: nn.Module, batch: dict, clock: Callable[[], float]) -> None:
        self.name, self.model, self.batch, self.clock = name, model, batch, clock
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4) if self.params else None
        self.times: list[float] = []
        self.pvla = None
        if name.endswith("+pvla"):
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            self.pvla = peft_video.attach_pvla(
                model, peft_video.PVLALoss(), base.pvla_source(), weight=DEFAULT_PVLA_WEIGHT
            )

    def forward_loss(self) -> torch.Tensor:
        return self.model(**self.batch).loss

    def step(self) -> None:
        loss = self.forward_loss()
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> None:
        device = self.batch["video_features"].device
        synchronize(device)
        start = self.clock()
        self.step()
        synchronize(device)
        self.times.append(self.clock() - start)

    def trainable_state_bytes(self) -> int:
        return sum(p.numel() * p.element_size() * 4 for p in self.params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="wall", help="process: this process's CPU"
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = list(args.methods)
    if "adapter" in methods and "none" not in peft_video.tuners.read.config.RNN_TYPES:
        print("adapter: skipped, this peft-video's ReadConfig has no rnn_type='none' yet")
        methods.remove("adapter")

    torch.manual_seed(0)
    backbone = GroundingModel(GroundingConfig(video_feature_dim=VIDEO_DIM, text_feature_dim=TEXT_DIM))
    batch = make_batch(device)
    runners = []
    for name in methods:
        torch.manual_seed(0)
        model = METHODS[name](copy.deepcopy(backbone)).to(device).train()
        runners.append(Runner(name, model, batch, clock))

    memory = {}
    for runner in runners:
        runner.step()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        saved = saved_tensor_bytes(runner.forward_loss)
        if runner.optimizer is not None:
            runner.optimizer.step()
            runner.optimizer.zero_grad(set_to_none=True)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        memory[runner.name] = (saved + runner.trainable_state_bytes(), peak)

    for _ in range(args.rounds):
        for runner in runners:
            runner.timed_step()

    medians = {r.name: statistics.median(r.times) for r in runners}
    base_time = medians.get("floor")
    base_mem = memory["floor"][0] if "floor" in memory else None
    print(
        f"grounding model, Moment-DETR size ({sum(p.numel() for p in backbone.parameters()):,} weights), batch "
        f"{BATCH} x {CLIPS} clips x {TOKENS} tokens, device={device}, threads={args.threads}, {args.clock} clock, "
        f"median of {args.rounds} interleaved steps"
    )
    print(
        f"{'method':<11}{'trainable':>11}{'step s':>9}{'x floor':>9}{'memory MB':>11}{'x floor':>9}{'cuda peak MB':>14}"
    )
    for runner in runners:
        trainable = sum(p.numel() for p in runner.params)
        mem, peak = memory[runner.name]
        ratio_t = f"{medians[runner.name] / base_time:.3f}" if base_time else "-"
        ratio_m = f"{mem / base_mem:.3f}" if base_mem else "-"
        peak_s = f"{peak / 1e6:.1f}" if peak is not None else "-"
        print(
            f"{runner.name:<11}{trainable:>11,}{medians[runner.name]:>9.4f}{ratio_t:>9}{mem / 1e6:>11.1f}"
            f"{ratio_m:>9}{peak_s:>14}"
        )
    if base_time and "read" in medians:
        verdict = "met" if medians["read"] <= 1.10 * base_time else "missed"
        faster = ""
        if "lora" in medians:
            faster = f"; faster than LoRA: {'yes' if medians['read'] < medians['lora'] else 'no'}"
        print(f"# target READ <= 1.10x floor: {medians['read'] / base_time:.3f}x ({verdict}){faster}")
    if "read" in medians and "read+pvla" in medians:
        share = (medians["read+pvla"] - medians["read"]) / medians["read+pvla"]
        print(
            f"# target PVLA <= 10% of the step: {100 * share:.1f}% ({'met' if share <= 0.10 else 'missed'})"
        )


if __name__ == "__main__":
    main()
