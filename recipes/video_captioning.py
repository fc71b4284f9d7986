"""Fine-tune a BLIP captioner on videos with one or several methods and score the captions (Token Mixing's task).

The vision tower encodes every frame (TokenMix mixes tokens across frames in the chosen blocks), the tokens of all
frames feed the text decoder's cross-attention, and ``transformers.Trainer`` trains the decoder's LM loss. The
checkpoint kept is the one with the best CIDEr + BLEU-4 on the validation split (the authors' rule, on validation:
their public code evaluates its "val" loader on the test annotations). Offline by default: the shipped tiny BLIP
captioner on the synthetic world, whose test split holds out (colour, shape, event) combinations::

    python recipes/video_captioning.py --method token_mix partial lora --seeds 0 1 2
    python recipes/video_captioning.py --method token_mix --blocks 0          # Figure 4: mix in the first block
    python recipes/video_captioning.py --method token_mix --backbone Salesforce/blip-image-captioning-base \\
        --train-annotations msvd/train.json --val-annotations msvd/val.json --eval-annotations msvd/test.json \\
        --eval-gt msvd/test_gt.json --video-root msvd/frames --num-frames 8 --lr 1e-5 --max-steps 3000 \\
        --batch-size 16 --save

Writes to ``--output-dir``: per run ``seed<S>/<method>/`` with ``captions.json`` (COCO results,
``[{"image_id", "caption"}]``), ``metrics.json`` and (``--save``) the adapter; ``results.json``, ``results.md`` and
``scores_vs_params.png`` over all runs (mean and range over seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from peft_video.integrations.accelerate_utils import launch_state
from peft_video.tasks.captioning.assets import Captioner, load_captioner
from peft_video.tasks.captioning.data import (
    CaptionCollator,
    CaptionTrainingRows,
    CaptionVideos,
    decode_caption_videos,
    read_caption_annotations,
)
from peft_video.tasks.captioning.evaluation import (
    generate_captions,
    score_captions,
    synthetic_caption_videos,
)
from peft_video.tasks.captioning.metrics import score_coco_files, write_coco_results
from peft_video.tasks.captioning.modeling import encoder_updated_parameters
from peft_video.tasks.captioning.training import CAPTION_METHODS, MIXING_METHODS, prepare_captioner
from peft_video.tasks.cli import positive_int, quiet_libraries, run_recipe
from peft_video.tasks.methods import trainable_parameters
from peft_video.tasks.report import Column, Series, aggregate_seeds, count, fixed, write_results

CAPTION_COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("encoder_updated_params", "UP (video encoder)", count),
    Column("trainable_params", "trainable (all)", count),
    Column("Bleu_4", "B4", fixed(1)),
    Column("METEOR", "M", fixed(1)),
    Column("ROUGE_L", "R", fixed(1)),
    Column("CIDEr", "C", fixed(1)),
    Column("temporal_fact_accuracy", "temporal fact (%)", fixed(1)),
    Column("direction_accuracy", "own vs reversed (%)", fixed(1)),
    Column("temporal_pair_accuracy", "both of a pair (%)", fixed(1)),
    Column("seconds_per_step", "s / step", fixed(3)),
)
"""Token Mixing's Table 1 columns (UP: updated parameters in the video encoder; B4, M, R, C in percent) and the
synthetic world's temporal facts: is the direction / first event of a generated caption right (of all captions, and
of those stating the fact of their clip or of its reversal, where a frame-order-blind captioner scores exactly 50%),
and are both videos of an order-only pair (a clip and its reversal) right."""
CAPTION_SERIES: tuple[Series, ...] = (
    Series("CIDEr", 1.0, "CIDEr"),
    Series("direction_accuracy", 1.0, "own vs reversed fact (%)", chance=50.0),
)
SCORE_KEYS = (
    "Bleu_4",
    "METEOR",
    "ROUGE_L",
    "CIDEr",
    "temporal_fact_accuracy",
    "direction_accuracy",
    "temporal_pair_accuracy",
)
DEFAULT_LEARNING_RATES = {
    "frozen": 0.0,
    "full": 1e-3,
    "bitfit": 1e-2,
    "partial": 1e-2,
    "proj": 1e-2,
    "lora": 1e-2,
    "adapter": 1e-2,
    "read": 1e-2,
    "token_mix": 1e-2,
}
"""Peak learning rates for the shipped tiny captioner: one rate, 1e-2, for every method (all of them also train the
decoder's embeddings and language head, which must learn the event words the still-frame pretraining never showed),
chosen on the validation split from token_mix's and partial's curves at 2e-3, 5e-3 and 1e-2; ``full`` moves the
pretrained decoder too and gets 1e-3. Pass ``--lr`` for real backbones (Token Mixing: 1e-5)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", nargs="+", default=["token_mix"], choices=CAPTION_METHODS)
    parser.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=None,
        help="vision blocks that token_mix mixes and tunes, and partial tunes (Python indices; default: the last)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="BLIP caption checkpoint: Hub id or local path; default: the shipped tiny one",
    )
    parser.add_argument("--train-annotations", default=None, help="LAVIS-style JSON of the training split")
    parser.add_argument("--val-annotations", default=None, help="validation split (model selection)")
    parser.add_argument(
        "--eval-annotations", default=None, help="test split (scored once, never selected on)"
    )
    parser.add_argument(
        "--eval-gt",
        default=None,
        help="COCO-format ground truth of the test split ({images, annotations}); scores the written captions "
        "against it instead of the annotations' captions",
    )
    parser.add_argument("--video-root", default=None, help="folder the annotations' video paths are under")
    parser.add_argument(
        "--skip-bad-videos", action="store_true", help="leave out unreadable videos (counted)"
    )
    parser.add_argument("--train-videos", type=int, default=1024, help="synthetic training videos")
    parser.add_argument("--val-videos", type=int, default=64, help="synthetic validation videos")
    parser.add_argument(
        "--eval-videos", type=int, default=256, help="synthetic test videos (held-out combinations)"
    )
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument(
        "--eval-every", type=int, default=300, help="validate every N steps (model selection)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="default: the method's (tiny captioner)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument(
        "--max-length", type=int, default=32, help="generated tokens at most (start included)"
    )
    parser.add_argument("--min-length", type=int, default=5)
    parser.add_argument(
        "--meteor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="METEOR on the test split (Java)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 for the tiny default)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs") / "captioning")
    parser.add_argument("--save", action="store_true", help="save each trained adapter / trainable tensors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before anything is loaded."""
    for name in (
        "num_frames",
        "batch_size",
        "threads",
        "train_videos",
        "val_videos",
        "eval_videos",
        "num_beams",
    ):
        positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    for name in ("max_steps", "eval_every", "max_length", "min_length"):
        positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    if args.min_length > args.max_length:
        raise ValueError(f"`--min-length` {args.min_length} exceeds `--max-length` {args.max_length}")
    if args.blocks is not None and not set(args.method) <= set(MIXING_METHODS):
        others = sorted(set(args.method) - set(MIXING_METHODS))
        raise ValueError(f"`--blocks` applies to {MIXING_METHODS} only; drop it or the methods {others}")
    if len(set(args.method)) != len(args.method) or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"`--method` and `--seeds` must not repeat, got {args.method} and {args.seeds}")
    real = (args.train_annotations, args.eval_annotations)
    if any(real) and not all(real):
        raise ValueError("`--train-annotations` and `--eval-annotations` go together (real data); give both")
    if args.val_annotations and not all(real):
        raise ValueError("`--val-annotations` needs `--train-annotations` and `--eval-annotations`")
    if args.eval_gt and not all(real):
        raise ValueError("`--eval-gt` needs `--train-annotations` and `--eval-annotations`")
    for flag in ("train_annotations", "val_annotations", "eval_annotations", "eval_gt"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"`--{flag.replace('_', '-')}` {path!r}: no such file")
    if args.video_root is not None and not Path(args.video_root).is_dir():
        raise FileNotFoundError(f"`--video-root` {args.video_root!r}: no such folder")


