"""Fine-tune a vision-guided BART or T5 with one method and summarize videos from their transcripts.

Offline by default: the shipped tiny BART / T5 on the synthetic world (two events per video; the transcript never
names what only the video shows)::

    python recipes/video_summarization.py --method read --pvla 0.1
    python recipes/video_summarization.py --method lora --backbone t5 --seeds 0 1 2
    python recipes/video_summarization.py --method read --text-only          # the "does the video help" row
    python recipes/video_summarization.py --method read --backbone facebook/bart-base \\
        --train-dir how2/train --eval-dir how2/test --feature-dir how2/features --max-steps 2000
    python recipes/video_summarization.py --method adapter --backbone t5-small \\
        --train-file train.jsonl --eval-file test.jsonl --feature-dir features/

Methods (peft_video.tasks.METHODS): frozen, full, bitfit, partial, proj, lora, ia3, adapter, prompt, read; the fusion
is new and trained by every one (``frozen`` trains only it). ``--pvla W`` adds W x PVLA at the fusion. Training uses
``Seq2SeqTrainer``; the checkpoint of best validation ROUGE-L is kept (the synthetic validation split, or the
last tenth of the training data for real data), then the eval split is summarized with beam 5, at most 64 tokens,
no repeated trigram. Writes ``summaries.jsonl`` (per seed), ``results.json``, ``results.md``,
``scores_vs_params.png`` and (with ``--save``) the trained weights to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback

from peft_video.integrations.accelerate_utils import launch_state
from peft_video.tasks import METHODS, prepare_model, trainable_parameters
from peft_video.tasks.cli import positive_int, quiet_libraries, run_recipe
from peft_video.tasks.methods import DEFAULT_LEARNING_RATES, SELECTIVE_METHODS, save_trainable
from peft_video.tasks.report import Column, Series, aggregate_seeds, count, fixed, write_results
from peft_video.tasks.summarization.synthetic import VIDEO_ONLY_CHANCE

SUMMARY_METHODS = tuple(m for m in METHODS if m not in ("rap", "token_mix"))
SYNTHETIC_WIDTH = 64  # the shipped tiny CLIP's clip features
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("method", "method"),
    Column("trainable_params", "trainable params", count),
    Column("rouge1", "R-1", fixed(1)),
    Column("rouge2", "R-2", fixed(1)),
    Column("rougeL", "R-L", fixed(1)),
    Column("video_only_words", "video-only words right (%)", fixed(1)),
    Column("both_objects_named", "both objects named (%)", fixed(1)),
    Column("order_accuracy", "order acc. (%)", fixed(1)),
    Column("seconds_per_step", "s / step", fixed(3)),
)
SUMMARY_SERIES: tuple[Series, ...] = (
    Series("rougeL", 1.0, "ROUGE-L"),
    Series("video_only_words", 1.0, "video-only words right", chance=VIDEO_ONLY_CHANCE),
    Series("order_accuracy", 1.0, "order accuracy (of both named)", chance=50.0),
)
METRIC_KEYS = [c.key for c in SUMMARY_COLUMNS[2:]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=SUMMARY_METHODS, default="read")
    parser.add_argument(
        "--pvla", type=float, default=0.0, metavar="W", help="weight of the PVLA term (0: off)"
    )
    parser.add_argument(
        "--backbone", default="bart", help="'bart' / 't5' (shipped tiny), or a BART / T5 path or Hub id"
    )
    parser.add_argument("--text-only", action="store_true", help="no video: the text model alone")
    parser.add_argument(
        "--train-dir", type=Path, default=None, help="How2 layout: tran.tok.txt, desc.tok.txt"
    )
    parser.add_argument("--eval-dir", type=Path, default=None, help="How2 layout of the split to summarize")
    parser.add_argument(
        "--train-file", type=Path, default=None, help="jsonl: id, transcript, summary, features"
    )
    parser.add_argument("--eval-file", type=Path, default=None, help="jsonl of the split to summarize")
    parser.add_argument("--feature-dir", type=Path, default=None, help="directory of {id}.npy video features")
    parser.add_argument("--train-size", type=int, default=512, help="synthetic training videos")
    parser.add_argument("--eval-size", type=int, default=256, help="synthetic test videos")
    parser.add_argument("--validation-size", type=int, default=64, help="synthetic validation videos")
    parser.add_argument("--max-steps", type=int, default=400, help="optimizer steps")
    parser.add_argument(
        "--eval-steps", type=int, default=None, help="validate every N steps (default: 4 times)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--lr", type=float, default=None, help="default: the method's (peft_video.tasks.methods)"
    )
    parser.add_argument("--max-source-tokens", type=int, default=512)
    parser.add_argument("--max-target-tokens", type=int, default=64)
    parser.add_argument("--max-frames", type=int, default=256, help="video features kept per video")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one run per seed; the table: mean (range)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 suits the tiny models)")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: outputs/summarization/<method>"
    )
    parser.add_argument(
        "--save", action="store_true", help="save the trained weights (adapter, or its tensors)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before anything is loaded."""
    for name in (
        "train_size",
        "eval_size",
        "validation_size",
        "max_steps",
        "batch_size",
        "max_source_tokens",
        "max_target_tokens",
        "max_frames",
        "threads",
    ):
        positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    if args.eval_steps is not None:
        positive_int(args.eval_steps, "--eval-steps")
    if not (args.pvla >= 0 and math.isfinite(args.pvla)):
        raise ValueError(f"`--pvla` must be a weight >= 0, got {args.pvla}")
    if args.pvla and args.text_only:
        raise ValueError("`--pvla` aligns video with text at the fusion, and `--text-only` has no video")
    if args.pvla and args.method == "prompt":
        raise ValueError(
            "`--pvla` with `--method prompt` is not supported: peft's prompt tuning prepends virtual tokens to the "
            "text, which the attention mask PVLA reads does not cover"
        )
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"`--lr` must be > 0, got {args.lr}")
    dirs, files = (args.train_dir, args.eval_dir), (args.train_file, args.eval_file)
    if any(dirs) and any(files):
        raise ValueError(
            "give How2 directories (--train-dir / --eval-dir) or jsonl files (--train-file / --eval-file)"
        )
    for pair, flags in ((dirs, ("--train-dir", "--eval-dir")), (files, ("--train-file", "--eval-file"))):
        if any(pair) and not all(pair):
            raise ValueError(f"`{flags[0]}` and `{flags[1]}` go together; got only one of them")
    for flag, path in zip(("--train-dir", "--eval-dir"), dirs, strict=True):
        if path is not None and not path.is_dir():
            raise FileNotFoundError(f"`{flag}` {str(path)!r}: no such directory")
    for flag, path in zip(("--train-file", "--eval-file"), files, strict=True):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"`{flag}` {str(path)!r}: no such file")
    if args.feature_dir is not None and not args.feature_dir.is_dir():
        raise FileNotFoundError(f"`--feature-dir` {str(args.feature_dir)!r}: no such directory")
    if args.feature_dir is not None and not (any(dirs) or any(files)):
        raise ValueError("`--feature-dir` goes with real data (--train-dir / --train-file)")
    if any(dirs) and args.feature_dir is None and not args.text_only:
        raise ValueError("How2 data needs `--feature-dir` (the {id}.npy video features), or `--text-only`")


