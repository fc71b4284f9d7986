"""The demo: train and evaluate every method on the synthetic video-text world, then print the comparison table.

    python recipes/demo.py              # every method, a few minutes on 2 CPU cores; results in outputs/demo/
    python recipes/demo.py --quick      # a reduced run (what tests/test_demo.py checks)

Each method fine-tunes the shipped tiny CLIP (pretrained on still frames only) for the same number of steps on
videos of moving, growing, appearing shapes, and is scored on held-out (colour, shape, event) combinations: t2v R@1
and the accuracy on order-only pairs (a clip and its time-reversal, captions that differ only in temporal order).
Frame-wise methods with mean pooling give a clip and its reversal the same embedding, so they sit at 50% there.
Every trained method also trains the text tower's word embeddings (the retrieval recipe's default): the event words
(moves, grows, appears, ...) never occur in the still-frame captions the tiny CLIP was pretrained on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from peft_video.tasks.cli import quiet_libraries, run_recipe
from peft_video.tasks.report import aggregate_seeds, markdown_table, write_results
from peft_video.tasks.retrieval import RETRIEVAL_COLUMNS, RETRIEVAL_SERIES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_video_retrieval import build_parser, run  # noqa: E402  (the single-method recipe beside this file)

METHODS = ("frozen", "full", "lora", "adapter", "read", "rap", "token_mix", "read+pvla")
FULL = {"train_videos": 1024, "eval_videos": 256, "max_steps": 600}
QUICK = {"train_videos": 512, "eval_videos": 128, "max_steps": 300}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced run: fewer videos and steps")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-steps", type=int, default=None, help="override the steps per method")
    parser.add_argument("--pvla-weight", type=float, default=0.1, help="PVLA weight of the read+pvla row")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: these tiny models gain nothing from more, and lose a lot on a busy machine)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds to run every method with; with several, the table gives the mean and (min–max) over them",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs") / "demo")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    args = parser.parse_args(argv)
    quiet_libraries(args.quiet)
    budget = dict(QUICK if args.quick else FULL)
    if args.max_steps is not None:
        budget["max_steps"] = args.max_steps

    runs, start = [], time.perf_counter()
    for seed in args.seeds:
        for method in args.methods:
            base, pvla = (method.split("+")[0], args.pvla_weight) if "+pvla" in method else (method, 0.0)
            run_args = build_parser().parse_args(
                [
                    *("--method", base, "--pvla", str(pvla), "--seed", str(seed)),
                    *("--threads", str(args.threads), "--max-steps", str(budget["max_steps"])),
                    *(
                        "--train-videos",
                        str(budget["train_videos"]),
                        "--eval-videos",
                        str(budget["eval_videos"]),
                    ),
                    *("--output-dir", str(args.output_dir / f"seed{seed}" / method)),
                    *(["--quiet"] if args.quiet else []),
                ]
            )
            began = time.perf_counter()
            row = run(run_args)
            row.update(method=method, seed=seed, wall_seconds=time.perf_counter() - began)
            runs.append(row)
            print(
                f"{method:10s} seed {seed}: order-only v2t {100 * row.get('order_v2t', float('nan')):5.1f}%  "
                f"t2v R@1 {row['t2v_R@1']:5.1f}%  ({row['wall_seconds']:.0f} s)",
                flush=True,
            )
    rows = aggregate_seeds(runs, ["t2v_R@1", "order_v2t", "order_t2v", "seconds_per_step"])

    total = time.perf_counter() - start
    title = (
        f"peft-video demo: {len(rows)} methods x {len(args.seeds)} seed(s), {budget['max_steps']} steps each, "
        f"{total:.0f} s in all"
    )
    paths = write_results(rows, args.output_dir, RETRIEVAL_COLUMNS, RETRIEVAL_SERIES, title=title, runs=runs)
    print()
    print(markdown_table(rows, RETRIEVAL_COLUMNS))
    print(f"{title}; results, table and plot in {args.output_dir}/ ({paths['plot'].name})")


if __name__ == "__main__":
    run_recipe(main)
