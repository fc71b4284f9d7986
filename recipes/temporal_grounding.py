"""Fine-tune a grounding model (Moment-DETR style) with one or more methods and score moment retrieval and highlights.

Offline by default: the shipped tiny grounding model (pretrained on the synthetic world's source domain) adapted to
each low-resource target domain of the synthetic world (40 training videos, like a YouTube Highlights domain)::

    python recipes/temporal_grounding.py --method frozen full lora adapter read read+pvla --seeds 0 1 2
    python recipes/temporal_grounding.py --method read --pvla 0.1 --domains approach

Real data in QVHighlights' format (jsonl annotations, Moment-DETR's feature files)::

    python recipes/temporal_grounding.py --method read --pvla 0.1 \\
        --train-annotations highlight_train_release.jsonl --eval-annotations highlight_val_release.jsonl \\
        --video-feature-dirs features/slowfast_features features/clip_features \\
        --text-feature-dir features/clip_text_features --backbone scratch --max-steps 2000

YouTube Highlights / TVSum files (per-clip labels by domain; one model per domain, scored by UMT's mAP) take
``--format youtube`` / ``--format tvsum`` and optionally ``--domains dog gymnastics``.

Methods: those of the registry that apply to the model (``peft_video.tasks.grounding.GROUNDING_METHODS``: frozen,
full, bitfit, partial, proj, lora, ia3, adapter, read); ``NAME+pvla`` adds PVLA to NAME at ``--pvla W`` (or, when
``--pvla`` is 0, at the task's default weight 0.1), and ``--pvla W`` > 0 adds it to every listed method. Each run
trains for ``--max-steps`` with ``transformers.Trainer`` (``accelerate launch`` works too), scores the VALIDATION
split every ``--eval-steps`` steps and keeps the best weights (``MR-full-mAP``), then predicts the evaluation split
once. Validation: the synthetic world's own split; for real data ``--val-annotations``, else ``--val-fraction`` of
the training videos (whole videos, a fixed draw independent of the seed). The evaluation split is never used for
selection.

Writes, under ``--output-dir``: per run ``<domain>/seed<S>/<method>/predictions.jsonl`` (QVHighlights' official
submission format: ``qid``, ``query``, ``vid``, ``pred_relevant_windows`` [[start, end, score], ...],
``pred_saliency_scores``) and ``metrics.json``; per domain and, for several domains, averaged over them:
``results.json``, ``results.md`` (mean and min-max over seeds) and ``scores_vs_params.png``; with ``--save`` the
trained adapter (peft methods) or trainable tensors (selective methods) in ``<run>/model``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, TrainingArguments

import peft_video
import peft_video.tasks.grounding as grounding
from peft_video.integrations.accelerate_utils import launch_state
from peft_video.tasks import prepare_model, trainable_parameters
from peft_video.tasks.cli import positive_int, quiet_libraries, run_recipe
from peft_video.tasks.features import ClipFeatureExtractor
from peft_video.tasks.grounding.formats import read_jsonl
from peft_video.tasks.grounding.metrics import write_submission
from peft_video.tasks.grounding.synthetic import TARGET_DOMAINS
from peft_video.tasks.methods import DEFAULT_LEARNING_RATES, SELECTIVE_METHODS, save_trainable
from peft_video.tasks.report import aggregate_seeds, markdown_table, write_results

PVLA_SUFFIX = "+pvla"
PRINTED = (
    ("MR-full-R1@0.5", "R1@0.5"),
    ("MR-full-mAP", "mAP"),
    ("HL-min-VeryGood-mAP", "HL mAP"),
    (grounding.UMT_KEY, "UMT mAP"),
)
"""The scores printed per run (those the data has)."""
REAL_DOMAIN = "data"
"""The domain name of a run on real data (its outputs go to ``<output-dir>/data/``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--method",
        nargs="+",
        default=["read"],
        metavar="METHOD",
        help="one or more of frozen full bitfit partial proj lora ia3 adapter read, each optionally NAME+pvla",
    )
    parser.add_argument(
        "--pvla",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of the PVLA term for every method (0: off)",
    )
    parser.add_argument(
        "--backbone",
        default="tiny",
        help="a saved grounding model directory; 'tiny' (default): the shipped one; 'scratch': untrained, "
        "Moment-DETR's default size",
    )
    data = parser.add_argument_group("real data (QVHighlights format); without them: the synthetic world")
    data.add_argument("--train-annotations", type=Path, default=None, help="training jsonl")
    data.add_argument("--eval-annotations", type=Path, default=None, help="evaluation jsonl (scored once)")
    data.add_argument("--val-annotations", type=Path, default=None, help="validation jsonl (model selection)")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="without --val-annotations: this share of the training videos (whole videos) is held out for "
        "validation, drawn once with a fixed seed",
    )
    data.add_argument("--video-feature-dirs", type=Path, nargs="+", default=None, metavar="DIR")
    data.add_argument("--text-feature-dir", type=Path, default=None, metavar="DIR")
    data.add_argument(
        "--format",
        choices=list(grounding.SCORERS),
        default="qvhighlights",
        help="the annotations' format and scorer: QVHighlights (moments + highlights, official scorer), or "
        "YouTube Highlights / TVSum (per-clip labels by domain, UMT's mAP; one model per domain)",
    )
    data.add_argument(
        "--clip-length",
        type=float,
        default=None,
        help="seconds per clip of the features (default: YouTube Highlights 1, QVHighlights and TVSum 2)",
    )
    data.add_argument("--max-clips", type=int, default=75, help="clips read per video (Moment-DETR: 75)")
    world = parser.add_argument_group("the synthetic world")
    parser.add_argument(
        "--domains",
        nargs="+",
        default=None,
        help=f"synthetic world: target domains (default: all, {' '.join(TARGET_DOMAINS)}); YouTube Highlights / "
        "TVSum: the domains of the training file to fine-tune one model each on (default: all of them)",
    )
    world.add_argument("--train-videos", type=int, default=40)
    world.add_argument("--val-videos", type=int, default=20)
    world.add_argument("--eval-videos", type=int, default=60)
    training = parser.add_argument_group("training")
    training.add_argument("--max-steps", type=int, default=200, help="optimizer steps per run")
    training.add_argument("--eval-steps", type=int, default=20, help="steps between validation scorings")
    training.add_argument("--batch-size", type=int, default=32, help="queries per step")
    training.add_argument(
        "--lr", type=float, default=None, help="peak learning rate; default: the method's (registry)"
    )
    training.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (Moment-DETR)")
    training.add_argument("--warmup-steps", type=int, default=10)
    training.add_argument("--max-grad-norm", type=float, default=0.1, help="gradient clipping (Moment-DETR)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed and method")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (the tiny model gains nothing from more)"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs") / "grounding")
    parser.add_argument("--save", action="store_true", help="save each trained adapter / trainable tensors")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs whose metrics.json is already in --output-dir (an interrupted or split comparison)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-step logs")
    return parser


