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
import subprocess
import sys
import time
from pathlib import Path

from peft_video.tasks.cli import positive_int, quiet_libraries, run_recipe
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
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="tasks run side by side in this many processes, each on --threads threads (2 fills a 2-core machine; "
        "1 runs them one after another in this process)",
    )
    return parser


def demo_method_names(task: str) -> tuple[str, ...]:
    """The names of the rows a task's demo part runs (what ``--methods`` chooses from)."""
    module = importlib.import_module(TASK_RECIPES[task])
    if hasattr(module, "DEMO_METHODS"):
        return tuple(module.DEMO_METHODS)
    return tuple(label for label, _ in module.DEMO_RUNS)


def tasks_for_methods(tasks: list[str], methods: list[str]) -> list[str]:
    """The tasks that run at least one of ``methods``; a task that runs none is left out with a line saying so, and a
    name no task runs is an error naming it and every task's rows."""
    names = {task: demo_method_names(task) for task in tasks}
    unknown = [m for m in methods if not any(m in rows for rows in names.values())]
    if unknown:
        rows = "; ".join(f"{task}: {', '.join(rows)}" for task, rows in names.items())
        raise ValueError(f"`--methods` got {unknown}, which no chosen task's demo runs ({rows})")
    kept = [task for task in tasks if any(m in names[task] for m in methods)]
    for task in tasks:
        if task not in kept:
            print(f"demo: {task} left out: it runs none of --methods ({', '.join(names[task])})", flush=True)
    return kept


def run_task(task: str, args: argparse.Namespace) -> None:
    """Run one task's ``demo()`` part, write its results and print its table."""
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


def run_in_processes(argv: list[str], args: argparse.Namespace) -> None:
    """Each task in a child process running this script with ``--tasks <task> --jobs 1``, ``args.jobs`` at a time,
    longest first (the order of ``TASK_RECIPES``); a child that fails stops the demo with its task named."""
    waiting = list(args.tasks)
    running: dict[str, subprocess.Popen] = {}
    failed: list[str] = []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            task = waiting.pop(0)
            command = [sys.executable, str(Path(__file__).resolve()), *argv, "--tasks", task, "--jobs", "1"]
            running[task] = subprocess.Popen(command)
        time.sleep(0.2)
        for task, process in list(running.items()):
            if process.poll() is not None:
                del running[task]
                if process.returncode != 0:
                    failed.append(f"{task} (exit code {process.returncode})")
    if failed:
        failed.sort(key=lambda line: args.tasks.index(line.split(" ", 1)[0]))
        raise RuntimeError(f"demo part(s) failed: {', '.join(failed)}; their errors are printed above")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    positive_int(args.jobs, "--jobs")
    positive_int(args.threads, "--threads")
    if args.max_steps is not None:
        positive_int(args.max_steps, "--max-steps")
    quiet_libraries(args.quiet)
    start = time.perf_counter()
    if args.methods is not None:
        args.tasks = tasks_for_methods(args.tasks, args.methods)
    if args.jobs > 1 and len(args.tasks) > 1:
        run_in_processes(_without_tasks_and_jobs(argv), args)
    else:
        for task in args.tasks:
            run_task(task, args)
    print(f"\npeft-video demo: {', '.join(args.tasks)} in {time.perf_counter() - start:.0f} s")


def _without_tasks_and_jobs(argv: list[str]) -> list[str]:
    """``argv`` without its ``--tasks`` and ``--jobs`` options (the children get their own)."""
    kept: list[str] = []
    skipping = False
    for item in argv:
        if item.startswith("--"):
            name = item.split("=", 1)[0]
            skipping = name in ("--tasks", "--jobs") and "=" not in item
            if name in ("--tasks", "--jobs"):
                continue
        elif skipping:
            continue
        kept.append(item)
    return kept


if __name__ == "__main__":
    run_recipe(main)
