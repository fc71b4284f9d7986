"""Report a comparison of methods, for every task: a results JSON, a markdown table and a results figure.

Each task names its own columns (``Column``) and plotted scores (``Series``); this module aggregates runs over seeds
(mean and spread), formats the table and draws score against trainable parameters with matplotlib (headless Agg).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Column:
    """One table column: the result key, its title, and how a value prints."""

    key: str
    title: str
    fmt: Callable[[Any], str] = str


@dataclass(frozen=True)
class Series:
    """One plotted score: the result key, the factor to percent (1 for percent already, 100 for fractions), a label,
    and the chance level in percent (drawn as a dashed line; None for none)."""

    key: str
    scale: float
    label: str
    chance: float | None = None


def count(value: Any) -> str:
    """Thousands-separated integer (parameter counts)."""
    return f"{int(value):,}"


def fixed(digits: int, scale: float = 1.0) -> Callable[[Any], str]:
    """Formatter of a number with ``digits`` decimals after multiplying by ``scale``."""
    return lambda value: f"{scale * float(value):.{digits}f}"


SPREAD_SUFFIX = "_std"
SEEDS_KEY = "seeds"


def aggregate_seeds(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], by: str = "method"
) -> list[dict[str, Any]]:
    """One row per ``by`` value (in first-seen order): each numeric key in ``keys`` becomes the mean over the runs,
    with its sample standard deviation under ``<key>_std`` (0 for a single run), its range under ``<key>_min`` /
    ``<key>_max`` and the run values under ``<key>_runs``; other fields are taken from the first run, and ``seeds``
    counts the runs."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        if by not in row:
            raise ValueError(f"every result row needs `{by}`; got a row with keys {sorted(row)}")
        groups.setdefault(row[by], []).append(row)
    summary = []
    for runs in groups.values():
        merged = dict(runs[0])
        merged[SEEDS_KEY] = len(runs)
        for key in keys:
            values = [float(run[key]) for run in runs if run.get(key) is not None]
            if not values:
                merged[key] = None
                continue
            merged[key] = statistics.fmean(values)
            merged[key + SPREAD_SUFFIX] = statistics.stdev(values) if len(values) > 1 else 0.0
            merged[key + "_min"], merged[key + "_max"] = min(values), max(values)
            merged[key + "_runs"] = values
        summary.append(merged)
    return summary


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table with one row per result. A value aggregated over several seeds (:func:`aggregate_seeds`)
    prints as ``mean (min–max)``, the range over the seeds; a missing or None value prints as an em dash."""
    lines = ["| " + " | ".join(c.title for c in columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column.key)
            if value is None:
                cells.append("—")
                continue
            cell = column.fmt(value)
            low, high = row.get(column.key + "_min"), row.get(column.key + "_max")
            if low is not None and high is not None and row.get(SEEDS_KEY, 1) > 1:
                cell += f" ({column.fmt(low)}–{column.fmt(high)})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    rows: Sequence[dict[str, Any]],
    output_dir: str | Path,
    columns: Sequence[Column],
    series: Sequence[Series],
    title: str = "",
    runs: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``results.json`` (``rows``, and every single run under ``runs`` when given), ``results.md`` and
    ``scores_vs_params.png`` into ``output_dir``; return the paths."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output / "results.json",
        "markdown": output / "results.md",
        "plot": output / "scores_vs_params.png",
    }
    payload: Any = list(rows) if runs is None else {"summary": list(rows), "runs": list(runs)}
    paths["json"].write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
    paths["markdown"].write_text((f"### {title}\n\n" if title else "") + markdown_table(rows, columns))
    plot_scores_vs_parameters(rows, paths["plot"], series, title=title)
    return paths


def plot_scores_vs_parameters(
    rows: Sequence[dict[str, Any]], path: str | Path, series: Sequence[Series], title: str = ""
) -> Path:
    """Scores (percent) against trainable parameters on a log axis, one marker per method and series, error bars for
    the spread over seeds, method labels placed so they do not overlap, a legend and each series' chance line.
    Methods with no trainable parameters sit at a tick labelled "0" at the left."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    counts = [int(row.get("trainable_params") or 0) for row in rows]
    positive = [c for c in counts if c > 0] or [1]
    low = 10 ** math.floor(math.log10(min(positive)) - 1)
    xs = [c if c > 0 else low for c in counts]
    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    axes.set_xscale("log")
    axes.set_xlim(low / 2, max(xs) * 4)
    axes.set_ylim(0, 105)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels: list[tuple[float, float, str, str]] = []
    for index, line in enumerate(series):
        colour = colours[index % len(colours)]
        points = [
            (
                x,
                float(row[line.key]) * line.scale,
                float(row.get(line.key + SPREAD_SUFFIX) or 0) * line.scale,
                row,
            )
            for x, row in zip(xs, rows, strict=True)
            if row.get(line.key) is not None
        ]
        if not points:
            continue
        axes.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            fmt="o",
            color=colour,
            capsize=3,
            label=line.label,
        )
        if line.chance is not None:
            axes.axhline(
                line.chance, color=colour, linestyle="--", linewidth=1, label=f"{line.label}: chance"
            )
        labels.extend((x, y, str(row.get("method", "")), colour) for x, y, _, row in points)
    placed: list[tuple[float, float]] = []  # label anchors in display points, to keep labels apart
    for x, y, text, colour in sorted(labels, key=lambda item: -item[1]):
        _label(axes, x, y, text, colour, placed, points_per_pixel=72 / figure.dpi)
    exponents = range(round(math.log10(low)) + 1, math.ceil(math.log10(max(xs) * 4)))
    axes.set_xticks([low, *(10.0**k for k in exponents)], ["0", *(f"$10^{{{k}}}$" for k in exponents)])
    axes.minorticks_off()
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel("score (%)")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def _label(
    axes: Any,
    x: float,
    y: float,
    text: str,
    colour: str,
    placed: list[tuple[float, float]],
    points_per_pixel: float,
) -> None:
    """Annotate (x, y) with ``text``, moving the label down in 9-point steps until it clears the labels already
    placed (a label is about 6 points per character wide and 9 points high at this font size)."""
    px, py = (points_per_pixel * v for v in axes.transData.transform((x, y)))
    width = 6 * len(text)
    offset = 0.0
    while any(abs(px - qx) < max(width, 40) and abs(py - offset - qy) < 9 for qx, qy in placed):
        offset += 9
    placed.append((px, py - offset))
    axes.annotate(
        text, (x, y), xytext=(6, -offset), textcoords="offset points", fontsize=8, color=colour, va="center"
    )
