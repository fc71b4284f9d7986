"""Extract one CLIP feature per clip of your videos (and text features of queries) for grounding / summarization.

Writes Moment-DETR's layout (``{vid}.npz`` with ``features``; queries as ``qid{qid}.npz`` with ``last_hidden_state``
and ``pooler_output``) or VG-GPLMs' How2 layout (``{id}.npy``). Resumable: files already written are skipped. ::

    python recipes/extract_features.py --videos videos/ --output-dir features/clip_features \\
        --backbone openai/clip-vit-base-patch32 --queries highlight_val_release.jsonl
    python recipes/extract_features.py --videos a.mp4 frames_b/ --fps 30 --output-dir how2_feats --layout how2 \\
        --backbone open_clip:ViT-B-32 --pretrained openai --skip-bad-videos

Frame folders (folders of images, one per frame) need ``--fps``. Query features go to ``--text-output-dir``
(default: ``<output-dir>/text``). Bad input ends with one line on stderr and exit code 2; with
``--skip-bad-videos`` unreadable videos are skipped, counted and listed instead (exit code 0).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from peft_video.tasks.cli import quiet_libraries, run_recipe
from peft_video.tasks.features import (
    LAYOUTS,
    ClipFeatureExtractor,
    collect_videos,
    extract_text_features,
    extract_video_features,
    read_queries,
)


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--videos", nargs="+", default=None, help="video files, frame folders, or directories of them"
    )
    parser.add_argument("--output-dir", required=True, help="where the video feature files go")
    parser.add_argument("--layout", choices=LAYOUTS, default="moment_detr")
    parser.add_argument(
        "--backbone",
        default=None,
        help="HF CLIP id or local path, or open_clip:<name>; default: the shipped tiny CLIP",
    )
    parser.add_argument("--pretrained", default=None, help="open_clip weights (tag or checkpoint file)")
    parser.add_argument("--clip-length", type=float, default=2.0, help="seconds per clip (QVHighlights: 2)")
    parser.add_argument(
        "--frames-per-clip", type=int, default=1, help="frames averaged per clip (1: its centre)"
    )
    parser.add_argument("--fps", type=float, default=None, help="frames per second of frame folders")
    parser.add_argument(
        "--queries", default=None, help="a .jsonl of {qid, query} records (e.g. QVHighlights')"
    )
    parser.add_argument(
        "--text-output-dir", default=None, help="where qid{qid}.npz go; default <output-dir>/text"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="frames (or queries) per forward pass")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--normalize", action="store_true", help="store L2-normalised rows (default: raw)")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="processes decoding videos ahead of the model"
    )
    parser.add_argument("--skip-bad-videos", action="store_true", help="skip and list unreadable videos")
    parser.add_argument("--overwrite", action="store_true", help="rewrite files that exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (for CI logs)")
    return parser


def run(args: argparse.Namespace) -> None:
    """Extract what ``args`` asks for, printing a summary line per kind of feature."""
    if args.videos is None and args.queries is None:
        raise ValueError("nothing to do: give --videos, --queries, or both")
    # check the input before loading a model
    videos = collect_videos(args.videos) if args.videos is not None else None
    queries = read_queries(args.queries) if args.queries is not None else None
    folders = [str(path) for path in (videos or {}).values() if path.is_dir()]
    if folders and args.fps is None:
        raise ValueError(f"frame folders need --fps (their frames per second): {', '.join(folders)}")
    extractor = ClipFeatureExtractor(
        args.backbone,
        pretrained=args.pretrained,
        clip_length=args.clip_length,
        frames_per_clip=args.frames_per_clip,
        batch_size=args.batch_size,
        device=args.device,
        normalize=args.normalize,
        dtype=args.dtype,
    )
    progress = not args.quiet
    if videos is not None:
        report = extract_video_features(
            videos,
            args.output_dir,
            args.layout,
            extractor=extractor,
            fps=args.fps,
            skip_bad=args.skip_bad_videos,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
            progress=progress,
        )
        print(f"video features: {report.summary()}")  # each skipped video was also logged with its reason
    if queries is not None:
        text_dir = args.text_output_dir or str(Path(args.output_dir) / "text")
        report = extract_text_features(
            queries, text_dir, extractor=extractor, overwrite=args.overwrite, progress=progress
        )
        print(f"text features: {report.summary()}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and extract; errors propagate to :func:`peft_video.tasks.cli.run_recipe`, which ends
    the process with one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # skipped videos are logged as warnings
    args = build_parser().parse_args(argv)
    quiet_libraries(args.quiet)
    run(args)


if __name__ == "__main__":
    run_recipe(main)
