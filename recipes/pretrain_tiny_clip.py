"""Pretrain the shipped tiny image-text CLIP on the synthetic world's still frames (deterministic, CPU, minutes).

    PYTHONPATH=. python recipes/pretrain_tiny_clip.py               # rebuild peft_video/assets/tiny_clip
    PYTHONPATH=. python recipes/pretrain_tiny_clip.py --eval-only   # score the shipped asset, train nothing

The model never sees a video: it learns colour, shape, size and position from single frames, as CLIP learns from
images. Its zero-shot video scores (frame features mean-pooled) show what the video tuners have to add: on
order-only pairs a mean-pooled model is at 50% by construction.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from peft_video.data.collate import VideoTextCollator
from peft_video.data.synthetic import make_frame_dataset, make_video_dataset
from peft_video.data.tiny_clip import build_tiny_clip_processor, tiny_clip_config
from peft_video.tasks.retrieval import symmetric_info_nce
from peft_video.tasks.retrieval.metrics import chance_at_1, order_pair_accuracy, retrieval_at_1

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "peft_video" / "assets" / "tiny_clip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where save_pretrained writes the model"
    )
    parser.add_argument("--eval-only", action="store_true", help="score the model at --output, train nothing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of the initialisation")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; fixed so sums reproduce (1: same bits on any core count, and fastest on busy CPUs)",
    )
    parser.add_argument("--num-images", type=int, default=16384, help="training still frames")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=1000, help="test still frames scored")
    parser.add_argument("--eval-videos", type=int, default=512, help="test videos scored (order-only pairs)")
    return parser.parse_args(argv)


def set_determinism(seed: int, threads: int) -> None:
    """Same seed and thread count -> same weights on the same machine."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace) -> tuple[CLIPModel, CLIPProcessor]:
    """Contrastive pretraining on ``args.num_images`` still frames for ``args.steps`` steps."""
    set_determinism(args.seed, args.threads)
    processor = build_tiny_clip_processor()
    config = tiny_clip_config(processor, args.hidden_size, args.num_layers, args.num_heads)
    model = CLIPModel(config)
    stills = make_frame_dataset(
        "train", args.num_images, seed=args.seed, image_size=config.vision_config.image_size
    )[:]
    collator = VideoTextCollator.from_processor(processor)
    pixels = collator.pixel_values(stills["frames"])[:, 0]
    captions = stills["caption"]
    text = processor.tokenizer(captions, padding=True, return_tensors="pt")
    caption_index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([caption_index[c] for c in captions])

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    order = torch.Generator().manual_seed(args.seed)
    permutation, cursor = torch.randperm(len(captions), generator=order), 0
    model.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(permutation):
            permutation, cursor = torch.randperm(len(captions), generator=order), 0
        idx = permutation[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        out = model(
            input_ids=text["input_ids"][idx],
            attention_mask=text["attention_mask"][idx],
            pixel_values=pixels[idx],
        )
        # image x text logits; targets spread evenly over every pair sharing a caption (templates repeat)
        logits = (
            model.logit_scale.exp()
            * F.normalize(out.image_embeds, dim=-1)
            @ F.normalize(out.text_embeds, dim=-1).T
        )
        ids = caption_ids[idx]
        loss = symmetric_info_nce(logits.T, positives=ids[:, None] == ids[None, :])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  logit_scale {model.logit_scale.exp().item():.1f}",
                flush=True,
            )
    model.eval()
    return model, processor


@torch.no_grad()
def embed_texts(model: CLIPModel, processor: CLIPProcessor, captions: list[str]) -> torch.Tensor:
    text = processor.tokenizer(captions, padding=True, return_tensors="pt")
    return F.normalize(model.get_text_features(**text).pooler_output, dim=-1)


@torch.no_grad()
def embed_videos_mean_pooled(model: CLIPModel, pixel_values: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, D): per-frame CLIP embeddings, normalised, averaged over time, normalised."""
    b, t = pixel_values.shape[:2]
    frames = pixel_values.flatten(0, 1)
    feats = torch.cat(
        [
            model.get_image_features(pixel_values=frames[i : i + chunk]).pooler_output
            for i in range(0, len(frames), chunk)
        ]
    )
    return F.normalize(F.normalize(feats, dim=-1).view(b, t, -1).mean(dim=1), dim=-1)


def both_ways_r1(
    model: CLIPModel,
    processor: CLIPProcessor,
    embeds: torch.Tensor,
    captions: list[str],
    to_text: str,
    from_text: str,
) -> dict[str, float]:
    """R@1 and its chance level both ways against the distinct captions, keyed ``{to_text}_r1``, ``{from_text}_r1``,
    ``{to_text}_chance``, ``{from_text}_chance``."""
    unique = list(dict.fromkeys(captions))
    sim = embeds @ embed_texts(model, processor, unique).T
    return {
        f"{to_text}_r1": retrieval_at_1(sim, captions, unique),
        f"{from_text}_r1": retrieval_at_1(sim.T, unique, captions),
        f"{to_text}_chance": chance_at_1(captions, unique),
        f"{from_text}_chance": chance_at_1(unique, captions),
    }


def evaluate(model: CLIPModel, processor: CLIPProcessor, args: argparse.Namespace) -> dict[str, float]:
    """Zero-shot R@1 on test still frames and (mean-pooled) on held-out test videos, plus order-pair accuracy."""
    collator = VideoTextCollator.from_processor(processor)
    size = model.config.vision_config.image_size
    results: dict[str, float] = {}

    stills = make_frame_dataset("test", args.eval_images, seed=args.seed, image_size=size)[:]
    image_embeds = embed_videos_mean_pooled(model, collator.pixel_values(stills["frames"]))
    results.update(
        both_ways_r1(
            model, processor, image_embeds, stills["caption"], "frame_image_to_text", "frame_text_to_image"
        )
    )

    videos = make_video_dataset("test", args.eval_videos, seed=args.seed, image_size=size)[:]
    video_embeds = embed_videos_mean_pooled(model, collator.pixel_values(videos["frames"]))
    captions = videos["caption"]
    results.update(both_ways_r1(model, processor, video_embeds, captions, "video_to_text", "text_to_video"))
    pair_sim = video_embeds @ embed_texts(model, processor, captions).T
    pairs = order_pair_accuracy(pair_sim, videos["order_pair_id"])
    results["order_pair_video_to_text"] = pairs["video_to_text"]
    results["order_pair_text_to_video"] = pairs["text_to_video"]
    return results


def save(model: CLIPModel, processor: CLIPProcessor, output: Path) -> None:
    """``save_pretrained`` model, tokenizer and processor, plus the files older transformers releases look for.

    transformers 5 nests the image processor in processor_config.json and names the tokenizer class
    "TokenizersBackend"; a separate preprocessor_config.json and the class name "PreTrainedTokenizerFast" (an
    alias in 5) are what 4.x releases read (only transformers 5 is tested here).
    """
    output.mkdir(parents=True, exist_ok=True)
    backend = processor.tokenizer.backend_tokenizer  # drop the padding state that batching left behind
    backend.no_padding()
    backend.no_truncation()
    model.save_pretrained(output)
    processor.save_pretrained(output)
    processor.image_processor.save_pretrained(output)
    tokenizer_config = output / "tokenizer_config.json"
    config = json.loads(tokenizer_config.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.eval_only:
        torch.set_num_threads(args.threads)
        model = CLIPModel.from_pretrained(args.output).eval()
        processor = CLIPProcessor.from_pretrained(args.output)
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
            "recipe": "recipes/pretrain_tiny_clip.py",
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
