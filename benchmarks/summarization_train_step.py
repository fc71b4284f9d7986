"""Training-step time and memory of READ, the adapter and LoRA on VG-BART at bart-base size, and generation speed.

VG-BART at bart-base size (d_model 768, 6 + 6 layers, 12 heads, FFN 3072, vocabulary 50,265) with random weights
and the fusion over How2-wide video features (2048); a batch of 8 transcripts of 512 tokens, summaries of 64
tokens and 256 video features. A step is forward, loss, backward and AdamW. The fusion is new, so it trains under
every method, the floor included: the floor is the frozen model plus the fusion, with gradients flowing back through
every block to the token embeddings' output (the least work an adapter inside the blocks can cost). READ and the
adapter sit on the encoder's FFNs (r = 8), LoRA on q / v of every attention (r = 8). Methods run in interleaved
rounds on the same batch in one process; times are medians, ratios are to the floor. Memory: bytes of tensors saved
for backward plus trainable state (parameter, gradient, two AdamW moments), as ``benchmarks/train_step.py`` counts
them; on CUDA also the peak allocated memory of a step.

Generation: ``generate()`` with beam 5 and exactly 64 new tokens (``min_new_tokens`` = ``max_new_tokens`` = 64) on
the same batch, with and without READ (READ's weights made non-zero so that it computes), tokens per second.

    python benchmarks/summarization_train_step.py [--rounds 3] [--threads 1] [--clock process] [--device cuda]

Targets (CPU and GPU alike): READ <= 1.10x the floor and faster than LoRA; generation with READ >= 0.9x without.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from _measure import StepRunner, saved_tensor_bytes, synchronize  # benchmarks/_measure.py, beside this script
from peft import LoraConfig, get_peft_model
from torch import nn

import peft_video
from peft_video.tasks.summarization import VisionGuidedBart, VisionGuidedBartConfig

BATCH, SOURCE, TARGET, FRAMES, VIDEO_DIM = 8, 512, 64, 256, 2048


def bart_base() -> VisionGuidedBart:
    config = VisionGuidedBartConfig(
        vocab_size=50265,
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_position_embeddings=1024,
        video_feature_dim=VIDEO_DIM,
        video_heads=12,
        max_video_frames=FRAMES,
        forced_eos_token_id=None,
    )
    return VisionGuidedBart(config)


def floor(model: VisionGuidedBart) -> nn.Module:
    """Frozen but the fusion; the token embeddings' output requires grad, so backward crosses every block."""
    model.requires_grad_(False)
    model.fusion.requires_grad_(True)
    # the encoder's and the decoder's own embedding modules (they share `model.shared`'s weight, not the module)
    for embeddings in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens):
        embeddings.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model


def _read(model: VisionGuidedBart, rnn_type: str) -> nn.Module:
    config = peft_video.ReadConfig(
        target_modules=model.method_targets().read, r=8, rnn_type=rnn_type, modules_to_save=["fusion"]
    )
    return get_peft_model(model, config)


def read(model: VisionGuidedBart) -> nn.Module:
    return _read(model, "rnn")


def adapter(model: VisionGuidedBart) -> nn.Module:
    return _read(model, "none")


def lora(model: VisionGuidedBart) -> nn.Module:
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=model.method_targets().lora, modules_to_save=["fusion"]
    )
    return get_peft_model(model, config)


METHODS: dict[str, Callable[[VisionGuidedBart], nn.Module]] = {
    "floor": floor,
    "read": read,
    "adapter": adapter,
    "lora": lora,
}