# ------------------------------------------------------------------------------------------------- arguments


@dataclass(frozen=True)
class MethodRun:
    """One entry of ``--method``: the registry method, its PVLA weight (0: none) and its name in the tables."""

    name: str
    method: str
    pvla: float


def parse_methods(entries: list[str], pvla: float) -> list[MethodRun]:
    """``--method`` entries -> runs; ``NAME+pvla`` takes ``--pvla`` or the default weight."""
    runs, seen = [], set()
    for entry in entries:
        base = entry[: -len(PVLA_SUFFIX)] if entry.endswith(PVLA_SUFFIX) else entry
        if base not in grounding.GROUNDING_METHODS:
            reason = grounding.NOT_APPLICABLE.get(base)
            raise ValueError(
                f"`--method` {entry!r}: "
                + (
                    f"{base!r} does not apply to the grounding model ({reason})"
                    if reason
                    else "unknown method"
                )
                + f"; choose from {list(grounding.GROUNDING_METHODS)}, each optionally with {PVLA_SUFFIX!r}"
            )
        weight = (pvla or grounding.DEFAULT_PVLA_WEIGHT) if entry.endswith(PVLA_SUFFIX) else pvla
        name = base + (PVLA_SUFFIX if weight else "")
        if name in seen:
            raise ValueError(f"`--method` lists {name!r} twice")
        seen.add(name)
        runs.append(MethodRun(name, base, weight))
    return runs


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before anything is loaded."""
    for name in ("max_steps", "eval_steps", "batch_size", "threads", "max_clips"):
        positive_int(getattr(args, name), "--" + name.replace("_", "-"))
    if args.pvla < 0:
        raise ValueError(f"`--pvla` must be a weight >= 0, got {args.pvla}")
    if args.clip_length is not None and not args.clip_length > 0:
        raise ValueError(f"`--clip-length` must be a number of seconds > 0, got {args.clip_length}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"`--lr` must be > 0, got {args.lr}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"`--seeds` repeats a seed: {args.seeds}")
    parse_methods(args.method, args.pvla)
    if args.backbone not in ("tiny", "scratch") and not (Path(args.backbone) / "config.json").is_file():
        raise FileNotFoundError(
            f"`--backbone` {args.backbone!r} is neither 'tiny', 'scratch' nor a directory with a saved grounding "
            "model (config.json)"
        )
    real = {
        "--train-annotations": args.train_annotations,
        "--eval-annotations": args.eval_annotations,
        "--video-feature-dirs": args.video_feature_dirs,
        "--text-feature-dir": args.text_feature_dir,
    }
    if any(v is not None for v in (*real.values(), args.val_annotations)):
        missing = [flag for flag, value in real.items() if value is None]
        if missing:
            raise ValueError(f"real data needs {missing} as well (got only some of {list(real)})")
        for flag in ("--train-annotations", "--eval-annotations"):
            if not real[flag].is_file():
                raise FileNotFoundError(f"`{flag}` {str(real[flag])!r}: no such file")
        if args.val_annotations is not None and not args.val_annotations.is_file():
            raise FileNotFoundError(f"`--val-annotations` {str(args.val_annotations)!r}: no such file")
        if args.val_annotations is None and not 0 < args.val_fraction < 1:
            raise ValueError(f"`--val-fraction` must be in (0, 1), got {args.val_fraction}")
        for directory in [*args.video_feature_dirs, args.text_feature_dir]:
            if not directory.is_dir():
                raise FileNotFoundError(f"feature directory {str(directory)!r} does not exist")
        if args.format == "qvhighlights" and args.domains is not None:
            raise ValueError(
                f"`--domains` {args.domains} applies to the synthetic world and to YouTube Highlights / TVSum files "
                "(`--format youtube|tvsum`), not to QVHighlights"
            )
    else:
        for name in ("train_videos", "val_videos", "eval_videos"):
            positive_int(getattr(args, name), "--" + name.replace("_", "-"))
        unknown = [d for d in args.domains or () if d not in TARGET_DOMAINS]
        if unknown:
            raise ValueError(
                f"`--domains` {unknown}: the synthetic world's target domains are {list(TARGET_DOMAINS)}"
            )
        if args.clip_length not in (None, 2.0):
            raise ValueError(
                f"`--clip-length` {args.clip_length} does not apply to the synthetic world (2-s clips); it "
                "describes real features"
            )
        if args.format != "qvhighlights":
            raise ValueError(
                f"`--format` {args.format!r} describes annotation files: give `--train-annotations`"
            )


def scorer_of(args: argparse.Namespace) -> str:
    """How the runs are scored and selected: ``--format`` for real data, QVHighlights' scorer for the world."""
    return "qvhighlights" if args.train_annotations is None else args.format


