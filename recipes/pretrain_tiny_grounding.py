"""Pretrain the shipped tiny grounding model on the synthetic world's source domain (deterministic, CPU, minutes).

    PYTHONPATH=. python recipes/pretrain_tiny_grounding.py              # rebuild peft_video/assets/tiny_grounding
    PYTHONPATH=. python recipes/pretrain_tiny_grounding.py --eval-only  # score the shipped asset, train nothing

Moment-DETR's architecture at hidden size 64 (:func:`peft_video.tasks.grounding.tiny_grounding_config`) learns
moment retrieval and highlight detection from the source domain's first 600 training videos (horizontal and vertical
moves of red, green, blue and yellow shapes), with Moment-DETR's losses, AdamW (peak learning rate 5e-4, linear
warm-up and cosine decay over 3000 steps of 32 queries) and gradient clipping 0.1: about 4 CPU-minutes on one
thread. The same seed and thread count give the same bytes on the same machine. The record (``pretraining.json``)
lists the zero-shot scores on the source test split and on every target domain's test split, with their chance
levels.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from peft_video.tasks.features import ClipFeatureExtractor
from peft_video.tasks.grounding import (
    GroundingCollator,
    GroundingModel,
    build_split,
    predict_dataset,
    tiny_grounding_config,
)
from peft_video.tasks.grounding.evaluation import chance_hit1, chance_top1_recall, hit1, top1_recall
from peft_video.tasks.grounding.synthetic import CLIP_LENGTH, DOMAINS

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "peft_video" / "assets" / "tiny_grounding"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where save_pretrained writes the model"
    )
    parser.add_argument("--eval-only", action="store_true", help="score the model at --output, train nothing")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the world, the initialisation and the batches"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fixed so sums reproduce)")
    parser.add_argument("--train-videos", type=int, default=600, help="source-domain training videos")
    parser.add_argument("--eval-videos", type=int, default=100, help="test videos per domain scored")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps before cosine decay")
    return parser.parse_args(argv)


def set_determinism(seed: int, threads: int) -> None:
    """Same seed and thread count -> same weights on the same machine."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(args: argparse.Namespace, encoder: ClipFeatureExtractor | None = None) -> GroundingModel:
    """Train from scratch on the source domain's training split for ``args.steps`` steps."""
    set_determinism(args.seed, args.threads)
    encoder = encoder or ClipFeatureExtractor()
    data = build_split("source", "train", args.train_videos, seed=args.seed, encoder=encoder)
    items = [data[i] for i in range(len(data))]
    model = GroundingModel(tiny_grounding_config())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "query_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "query_embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    collator = GroundingCollator(seed=args.seed)
    order = torch.Generator().manual_seed(args.seed)
    permutation, cursor = torch.randperm(len(items), generator=order), 0
    model.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(permutation):
            permutation, cursor = torch.randperm(len(items), generator=order), 0
        batch = collator([items[i] for i in permutation[cursor : cursor + args.batch_size].tolist()])
        cursor += args.batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        out = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(
                f"step {step:5d}  loss {out.loss.item():.4f}  span {out.loss_span.item():.4f}  "
                f"giou {out.loss_giou.item():.4f}  label {out.loss_label.item():.4f}  "
                f"saliency {out.loss_saliency.item():.4f}",
                flush=True,
            )
    model.eval()
    return model


def evaluate(
    model: GroundingModel, args: argparse.Namespace, encoder: ClipFeatureExtractor
) -> dict[str, dict]:
    """Zero-shot R1@0.5 / R1@0.7 / Hit1 (and their chance levels) on every domain's test split; for the source
    also on its order-dependent queries."""
    results = {}
    for domain in DOMAINS:
        data = build_split(domain, "test", args.eval_videos, seed=args.seed, encoder=encoder)
        rows = predict_dataset(model, data)
        records = data.records
        scores = {
            "queries": len(records),
            "R1@0.5": top1_recall(rows, records, 0.5),
            "R1@0.7": top1_recall(rows, records, 0.7),
            "Hit1": hit1(rows, records),
            "chance_R1@0.5": chance_top1_recall(records, 0.5, CLIP_LENGTH),
            "chance_R1@0.7": chance_top1_recall(records, 0.7, CLIP_LENGTH),
            "chance_Hit1": chance_hit1(records, CLIP_LENGTH),
        }
        ordered = [r for r in records if r.extra.get("order_dependent")]
        if ordered:
            scores["order_dependent_queries"] = len(ordered)
            scores["order_dependent_R1@0.5"] = top1_recall(rows, ordered, 0.5)
            scores["order_dependent_chance_R1@0.5"] = chance_top1_recall(ordered, 0.5, CLIP_LENGTH)
        results[domain] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    encoder = ClipFeatureExtractor()
    if args.eval_only:
        torch.set_num_threads(args.threads)
        model = GroundingModel.from_pretrained(args.output).eval()
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        model = train(args, encoder)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        args.output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.output)
    results = evaluate(model, args, encoder)
    for domain, scores in results.items():
        print(domain, json.dumps(scores))
    if not args.eval_only:
        record = {
            "recipe": "recipes/pretrain_tiny_grounding.py",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "output"},
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "torch": torch.__version__,
            "zero_shot_test": results,
        }
        (args.output / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"saved to {args.output} after {seconds:.0f} s of training")


if __name__ == "__main__":
    main()
