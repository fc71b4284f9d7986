"""The demo: every task's comparison of methods on its synthetic world, in a reduced form, with the shipped tiny
pretrained backbones; nothing is downloaded.

    python recipes/demo.py                          # every task, seed 0 (README's first command); outputs/demo/
    python recipes/demo.py --seeds 0 1 2            # the runs behind README's tables (mean and range over seeds)
    python recipes/demo.py --tasks retrieval --quick  # a reduced run of one task (what tests/test_demo.py checks)

Each task's part lives beside its recipe (a ``demo()`` function in ``recipes/<task recipe>.py``): it trains every
method it compares for the same budget and scores it on held-out data. Retrieval: the shipped tiny CLIP (pretrained on
still frames only) on videos of moving, growing, appearing shapes, scored by t2v R@1 and order-only pairs (a clip and
its time-reversal; frame-wise methods with mean pooling sit at exactly 50% there). Grounding: the shipped tiny
grounding model adapted to a synthetic target domain of 40 training videos, scored by moment retrieval R1 / mAP and
highlight mAP / Hit1 (QVHighlights' definitions) after selecting each run's step on validation.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from peft_video.tasks.cli import quiet_libraries, run_recipe
from peft_video.tasks.report import aggregate_seeds, markdown_table, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASK_RECIPES: dict[str, str] = {
    "retrieval": "text_video_retrieval",
    "grounding": "temporal_grounding",
    "summarization": "video_summarization",
    "captioning": "video_captioning",
}
"""Each task of the demo and the recipe module (beside this file) whose ``demo()`` runs its part."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASK_RECIPES), choices=list(TASK_RECIPES))
    parser.add_argument("--quick", action="store_true", help="reduced runs: fewer videos and steps")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="only these methods (names as in the tables)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="override every task's steps per method")
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
        help="seeds to run every method with; with several, the tables give the mean and (min–max) over them",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs") / "demo")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.quiet)
    start = time.perf_counter()
    for task in args.tasks:
        began = time.perf_counter()
        part = importlib.import_module(TASK_RECIPES[task]).demo(
            seeds=args.seeds,
            quick=args.quick,
            quiet=args.quiet,
            threads=args.threads,
            output_dir=args.output_dir / task,
            methods=args.methods,
            max_steps=args.max_steps,
        )
        rows = aggregate_seeds(part["runs"], part["keys"])
        title = f"{part['title']}, {len(args.seeds)} seed(s), {time.perf_counter() - began:.0f} s"
        paths = write_results(
            rows, args.output_dir / task, part["columns"], part["series"], title, runs=part["runs"]
        )
        print(f"\n### {title}\n\n{markdown_table(rows, part['columns'])}")
        print(f"results, table and plot in {paths['json'].parent}/", flush=True)
    print(f"\npeft-video demo: {', '.join(args.tasks)} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run_recipe(main)
