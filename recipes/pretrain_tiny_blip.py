"""Pretrain the shipped tiny BLIP captioner on the synthetic world's still frames (image captioning; deterministic,
one CPU core, minutes).

    PYTHONPATH=. python recipes/pretrain_tiny_blip.py               # rebuild peft_video/assets/tiny_blip
    PYTHONPATH=. python recipes/pretrain_tiny_blip.py --eval-only   # score the shipped asset, train nothing

The model never sees a video: it learns to name colour, shape, size and position from single frames, as BLIP
learns from images. The event words of the video captions ("moves", "grows", "appears", ...) never occur in these
captions; video fine-tuning has to teach them, and their order, from clips.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import AutoProcessor, BlipProcessor

from peft_video.data.collate import VideoTextCollator
from peft_video.data.synthetic import make_frame_dataset
from peft_video.tasks.captioning.assets import build_tiny_blip_processor, tiny_blip_config
from peft_video.tasks.captioning.modeling import VideoBlipForCaptioning

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "peft_video" / "assets" / "tiny_blip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where save_pretrained writes")
    parser.add_argument("--eval-only", action="store_true", help="score the model at --output, train nothing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of the initialisation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: same bits on any machine)")
    parser.add_argument("--num-images", type=int, default=16384, help="training still frames")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=256, help="test still frames captioned")
    return parser.parse_args(argv)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace) -> tuple[VideoBlipForCaptioning, BlipProcessor]:
    """LM-loss training on ``args.num_images`` still frames for ``args.steps`` steps."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    processor = build_tiny_blip_processor()
    model = VideoBlipForCaptioning(
        tiny_blip_config(processor, args.hidden_size, args.num_layers, args.num_heads)
    )
    stills = make_frame_dataset("train", args.num_images, seed=args.seed, image_size=32)[:]
    collator = VideoTextCollator.from_processor(processor)
    pixels = collator.pixel_values(stills["frames"])  # (N, 1, 3, 32, 32)
    text = processor.tokenizer(stills["caption"], padding=True, return_tensors="pt")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    order = torch.Generator().manual_seed(args.seed)
    permutation, cursor = torch.randperm(len(pixels), generator=order), 0
    model.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(permutation):
            permutation, cursor = torch.randperm(len(pixels), generator=order), 0
        idx = permutation[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        mask = text["attention_mask"][idx]
        width = int(mask.sum(1).max())
        loss = model(
            pixel_values=pixels[idx], input_ids=text["input_ids"][idx, :width], attention_mask=mask[:, :width]
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    model.eval()
    return model, processor


@torch.no_grad()
def evaluate(
    model: VideoBlipForCaptioning, processor: BlipProcessor, args: argparse.Namespace
) -> dict[str, float]:
    """Beam-3 captions of held-out test still frames: exact-match rate and word accuracy against the reference."""
    stills = make_frame_dataset("test", args.eval_images, seed=args.seed, image_size=32)[:]
    pixels = VideoTextCollator.from_processor(processor).pixel_values(stills["frames"])
    generated = []
    for start in range(0, len(pixels), 64):
        ids = model.generate(pixel_values=pixels[start : start + 64], num_beams=3, max_length=32)
        generated += processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    exact = sum(g.split() == r.split() for g, r in zip(generated, stills["caption"], strict=True))
    words = [
        sum(a == b for a, b in zip(g.split(), r.split(), strict=False)) / len(r.split())
        for g, r in zip(generated, stills["caption"], strict=True)
    ]
    print("example:", generated[0], "|", stills["caption"][0])
    return {
        "test_still_exact_match": exact / len(generated),
        "test_still_word_accuracy": sum(words) / len(words),
    }


def save(model: VideoBlipForCaptioning, processor: BlipProcessor, output: Path) -> None:
    """``save_pretrained`` of the model and its processor (tokenizer and image processor), with no padding state."""
    output.mkdir(parents=True, exist_ok=True)
    backend = processor.tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    model.save_pretrained(output)
    processor.save_pretrained(output)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.eval_only:
        torch.set_num_threads(args.threads)
        model = VideoBlipForCaptioning.from_pretrained(args.output).eval()
        processor = AutoProcessor.from_pretrained(args.output)
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        model, processor = train(args)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        save(model, processor, args.output)
    results = evaluate(model, processor, args)
    for name, value in results.items():
        print(f"{name:28s} {value:.4f}")
    if not args.eval_only:
        record = {
            "recipe": "recipes/pretrain_tiny_blip.py",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "output"},
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "torch": torch.__version__,
            "zero_shot": {k: round(v, 4) for k, v in results.items()},
        }
        (args.output / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved to {args.output} after {seconds:.0f} s of training")


if __name__ == "__main__":
    main()