def load_splits(args: argparse.Namespace, seed: int, image_size: int) -> dict[str, Any]:
    """Train, validation (or None) and test videos, and the test order-pair ids (synthetic world only)."""
    if args.train_annotations is None:
        size = {"num_frames": args.num_frames, "image_size": image_size, "seed": seed}
        train, _ = synthetic_caption_videos("train", args.train_videos, **size)
        val, val_pairs = synthetic_caption_videos("validation", args.val_videos, **size)
        test, test_pairs = synthetic_caption_videos("test", args.eval_videos, **size)
        return {"train": train, "val": val, "test": test, "val_pairs": val_pairs, "test_pairs": test_pairs}

    def decode(path: str) -> CaptionVideos:
        records = read_caption_annotations(path, args.video_root)
        return decode_caption_videos(records, args.num_frames, image_size, args.skip_bad_videos)

    val = decode(args.val_annotations) if args.val_annotations else None
    return {
        "train": decode(args.train_annotations),
        "val": val,
        "test": decode(args.eval_annotations),
        "val_pairs": None,
        "test_pairs": None,
    }


class ValidationSelection(TrainerCallback):
    """Every ``every`` steps (and at the end), caption the validation split; keep a copy of the trainable tensors of
    the best CIDEr + BLEU-4 (the authors' selection score) and restore them when training ends."""

    def __init__(self, model: torch.nn.Module, caption: Any, every: int) -> None:
        self.model, self.caption, self.every = model, caption, every
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.history: list[dict[str, float]] = []

    def _check(self, step: int) -> None:
        scores = self.caption()
        value = scores["CIDEr"] + scores["Bleu_4"]
        self.history.append({"step": step, **scores})
        if self.best is None or value > self.best[0]:
            state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            self.best = (value, step, state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._check(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check(state.global_step)
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in self.best[2].items():
                parameters[name].copy_(tensor)

    @property
    def best_step(self) -> int | None:
        return None if self.best is None else self.best[1]


def run_one(args: argparse.Namespace, method: str, seed: int, splits: dict[str, Any]) -> dict[str, Any]:
    """Train one method with one seed (validation selection), caption the test split, score and write the run."""
    torch.manual_seed(seed)
    captioner: Captioner = load_captioner(args.backbone, num_frames=args.num_frames)
    collator = CaptionCollator(
        captioner.tokenizer,
        captioner.image_mean,
        captioner.image_std,
        captioner.image_size,
        max_length=captioner.max_text_length,
    )
    model = prepare_captioner(captioner.model, method, blocks=args.blocks)
    output_dir = args.output_dir / f"seed{seed}" / method
    generation = {"num_beams": args.num_beams, "max_length": args.max_length, "min_length": args.min_length}
    processes = launch_state().num_processes
    row: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "processes": processes,
        "global_batch": args.batch_size * processes,
        "backbone": captioner.name,
        "blocks": args.blocks,
        "trainable_params": trainable_parameters(model),
        "encoder_updated_params": encoder_updated_parameters(model),
        "num_frames": args.num_frames,
        "steps": 0,
        "seconds_per_step": None,
        "selected_step": None,
    }

    def score_validation() -> dict[str, float]:
        videos = splits["val"]
        predictions = generate_captions(
            model, videos, collator, batch_size=2 * args.batch_size, progress=not args.quiet, **generation
        )
        return score_captions(predictions, videos.references, splits["val_pairs"], meteor=False)

    if row["trainable_params"] > 0:
        lr = args.lr if args.lr is not None else DEFAULT_LEARNING_RATES[method]
        training_args = TrainingArguments(
            output_dir=str(output_dir / "trainer"),
            per_device_train_batch_size=args.batch_size,
            max_steps=args.max_steps,
            learning_rate=lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            lr_scheduler_type="cosine",
            logging_steps=max(1, args.max_steps // 10),
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False,
            seed=seed,
            disable_tqdm=args.quiet,
        )
        callbacks = []
        selection = None
        if splits["val"] is not None:
            selection = ValidationSelection(model, score_validation, args.eval_every)
            callbacks.append(selection)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=CaptionTrainingRows(splits["train"]),
            data_collator=collator,
            callbacks=callbacks,
        )
        if args.quiet:
            trainer.remove_callback(PrinterCallback)
        began = time.perf_counter()
        output = trainer.train()
        train_seconds = time.perf_counter() - began
        steps = trainer.state.global_step
        row.update(
            steps=steps,
            learning_rate=lr,
            train_loss=output.training_loss,
            seconds_per_step=output.metrics["train_runtime"] / max(steps, 1),
            train_seconds=train_seconds,
            selected_step=selection.best_step if selection else steps,
            validation=selection.history if selection else None,
        )
        if args.save and launch_state().is_main_process:
            model.save_pretrained(str(output_dir / "model"))
    began = time.perf_counter()
    videos = splits["test"]
    predictions = generate_captions(
        model, videos, collator, 2 * args.batch_size, not args.quiet, **generation
    )
    if not launch_state().is_main_process:  # every process trained the same replica; one scores and writes
        return row
    output_dir.mkdir(parents=True, exist_ok=True)
    write_coco_results(output_dir / "captions.json", videos.video_ids, predictions)
    if args.eval_gt:  # the captions as written, scored against the COCO ground truth
        scores = score_coco_files(
            output_dir / "captions.json", args.eval_gt, meteor=args.meteor, percent=True
        )
    else:
        scores = score_captions(predictions, videos.references, splits["test_pairs"], meteor=args.meteor)
    row.update(scores, eval_seconds=time.perf_counter() - began, eval_videos=len(videos))
    (output_dir / "metrics.json").write_text(json.dumps(row, indent=2, default=float) + "\n")
    return row


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every method of ``--method`` for every seed of ``--seeds``; returns the run rows."""
    check_args(args)
    launch_state()  # a multi-process launch that fell back to single processes fails here
    quiet_libraries(args.quiet)
    torch.set_num_threads(args.threads)
    image_size = load_captioner(args.backbone).image_size  # fail on a bad backbone before decoding videos
    runs = []
    for seed in args.seeds:
        splits = load_splits(args, seed, image_size)
        for method in args.method:
            began = time.perf_counter()
            row = run_one(args, method, seed, splits)
            row["wall_seconds"] = time.perf_counter() - began
            runs.append(row)
            if not launch_state().is_main_process:  # its row has no scores: the main process scored
                continue
            fact = row.get("temporal_fact_accuracy")
            print(
                f"captioning {method:9s} seed {seed}: CIDEr {row['CIDEr']:6.1f}  B4 {row['Bleu_4']:5.1f}"
                + (f"  temporal fact {fact:5.1f}%" if fact is not None else "")
                + f"  ({row['wall_seconds']:.0f} s)",
                flush=True,
            )
    return runs


def report(runs: list[dict[str, Any]], output_dir: Path, title: str) -> dict[str, Path]:
    """results.json / results.md / scores_vs_params.png over ``runs`` (mean and range over seeds)."""
    rows = aggregate_seeds(runs, [*SCORE_KEYS, "seconds_per_step"])
    return write_results(rows, output_dir, CAPTION_COLUMNS, CAPTION_SERIES, title, runs=runs)


DEMO_METHODS = ("frozen", "partial", "token_mix")
DEMO_BUDGET = {
    "train_videos": 1024,
    "val_videos": 64,
    "eval_videos": 256,
    "max_steps": 500,
    "eval_every": 250,
}
DEMO_QUICK = {"train_videos": 512, "val_videos": 32, "eval_videos": 64, "max_steps": 150, "eval_every": 75}


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
    """The demo's captioning part (``recipes/demo.py``): the shipped tiny captioner fine-tuned on synthetic videos
    with :data:`DEMO_METHODS` (frame-wise baselines and token mixing) for the same budget per seed."""
    budget = dict(DEMO_QUICK if quick else DEMO_BUDGET)
    if max_steps is not None:
        budget["max_steps"] = max_steps
    chosen = [m for m in DEMO_METHODS if methods is None or m in methods]
    if not chosen:
        return {
            "runs": [],
            "keys": [],
            "columns": CAPTION_COLUMNS,
            "series": CAPTION_SERIES,
            "title": "captioning",
        }
    argv = [
        *("--method", *chosen, "--seeds", *map(str, seeds), "--threads", str(threads)),
        *(f"--{key.replace('_', '-')}={value}" for key, value in budget.items()),
        *("--output-dir", str(output_dir), "--batch-size", "32"),
        *(["--no-meteor"] if quick else []),
        *(["--quiet"] if quiet else []),
    ]
    runs = run(build_parser().parse_args(argv))
    return {
        "runs": runs,
        "keys": [*SCORE_KEYS, "seconds_per_step"],
        "columns": CAPTION_COLUMNS,
        "series": CAPTION_SERIES,
        "title": f"video captioning (tiny BLIP), {budget['max_steps']} steps per method",
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    runs = run(args)
    if launch_state().is_main_process:
        paths = report(runs, args.output_dir, f"video captioning on {runs[0]['backbone']}")
        print(paths["markdown"].read_text())
        print(f"results in {args.output_dir}/")
    return runs


if __name__ == "__main__":
    run_recipe(main)
