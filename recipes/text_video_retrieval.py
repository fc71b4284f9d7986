"""Fine-tune a CLIP on video-text pairs with one method and score text-video retrieval.

Frames are encoded one by one, mean-pooled over time and trained with symmetric InfoNCE through
``transformers.Trainer`` (Accelerate underneath). Offline by default: the shipped tiny CLIP on the synthetic world::

    python recipes/text_video_retrieval.py --method read
    python recipes/text_video_retrieval.py --method lora --backbone openai/clip-vit-base-patch32 \\
        --data msrvtt_train.json --eval-data msrvtt_test.json --video-root videos/ --num-frames 12
    python recipes/text_video_retrieval.py --method rap --backbone open_clip:ViT-B-32 --pretrained openai ...

Methods (peft_video.tasks.METHODS): frozen (zero-shot), full, bitfit, partial, proj, lora, ia3, adapter, read,
rap, token_mix; ``--pvla W`` adds W x PVLA to the loss. Writes
``results.json``, ``results.md``, ``scores_vs_params.png`` and (with ``--save``) the adapter to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainingArguments

import peft_video
from peft_video.data import VideoTextCollator, load_video_text_dataset, make_video_dataset
from peft_video.tasks import METHODS, load_clip_backbone, prepare_model, trainable_parameters
from peft_video.tasks.cli import positive_int, quiet_libraries, run_recipe
from peft_video.tasks.methods import DEFAULT_LEARNING_RATES, SELECTIVE_METHODS, save_trainable
from peft_video.tasks.report import write_results
from peft_video.tasks.retrieval import (
    RETRIEVAL_COLUMNS,
    RETRIEVAL_SERIES,
    TEXT_EMBEDDINGS,
    VideoTextRetrievalModel,
    VideoTextTrainer,
    embed_dataset,
    evaluate_retrieval,
    pvla_source,
)

SYNTHETIC = "synthetic"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=METHODS, default="read")
    parser.add_argument(
        "--pvla", type=float, default=0.0, metavar="W", help="weight of the PVLA term (0: off)"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="HF CLIP id or local path, or open_clip:<name>; default: the shipped tiny CLIP",
    )
    parser.add_argument("--pretrained", default=None, help="open_clip weights (tag or file); default: random")
    parser.add_argument(
        "--data",
        default=SYNTHETIC,
        help="'synthetic' or MSR-VTT-style training annotations (.json/.jsonl/.csv: video, caption)",
    )
    parser.add_argument(
        "--eval-data", default=None, help="evaluation annotations (required with an annotation file)"
    )
    parser.add_argument(
        "--video-root", default=None, help="folder the annotations' video paths / ids are under"
    )
    parser.add_argument("--train-videos", type=int, default=1024, help="synthetic training videos")
    parser.add_argument(
        "--eval-videos", type=int, default=256, help="synthetic test videos (held-out combinations)"
    )
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument(
        "--max-steps", type=int, default=200, help="optimizer steps (overrides --epochs when > 0)"
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument(
        "--partial-blocks", type=int, default=1, help="method partial: train the last N blocks of each tower"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="videos per step (even: order pairs stay together)"
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="default: the method's (peft_video.tasks.methods)"
    )
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument(
        "--text-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the text tower's word embeddings (default: on; the event words of the synthetic world "
        "never occur in the tiny CLIP's still-frame captions, so their embeddings are untrained)",
    )
    parser.add_argument(
        "--logit-scale", type=float, default=None, help="fixed inverse temperature; default: CLIP's"
    )
    parser.add_argument("--dual-softmax", action="store_true", help="re-rank with DSL at evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the tiny default models run ~20x faster on 1 thread than on 2 of a "
        "busy 2-core machine; raise it for real backbones)",
    )
    parser.add_argument(
        "--skip-bad-videos",
        action="store_true",
        help="leave out records whose video cannot be decoded (counted in one warning) instead of stopping",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: outputs/retrieval/<method>")
    parser.add_argument("--save", action="store_true", help="save the trained adapter (or full model)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    return parser


def load_data(args: argparse.Namespace, image_size: int) -> tuple[Any, Any]:
    """Training and evaluation datasets (synthetic world, or MSR-VTT-style annotations)."""
    if args.data == SYNTHETIC:
        train = make_video_dataset("train", args.train_videos, seed=args.seed, num_frames=args.num_frames)
        test = make_video_dataset("test", args.eval_videos, seed=args.seed, num_frames=args.num_frames)
        return train, test
    common = {
        "video_root": args.video_root,
        "num_frames": args.num_frames,
        "image_size": image_size,
        "skip_bad_videos": args.skip_bad_videos,
    }
    return (
        load_video_text_dataset(args.data, split="train", **common),
        load_video_text_dataset(args.eval_data, split="test", **common),
    )


def pvla_callback(model: torch.nn.Module, weight: float, num_frames: int) -> Any:
    """The Trainer callback adding ``weight`` x PVLA between the two CLIP towers."""
    return peft_video.PVLACallback(peft_video.PVLALoss(), pvla_source(model, num_frames), weight=weight)


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before anything is loaded."""
    for name in ("num_frames", "batch_size", "threads", "train_videos", "eval_videos", "partial_blocks"):
        positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    if args.batch_size % 2:
        raise ValueError(
            f"`--batch-size` must be even so order-only pairs share a batch, got {args.batch_size}"
        )
    if args.max_steps <= 0 and not args.epochs > 0:
        raise ValueError(
            f"`--max-steps` or `--epochs` must be positive, got {args.max_steps} and {args.epochs}"
        )
    if args.pvla < 0:
        raise ValueError(f"`--pvla` must be a weight >= 0, got {args.pvla}")
    if args.data != SYNTHETIC:
        if args.eval_data is None:
            raise ValueError(f"`--eval-data` is required with training annotations `--data`={args.data!r}")
        for flag, path in (("--data", args.data), ("--eval-data", args.eval_data)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"`{flag}` {path!r}: no such file")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (unless nothing is trainable), evaluate, and return the result row."""
    check_args(args)
    quiet_libraries(args.quiet)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    name = args.method + ("+pvla" if args.pvla else "")
    output_dir = args.output_dir or Path("outputs") / "retrieval" / name
    backbone = load_clip_backbone(args.backbone, pretrained=args.pretrained)
    collator = VideoTextCollator(
        backbone.tokenizer, backbone.image_mean, backbone.image_std, backbone.image_size
    )
    train, test = load_data(args, backbone.image_size)
    model = prepare_model(
        VideoTextRetrievalModel(backbone.model, logit_scale=args.logit_scale),
        args.method,
        args.num_frames,
        also_train=[TEXT_EMBEDDINGS] if args.text_embeddings else (),
        partial_blocks=args.partial_blocks,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row: dict[str, Any] = {
        "method": name,
        "backbone": backbone.name,
        "trainable_params": trainable_parameters(model),
        "num_frames": args.num_frames,
        "steps": 0,
        "seconds_per_step": None,
    }
    if row["trainable_params"] > 0:
        lr = args.lr if args.lr is not None else DEFAULT_LEARNING_RATES[args.method]
        training_args = TrainingArguments(
            output_dir=str(output_dir / "trainer"),
            per_device_train_batch_size=args.batch_size,
            max_steps=args.max_steps if args.max_steps > 0 else -1,
            num_train_epochs=args.epochs,
            learning_rate=lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            lr_scheduler_type="cosine",
            logging_steps=max(1, args.max_steps // 10),
            save_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            remove_unused_columns=False,
            seed=args.seed,
            disable_tqdm=args.quiet,
        )
        callbacks = [pvla_callback(model, args.pvla, args.num_frames)] if args.pvla else []
        trainer = VideoTextTrainer(
            model=model, args=training_args, train_dataset=train, data_collator=collator, callbacks=callbacks
        )
        if args.quiet:
            trainer.remove_callback(PrinterCallback)  # the per-log dicts printed when progress bars are off
        output = trainer.train()
        steps = trainer.state.global_step
        row.update(
            steps=steps,
            learning_rate=lr,
            train_loss=output.training_loss,
            seconds_per_step=output.metrics["train_runtime"] / max(steps, 1),
            train_seconds=output.metrics["train_runtime"],
        )
        if args.save:
            if args.method in SELECTIVE_METHODS:  # only the trainable tensors, not a copy of the backbone
                save_trainable(model, output_dir / "model", method=args.method)
            else:
                trainer.save_model(str(output_dir / "model"))
    model.to(device)
    start = time.perf_counter()
    embeddings = embed_dataset(model, test, collator, batch_size=2 * args.batch_size, progress=not args.quiet)
    metrics = evaluate_retrieval(
        embeddings, test["caption"], test["video_id"], test["order_pair_id"], dual_softmax=args.dual_softmax
    )
    row.update(metrics, eval_seconds=time.perf_counter() - start, eval_videos=len(test))
    return row


DEMO_METHODS = ("frozen", "full", "lora", "adapter", "read", "rap", "token_mix", "read+pvla")
DEMO_BUDGET = {"train_videos": 1024, "eval_videos": 256, "max_steps": 600}
DEMO_QUICK = {"train_videos": 512, "eval_videos": 128, "max_steps": 300}
DEMO_PVLA_WEIGHT = 0.1


def demo(
    *,
    seeds: list[int],
    quick: bool,
    quiet: bool,
    threads: int,
    output_dir: Path,
    methods: list[str] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """The demo's retrieval part (``recipes/demo.py``): every method of :data:`DEMO_METHODS` (``+pvla`` adds PVLA
    at weight 0.1) for the same number of steps per seed; returns the runs and the table's columns and series."""
    budget = dict(DEMO_QUICK if quick else DEMO_BUDGET)
    if max_steps is not None:
        budget["max_steps"] = max_steps
    runs = []
    for seed in seeds:
        for method in [m for m in DEMO_METHODS if methods is None or m in methods]:
            base, pvla = (method.split("+")[0], DEMO_PVLA_WEIGHT) if "+pvla" in method else (method, 0.0)
            run_args = build_parser().parse_args(
                [
                    *("--method", base, "--pvla", str(pvla), "--seed", str(seed), "--threads", str(threads)),
                    *("--max-steps", str(budget["max_steps"]), "--train-videos", str(budget["train_videos"])),
                    *("--eval-videos", str(budget["eval_videos"])),
                    *("--output-dir", str(output_dir / f"seed{seed}" / method)),
                    *(["--quiet"] if quiet else []),
                ]
            )
            began = time.perf_counter()
            row = run(run_args)
            row.update(method=method, seed=seed, wall_seconds=time.perf_counter() - began)
            runs.append(row)
            print(
                f"retrieval {method:10s} seed {seed}: order-only v2t {100 * row['order_v2t']:5.1f}%  "
                f"t2v R@1 {row['t2v_R@1']:5.1f}%  ({row['wall_seconds']:.0f} s)",
                flush=True,
            )
    return {
        "runs": runs,
        "keys": ["t2v_R@1", "order_v2t", "order_t2v", "seconds_per_step"],
        "columns": RETRIEVAL_COLUMNS,
        "series": RETRIEVAL_SERIES,
        "title": f"text-video retrieval, {budget['max_steps']} steps per method",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    row = run(args)
    output_dir = args.output_dir or Path("outputs") / "retrieval" / row["method"]
    paths = write_results(
        [row],
        output_dir,
        RETRIEVAL_COLUMNS,
        RETRIEVAL_SERIES,
        title=f"text-video retrieval: {row['method']} on {row['backbone']}",
    )
    print(paths["markdown"].read_text())
    print(f"results in {output_dir}/")
    return row


if __name__ == "__main__":
    run_recipe(main)