def make_batch(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(4, 50265, (BATCH, SOURCE), generator=g),
        "attention_mask": torch.ones(BATCH, SOURCE, dtype=torch.long),
        "video_features": torch.randn(BATCH, FRAMES, VIDEO_DIM, generator=g),
        "video_mask": torch.ones(BATCH, FRAMES, dtype=torch.bool),
        "labels": torch.randint(4, 50265, (BATCH, TARGET), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def generation_seconds(model: nn.Module, batch: dict, clock: Callable[[], float]) -> float:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    synchronize(batch["input_ids"].device)
    start = clock()
    out = model.generate(**inputs, num_beams=5, max_new_tokens=TARGET, min_new_tokens=TARGET)
    synchronize(batch["input_ids"].device)
    assert out.shape[1] >= TARGET
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generation-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="wall", help="process: this process's CPU"
    )
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--skip-training", action="store_true", help="only the generation measurement")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    backbone = bart_base()
    batch = make_batch(device)
    runners = []
    for name in [] if args.skip_training else args.methods:
        torch.manual_seed(0)
        runners.append(
            StepRunner(name, METHODS[name](copy.deepcopy(backbone)).to(device), batch, clock, lr=1e-4)
        )

    memory: dict[str, tuple[int, int | None]] = {}
    for runner in runners:
        runner.step()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        saved = saved_tensor_bytes(runner.forward_loss)
        runner.optimizer.step()
        runner.optimizer.zero_grad(set_to_none=True)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        memory[runner.name] = (saved + runner.trainable_state_bytes(), peak)
    for _ in range(args.rounds):
        for runner in runners:
            runner.timed_step()

    medians = {r.name: statistics.median(r.times) for r in runners}
    base_time, base_mem = medians.get("floor"), memory.get("floor", (None,))[0]
    print(
        f"VG-BART at bart-base size ({sum(p.numel() for p in backbone.parameters()):,} weights), batch {BATCH} x "
        f"{SOURCE} tokens, {TARGET} summary tokens, {FRAMES} x {VIDEO_DIM} video features, device={device}, "
        f"threads={args.threads}, {args.clock} clock, median of {args.rounds} interleaved steps"
    )
    print(
        f"{'method':<9}{'trainable':>12}{'step s':>9}{'x floor':>9}{'memory MB':>11}{'x floor':>9}{'cuda MB':>10}"
    )
    for runner in runners:
        mem, peak = memory[runner.name]
        ratio_t = f"{medians[runner.name] / base_time:.3f}" if base_time else "-"
        ratio_m = f"{mem / base_mem:.3f}" if base_mem else "-"
        peak_s = f"{peak / 1e6:.0f}" if peak is not None else "-"
        print(
            f"{runner.name:<9}{sum(p.numel() for p in runner.params):>12,}{medians[runner.name]:>9.3f}{ratio_t:>9}"
            f"{mem / 1e6:>11.0f}{ratio_m:>9}{peak_s:>10}"
        )
    if base_time and "read" in medians:
        verdict = "met" if medians["read"] <= 1.10 * base_time else "missed"
        faster = (
            f"; faster than LoRA: {'yes' if medians['read'] < medians['lora'] else 'no'}"
            if "lora" in medians
            else ""
        )
        print(f"# target READ <= 1.10x floor: {medians['read'] / base_time:.3f}x ({verdict}){faster}")
    del runners
    if args.skip_generation:
        return
    plain = backbone.to(device).eval()
    with_read = read(copy.deepcopy(backbone)).to(device).eval()
    with torch.no_grad():
        for name, parameter in with_read.named_parameters():
            if "pvread_" in name:
                parameter.normal_(0, 0.02)
    times: dict[str, list[float]] = {"without READ": [], "with READ": []}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():  # warm-up: one short generation each, so first-call costs are not timed
        for model in (plain, with_read):
            model.generate(**inputs, num_beams=5, max_new_tokens=2)
    for _ in range(args.generation_rounds):
        times["without READ"].append(generation_seconds(plain, batch, clock))
        times["with READ"].append(generation_seconds(with_read, batch, clock))
    tokens = BATCH * TARGET
    speed = {name: tokens / statistics.median(values) for name, values in times.items()}
    for name, value in speed.items():
        print(f"generation {name:<13} beam 5, {TARGET} tokens: {value:8.1f} summary tokens / s")
    ratio = speed["with READ"] / speed["without READ"]
    print(
        f"# target generation with READ >= 0.9x without: {ratio:.3f}x ({'met' if ratio >= 0.9 else 'missed'})"
    )


if __name__ == "__main__":
    main()