# ------------------------------------------------------------------------------------------------------ data


def carve_validation(dataset: Any, fraction: float) -> tuple[Any, Any]:
    """Split a dataset by whole videos: ``fraction`` of its distinct vids (at least one, fewer than all) go to
    validation, drawn with a fixed seed (0) so every run and seed uses the same split."""
    vids = sorted({r.vid for r in dataset.records})
    if len(vids) < 2:
        raise ValueError(
            f"{dataset.name}: {len(vids)} video(s) cannot be split into training and validation; give "
            "`--val-annotations`"
        )
    count = min(len(vids) - 1, max(1, round(fraction * len(vids))))
    held = set(np.random.default_rng(0).permutation(len(vids))[:count].tolist())
    held_vids = {vids[i] for i in held}

    def subset(keep: bool, name: str):
        records = [r for r in dataset.records if (r.vid in held_vids) != keep]
        return grounding.GroundingDataset(
            records,
            dataset.features,
            clip_length=dataset.clip_length,
            max_clips=dataset.max_clips,
            max_query_tokens=dataset.max_query_tokens,
            name=f"{dataset.name} [{name}]",
        )

    return subset(True, "train"), subset(False, "validation")


def real_splits(args: argparse.Namespace, load: Callable[..., Any]) -> dict[str, Any]:
    """Training, validation (``--val-annotations`` or carved from training) and evaluation data read by ``load``."""
    common = {
        "video_feature_dirs": args.video_feature_dirs,
        "query_feature_dir": args.text_feature_dir,
        "max_clips": args.max_clips,
    }
    if args.clip_length is not None or args.format == "qvhighlights":  # else the highlight loader's own
        common["clip_length"] = args.clip_length or 2.0
    train = load(args.train_annotations, **common)
    if args.val_annotations is not None:
        validation = load(args.val_annotations, **common)
    else:
        train, validation = carve_validation(train, args.val_fraction)
    return {"train": train, "validation": validation, "test": load(args.eval_annotations, **common)}