@functools.lru_cache(maxsize=8)
def synthetic_split(split: str, size: int, seed: int) -> tuple[Any, Any]:
    """A split of the synthetic world with its clip features, built once per process (the demo's runs share it)."""
    from peft_video.tasks.summarization import synthetic

    return synthetic.build_split(split, size, seed=seed)


class Data:
    """Encoded train / validation / eval examples, the eval references and (synthetic) the eval examples."""

    def __init__(self, args: argparse.Namespace, tokenizer: Any, seed: int, width: int) -> None:
        from peft_video.tasks.summarization import data as io

        limits = (args.max_source_tokens, args.max_target_tokens)
        self.synthetic = not (args.train_dir or args.train_file)
        if self.synthetic:
            world = {
                split: synthetic_split(split, size, seed)
                for split, size in (
                    ("train", args.train_size),
                    ("validation", args.validation_size),
                    ("test", args.eval_size),
                )
            }
            encoded = {
                split: io.encode_records(
                    [e.record() for e in examples], tokenizer, None if args.text_only else features, *limits
                )
                for split, (examples, features) in world.items()
            }
            self.validation_examples = world["validation"][0]
            self.eval_examples = world["test"][0]
            self.eval_records = [e.record() for e in self.eval_examples]
        else:
            if args.train_dir:
                train_records = io.read_how2(args.train_dir, with_summaries=True)
                self.eval_records = io.read_how2(args.eval_dir)
            else:
                train_records = io.read_jsonl(args.train_file)
                self.eval_records = io.read_jsonl(args.eval_file, require_summary=False)
            features = None if args.text_only else io.NpyFeatures(args.feature_dir, width, args.max_frames)
            cut = max(1, len(train_records) // 10)
            if len(train_records) < 2:
                raise ValueError(
                    "the training data needs at least 2 examples (one is held out for validation)"
                )
            encoded = {
                "train": io.encode_records(train_records[:-cut], tokenizer, features, *limits),
                "validation": io.encode_records(train_records[-cut:], tokenizer, features, *limits),
                "test": io.encode_records(self.eval_records, tokenizer, features, *limits),
            }
            self.validation_examples = self.eval_examples = None
        self.train, self.validation, self.eval = encoded["train"], encoded["validation"], encoded["test"]


def feature_width(args: argparse.Namespace) -> int:
    """Width of the video features: the tiny CLIP's for the synthetic world, else the first feature file's."""
    if not (args.train_dir or args.train_file) or args.text_only:
        return SYNTHETIC_WIDTH
    import numpy as np

    from peft_video.tasks.summarization import data as io

    records = io.read_how2(args.train_dir) if args.train_dir else io.read_jsonl(args.train_file)
    probe = io.NpyFeatures(args.feature_dir, 1, args.max_frames).path_of(records[0])
    if not probe.is_file():
        raise FileNotFoundError(f"video {records[0].id!r} has no feature file: {str(probe)!r} does not exist")
    shape = np.load(probe, mmap_mode="r").shape
    if len(shape) != 2:
        raise ValueError(f"video {records[0].id!r}: {str(probe)!r} holds shape {shape}, expected (T, D)")
    return int(shape[1])


def run_seed(args: argparse.Namespace, seed: int, output_dir: Path) -> dict[str, Any]:
    """Train one model with ``seed``, summarize the eval split, return the result row."""
    from peft_video.tasks.summarization import load_summarizer
    from peft_video.tasks.summarization.training import (
        dataset_rows,
        decode,
        make_trainer,
        summary_metrics,
    )

    torch.manual_seed(seed)
    width = feature_width(args)
    model, tokenizer = load_summarizer(
        args.backbone, video_feature_dim=width, text_only=args.text_only, max_video_frames=args.max_frames
    )
    data = Data(args, tokenizer, seed, width)
    pvla_source = model.pvla_source() if args.pvla else None
    prepared = prepare_model(model, args.method)
    name = _name(args)
    processes = launch_state().num_processes
    row: dict[str, Any] = {
        "method": name,
        "seed": seed,
        "processes": processes,
        "global_batch": args.batch_size * processes,
        "backbone": str(args.backbone),
        "trainable_params": trainable_parameters(prepared),
        "steps": 0,
        "seconds_per_step": None,
    }
    lr = args.lr if args.lr is not None else DEFAULT_LEARNING_RATES[args.method]
    trainer = make_trainer(
        prepared,
        tokenizer,
        data.train,
        data.validation,
        output_dir=output_dir / f"seed{seed}" / "trainer",
        learning_rate=lr,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        eval_steps=args.eval_steps,
        seed=seed,
        validation_examples=data.validation_examples,
        pvla_weight=args.pvla,
        pvla_source=pvla_source,
        quiet=args.quiet,
    )
    if args.quiet:
        trainer.remove_callback(PrinterCallback)
    if row["trainable_params"] > 0:
        output = trainer.train()
        row.update(
            steps=trainer.state.global_step,
            learning_rate=lr,
            train_loss=output.training_loss,
            seconds_per_step=output.metrics["train_runtime"] / max(trainer.state.global_step, 1),
            best_validation_rougeL=trainer.state.best_metric,
        )
    trainer.compute_metrics = None  # the eval split is scored below, with its own references
    start = time.perf_counter()
    generated = dataset_rows(trainer.predict(data.eval).predictions, len(data.eval))  # from every process
    predictions = decode(tokenizer, generated)
    row["eval_seconds"] = time.perf_counter() - start
    if not launch_state().is_main_process:  # every process holds the same replica; one scores and writes
        return row
    summaries = output_dir / f"seed{seed}" / "summaries.jsonl"
    summaries.parent.mkdir(parents=True, exist_ok=True)
    with summaries.open("w") as handle:
        for record, prediction in zip(data.eval_records, predictions, strict=True):
            handle.write(
                json.dumps({"id": record.id, "summary": prediction, "reference": record.summary}) + "\n"
            )
    references = [record.summary for record in data.eval_records]
    if all(reference is not None for reference in references):
        row.update(summary_metrics(predictions, references, data.eval_examples))
    if args.save and row["trainable_params"] > 0:
        target = output_dir / f"seed{seed}" / "model"
        if args.method in SELECTIVE_METHODS:
            save_trainable(prepared, target, method=args.method)
        else:
            prepared.save_pretrained(str(target))
    return row


def _name(args: argparse.Namespace) -> str:
    name = args.method + (f"+pvla{args.pvla:g}" if args.pvla else "")
    return ("text-only " if args.text_only else "") + name


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every seed's result row."""
    check_args(args)
    launch_state()  # a multi-process launch that fell back to single processes fails here
    quiet_libraries(args.quiet)
    torch.set_num_threads(args.threads)
    output_dir = args.output_dir or Path("outputs") / "summarization" / _name(args).replace(" ", "_")
    return [run_seed(args, seed, output_dir) for seed in args.seeds]


DEMO_RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text-only full", ("--method", "full", "--text-only")),
    ("frozen", ("--method", "frozen")),
    ("lora", ("--method", "lora")),
    ("read", ("--method", "read")),
    ("read+pvla", ("--method", "read", "--pvla", "0.1")),
)
"""The demo's rows: the text-only model (fully fine-tuned: the best it can do), the fusion alone (frozen), LoRA, READ
and READ + PVLA on VG-BART; the full comparison (every method, T5 too) is the recipe's."""
DEMO_BUDGET = {"train_size": 512, "eval_size": 128, "max_steps": 250}
DEMO_QUICK = {"train_size": 256, "eval_size": 64, "max_steps": 150}


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
    """The demo's summarization part (``recipes/demo.py``): VG-BART (tiny) with the methods of :data:`DEMO_RUNS`,
    the text-only model beside them, the same steps each; returns the runs and the table's columns and series."""
    budget = dict(DEMO_QUICK if quick else DEMO_BUDGET)
    if max_steps is not None:
        budget["max_steps"] = max_steps
    runs = []
    for label, flags in DEMO_RUNS:
        if methods is not None and label not in methods:
            continue
        run_args = build_parser().parse_args(
            [
                *flags,
                *("--seeds", *map(str, seeds), "--threads", str(threads)),
                *("--max-steps", str(budget["max_steps"]), "--train-size", str(budget["train_size"])),
                *("--eval-size", str(budget["eval_size"]), "--batch-size", "16"),
                *("--eval-steps", str(max(1, budget["max_steps"] // 2))),
                *("--output-dir", str(output_dir / label.replace(" ", "_"))),
                *(["--quiet"] if quiet else []),
            ]
        )
        began = time.perf_counter()
        for row in run(run_args):
            row.update(method=label, wall_seconds=time.perf_counter() - began)
            runs.append(row)
            order = "—" if row["order_accuracy"] is None else f"{row['order_accuracy']:5.1f}%"
            print(
                f"summarization {label:15s} seed {row['seed']}: R-L {row['rougeL']:5.1f}  video-only words right "
                f"{row['video_only_words']:5.1f}%  order {order}",
                flush=True,
            )
    return {
        "runs": runs,
        "keys": METRIC_KEYS,
        "columns": SUMMARY_COLUMNS,
        "series": SUMMARY_SERIES,
        "title": f"video summarization (tiny VG-BART), {budget['max_steps']} steps per method",
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    rows = run(args)
    if not launch_state().is_main_process:
        return rows
    output_dir = args.output_dir or Path("outputs") / "summarization" / _name(args).replace(" ", "_")
    keys = [key for key in METRIC_KEYS if all(key in row for row in rows)]
    summary = aggregate_seeds(rows, keys)
    columns = [c for c in SUMMARY_COLUMNS if c.key in ("method", "trainable_params", *keys)]
    series = [s for s in SUMMARY_SERIES if s.key in keys]
    paths = write_results(
        summary, output_dir, columns, series, title=f"video summarization: {rows[0]['method']}", runs=rows
    )
    print(paths["markdown"].read_text())
    print(f"results and summaries in {output_dir}/")
    return rows


if __name__ == "__main__":
    run_recipe(main)
