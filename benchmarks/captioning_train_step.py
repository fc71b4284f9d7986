"""Training-step time and memory of token mixing against partial fine-tuning, LoRA and full fine-tuning on a BLIP
ViT-B/16-sized video captioner, and beam-search generation time with and without mixing, in one process.

The captioner is ``VideoBlipForCaptioning`` at BLIP base size (ViT-B/16 at 224 px, a 12-layer BERT-base decoder with
cross-attention) with random weights; a batch of 4 videos x 8 frames and 32-token captions. Each method is prepared
as the captioning recipe prepares it (``prepare_captioner``): every method also trains the paper's extra modules
(vision embeddings and final LayerNorm, decoder embeddings, language head), so backward reaches the patch projection
in every row. ``partial`` is the last block tuned without mixing (TokenMix with ``strategy="none"``, the paper's
Table 3 ablation), so ``token_mix / partial`` is the cost of the mixing itself. A step is forward (LM loss), backward
and AdamW on the same batch; methods run one after the other (one model in memory at a time), times are medians. Memory: bytes of the tensors
saved for backward plus trainable state (parameter, gradient, two AdamW moments), as ``benchmarks/train_step.py``
counts them; on CUDA also the peak allocated memory of a step.

    python benchmarks/captioning_train_step.py [--rounds 2] [--threads 1] [--clock process] [--device cuda]

Target: token_mix <= 1.05 x partial and below LoRA, on CPU and GPU alike.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from collections.abc import Callable

import torch
from _measure import StepRunner, saved_tensor_bytes, synchronize  # benchmarks/_measure.py, beside this script

from peft_video.tasks.captioning import VideoBlipCaptionConfig, VideoBlipForCaptioning
from peft_video.tasks.captioning.training import prepare_captioner

VIDEOS, FRAMES, IMAGE, TOKENS = 4, 8, 224, 32
METHODS = ("partial", "token_mix", "lora", "full")


def blip_base_config() -> VideoBlipCaptionConfig:
    """BLIP base's captioner: ViT-B/16 (768 wide, 12 blocks, 12 heads) and a BERT-base decoder (12 heads)."""
    return VideoBlipCaptionConfig(
        num_frames=FRAMES,
        vision_config={"image_size": IMAGE, "patch_size": 16, "initializer_range": 0.02},
        text_config={"num_attention_heads": 12},
    )


@torch.no_grad()
def generation_seconds(model: torch.nn.Module, pixels: torch.Tensor, clock: Callable[[], float]) -> float:
    """Seconds per video of beam-3 generation (max 32 tokens, min 32: every beam runs the full length, so the
    comparison is not moved by where random weights happen to stop)."""
    model.eval()
    synchronize(pixels.device)
    start = clock()
    model.generate(pixel_values=pixels, num_beams=3, max_length=TOKENS, min_length=TOKENS)
    synchronize(pixels.device)
    model.train()
    return (clock() - start) / pixels.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timed steps per method")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--clock", choices=["wall", "process"], default="process", help="process: this process's CPU"
    )
    parser.add_argument("--no-generation", action="store_true", help="skip the generation timing")
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="an untimed step before the memory pass (which itself warms up the allocator: --no-warmup on slow CPUs)",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    backbone = VideoBlipForCaptioning(blip_base_config())
    g = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.randn(VIDEOS, FRAMES, 3, IMAGE, IMAGE, generator=g).to(device),
        "input_ids": torch.randint(1000, 30000, (VIDEOS, TOKENS), generator=g).to(device),
        "attention_mask": torch.ones(VIDEOS, TOKENS, dtype=torch.long, device=device),
    }
    # one method at a time (build, warm up, measure, time, free): four BLIP-base copies with their optimiser states
    # and activations do not fit a small machine together (13.8 GB resident when they were held at once)
    results: dict[str, dict] = {}
    generation: dict[str, float] = {}
    for name in args.methods:
        runner = StepRunner(
            name, prepare_captioner(copy.deepcopy(backbone), name).to(device), batch, clock, lr=1e-5
        )
        if args.warmup:
            runner.step()  # warm-up (allocator, lazy init)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        activations = saved_tensor_bytes(runner.forward_loss)
        runner.optimizer.zero_grad(set_to_none=True)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        for _ in range(args.rounds):
            runner.timed_step()
        results[name] = {
            "time": statistics.median(runner.times),
            "memory": activations + runner.trainable_state_bytes(),
            "peak": peak,
            "trainable": sum(p.numel() for p in runner.params),
        }
        if not args.no_generation and name in ("token_mix", "partial"):
            generation[name] = generation_seconds(runner.model, batch["pixel_values"][:2], clock)
        r = results[name]
        print(
            f"measured {name}: {r['trainable']:,} trainable, {r['time']:.2f} s/step, {r['memory'] / 1e9:.2f} GB"
            + (f", generation {generation[name]:.2f} s/video" if name in generation else ""),
            flush=True,
        )
        del runner
        gc.collect()

    base = results.get("partial")
    print(
        f"\nBLIP ViT-B/16 captioner (random init), {VIDEOS} videos x {FRAMES} frames at {IMAGE}px, {TOKENS}-token "
        f"captions, device={device}, threads={args.threads}, {args.clock} clock, median of {args.rounds} step(s)"
    )
    print(
        f"{'method':<11}{'trainable':>13}{'step s':>9}{'x partial':>11}{'memory GB':>11}{'x partial':>11}"
        f"{'cuda peak GB':>14}"
    )
    for name, r in results.items():
        ratio_t = f"{r['time'] / base['time']:.3f}" if base else "-"
        ratio_m = f"{r['memory'] / base['memory']:.3f}" if base else "-"
        peak_s = f"{r['peak'] / 1e9:.2f}" if r["peak"] is not None else "-"
        print(
            f"{name:<11}{r['trainable']:>13,}{r['time']:>9.2f}{ratio_t:>11}{r['memory'] / 1e9:>11.2f}{ratio_m:>11}"
            f"{peak_s:>14}"
        )
    if len(generation) == 2:
        mixed, plain = generation["token_mix"], generation["partial"]
        print(
            f"\nbeam-3 generation, {TOKENS} tokens: {mixed:.2f} s/video with mixing, {plain:.2f} without "
            f"(x{mixed / plain:.3f})"
        )


if __name__ == "__main__":
    main()