def load_splits(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    """``{domain: {"train", "validation", "test"}}`` datasets, every record's features read and checked."""
    if args.train_annotations is None:
        encoder = ClipFeatureExtractor(device="cpu")
        sizes = {"train": args.train_videos, "validation": args.val_videos, "test": args.eval_videos}
        splits = {
            domain: {
                split: grounding.build_split(domain, split, n, seed=seed, encoder=encoder)
                for split, n in sizes.items()
            }
            for domain in args.domains or TARGET_DOMAINS
        }
    elif args.format == "qvhighlights":
        splits = {REAL_DOMAIN: real_splits(args, grounding.load_qvhighlights)}
    else:
        domains = args.domains or sorted(
            {str(row.get("domain")) for row in read_jsonl(args.train_annotations)}
        )
        splits = {
            domain: real_splits(
                args, partial(grounding.load_highlight_dataset, kind=args.format, domain=domain)
            )
            for domain in domains
        }
    for domain in splits.values():
        for name, dataset in domain.items():
            dataset.validate()
            if name != "test" and not all(r.has_labels for r in dataset.records):
                raise ValueError(f"{dataset.name}: {name} records need labels (windows / saliency scores)")
        widths = {(d.video_feature_dim, d.text_feature_dim) for d in domain.values()}
        if len(widths) > 1:
            raise ValueError(f"the splits' feature widths differ (video, text): {sorted(widths)}")
    return splits


# ------------------------------------------------------------------------------------------------------- run


def train_and_score(
    args: argparse.Namespace, run: MethodRun, splits: dict[str, Any], seed: int, output_dir: Path
) -> dict[str, Any]:
    """Prepare the backbone with ``run``'s method, train with validation selection, score the evaluation split,
    write its predictions and metrics; return the result row."""
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    torch.manual_seed(seed)
    backbone = grounding.load_grounding_backbone(
        args.backbone, video_feature_dim=train.video_feature_dim, text_feature_dim=train.text_feature_dim
    )
    model = prepare_model(backbone, run.method)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row: dict[str, Any] = {
        "method": run.name,
        "seed": seed,
        "processes": launch_state().num_processes,
        "backbone": args.backbone,
        "pvla_weight": run.pvla,
        "trainable_params": trainable_parameters(model),
        "rebuilt_modules": list(backbone.config.reinitialized_modules),
        "steps": 0,
        "best_step": 0,
        "seconds_per_step": None,
        "train_queries": len(train),
        "eval_queries": len(test),
    }
    if row["trainable_params"] > 0:
        lr = args.lr if args.lr is not None else DEFAULT_LEARNING_RATES[run.method]
        training_args = TrainingArguments(
            output_dir=str(output_dir / "trainer"),
            per_device_train_batch_size=args.batch_size,
            max_steps=args.max_steps,
            learning_rate=lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            lr_scheduler_type="cosine",
            max_grad_norm=args.max_grad_norm,
            logging_steps=args.eval_steps,
            save_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            seed=seed,
            disable_tqdm=args.quiet,
        )
        selection = grounding.ValidationSelection(validation, every=args.eval_steps, scorer=scorer_of(args))
        callbacks: list[Any] = [selection]
        if run.pvla:
            callbacks.append(
                peft_video.PVLACallback(peft_video.PVLALoss(), backbone.pvla_source(), weight=run.pvla)
            )
        trainer = grounding.GroundingTrainer(
            model=model, args=training_args, train_dataset=train, callbacks=callbacks
        )
        if args.quiet:
            trainer.remove_callback(PrinterCallback)
        output = trainer.train()
        steps = trainer.state.global_step
        trainer_dir = output_dir / "trainer"
        if launch_state().is_main_process and trainer_dir.is_dir() and not any(trainer_dir.iterdir()):
            trainer_dir.rmdir()  # nothing is checkpointed: the selection keeps weights in memory
        row.update(
            steps=steps,
            learning_rate=lr,
            train_loss=output.training_loss,
            seconds_per_step=(output.metrics["train_runtime"] - selection.seconds) / max(steps, 1),
            validation_seconds=selection.seconds,
            best_step=selection.best_step,
            validation_metric=selection.metric,
            validation_score=selection.best_score,
            validation_history=selection.history,
        )
        if args.save and launch_state().is_main_process:
            if run.method in SELECTIVE_METHODS:  # only the trainable tensors, not a copy of the backbone
                save_trainable(model, output_dir / "model", method=run.method)
            else:
                model.save_pretrained(str(output_dir / "model"))
    else:
        _, scores = grounding.evaluate_grounding(model.to(device), validation, scorer=scorer_of(args))
        metric = grounding.default_selection_metric(validation, scorer_of(args))
        row.update(validation_metric=metric, validation_score=scores[metric])
    model.to(device)
    start = time.perf_counter()
    predictions, scores = grounding.evaluate_grounding(model, test, scorer=scorer_of(args))
    row.update(scores, eval_seconds=time.perf_counter() - start)
    if launch_state().is_main_process:  # under a multi-process launch, one process writes
        output_dir.mkdir(parents=True, exist_ok=True)
        write_submission(predictions, output_dir / "predictions.jsonl")
        (output_dir / "metrics.json").write_text(json.dumps(row, indent=2, default=float) + "\n")
    return row


def average_over_domains(runs: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """One row per (method, seed): each key's mean over the domains (for the averaged table)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in runs:
        groups.setdefault((row["method"], row["seed"]), []).append(row)
    averaged = []
    for (method, seed), rows in groups.items():
        merged = {"method": method, "seed": seed, "domain": "average", "domains": len(rows)}
        merged["trainable_params"] = rows[0]["trainable_params"]
        for key in keys:
            values = [r[key] for r in rows if r.get(key) is not None]
            merged[key] = statistics.fmean(values) if values else None
        averaged.append(merged)
    return averaged


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed x domain x method; returns the single runs and the keys to aggregate."""
    check_args(args)
    launch_state()  # a multi-process launch that fell back to single processes fails here
    quiet_libraries(args.quiet)
    torch.set_num_threads(args.threads)
    methods = parse_methods(args.method, args.pvla)
    runs = []
    for seed in args.seeds:
        for domain, splits in load_splits(args, seed).items():
            for run in methods:
                began = time.perf_counter()
                run_dir = args.output_dir / domain / f"seed{seed}" / run.name
                if args.resume and (run_dir / "metrics.json").is_file():
                    row = json.loads((run_dir / "metrics.json").read_text())
                else:
                    row = train_and_score(args, run, splits, seed, run_dir)
                    row.update(wall_seconds=time.perf_counter() - began)
                row.update(domain=domain)
                runs.append(row)
                if not launch_state().is_main_process:
                    continue
                shown = "  ".join(
                    f"{title} {row[key]:5.1f}" for key, title in PRINTED if row.get(key) is not None
                )
                print(
                    f"grounding {domain:9s} {run.name:12s} seed {seed}: {shown}  "
                    f"(step {row['best_step']}, {row.get('wall_seconds', 0):.0f} s)",
                    flush=True,
                )
    keys = [*grounding.SCORE_KEYS, grounding.UMT_KEY, grounding.ORDER_KEY, "best_step", "seconds_per_step"]
    return {"runs": runs, "keys": keys}


def table_columns(runs: list[dict[str, Any]]) -> list[Any]:
    """The table's columns, less the scores no run has (e.g. moment scores on highlight-only data)."""
    always = ("method", "trainable_params", "seconds_per_step")
    return [
        c
        for c in grounding.GROUNDING_COLUMNS
        if c.key in always or any(row.get(c.key) is not None for row in runs)
    ]


def write_tables(runs: list[dict[str, Any]], keys: list[str], output_dir: Path, title: str) -> None:
    """Per-domain tables (``<output_dir>/<domain>/``) and, for several domains, the table averaged over them
    (``<output_dir>/``): results.json, results.md (mean and min-max over seeds), scores_vs_params.png."""
    domains = list(dict.fromkeys(row["domain"] for row in runs))
    columns = table_columns(runs)
    for domain in domains:
        domain_runs = [row for row in runs if row["domain"] == domain]
        rows = aggregate_seeds(domain_runs, keys)
        write_results(
            rows,
            output_dir / domain,
            columns,
            grounding.GROUNDING_SERIES,
            title=f"{title}: {domain}",
            runs=domain_runs,
        )
        print(f"\n### {title}: {domain}\n\n{markdown_table(rows, columns)}")
    if len(domains) > 1:
        averaged = average_over_domains(runs, keys)
        rows = aggregate_seeds(averaged, keys)
        write_results(
            rows,
            output_dir,
            columns,
            grounding.GROUNDING_SERIES,
            title=f"{title}: mean over {len(domains)} domains",
            runs=averaged,
        )
        print(f"\n### {title}: mean over {', '.join(domains)}\n\n{markdown_table(rows, columns)}")


# ------------------------------------------------------------------------------------------------------ demo

DEMO_METHODS = ("frozen", "full", "lora", "adapter", "read", "read+pvla")
DEMO_DOMAIN = "approach"
DEMO_BUDGET = {"max_steps": 100, "eval_steps": 20, "train_videos": 40, "val_videos": 20, "eval_videos": 60}
DEMO_QUICK = {"max_steps": 20, "eval_steps": 10, "train_videos": 12, "val_videos": 6, "eval_videos": 12}


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
    """The demo's grounding part (``recipes/demo.py``): the shipped tiny grounding model adapted to one target domain
    (``approach``: moves towards / away from another shape, new to the model) with each of :data:`DEMO_METHODS`
    for the same steps per seed, selected on validation; returns the runs and the table's columns and series."""
    budget = dict(DEMO_QUICK if quick else DEMO_BUDGET)
    if max_steps is not None:
        budget["max_steps"] = max_steps
    chosen = [m for m in DEMO_METHODS if methods is None or m in methods]
    argv = [
        *("--method", *chosen, "--domains", DEMO_DOMAIN, "--threads", str(threads)),
        *("--seeds", *map(str, seeds), "--output-dir", str(output_dir)),
        *(f"--{key.replace('_', '-')}={value}" for key, value in budget.items()),
        *(["--quiet"] if quiet else []),
    ]
    result = run_all(build_parser().parse_args(argv))
    return {
        "runs": result["runs"],
        "keys": result["keys"],
        "columns": table_columns(result["runs"]),
        "series": grounding.GROUNDING_SERIES,
        "title": f"temporal grounding ({DEMO_DOMAIN}), {budget['max_steps']} steps per method",
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    result = run_all(args)
    if launch_state().is_main_process:
        write_tables(result["runs"], result["keys"], args.output_dir, "temporal grounding")
        print(f"results in {args.output_dir}/")
    return result["runs"]


if __name__ == "__main__":
    run_recipe(main)
