"""Report a comparison of methods: a results JSON, a markdown table and a PNG plot of accuracy against parameters.

The plot is drawn with Pillow (already needed for image and video loading), so reporting adds no dependency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

TABLE_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("method", "method", str),
    ("trainable_params", "trainable params", "{:,}".format),
    ("t2v_R@1", "t2v R@1 (%)", "{:.1f}".format),
    ("order_v2t", "order-only acc. (%)", lambda fraction: f"{100 * fraction:.1f}"),
    ("seconds_per_step", "s / step", "{:.3f}".format),
)
"""(result key, column title, formatter) of the comparison table."""


def markdown_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str]]] = TABLE_COLUMNS
) -> str:
    """A markdown table with one row per result; a missing or None value prints as an em dash."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = ["—" if row.get(key) is None else fmt(row[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict[str, Any]], output_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``accuracy_vs_params.png`` into ``output_dir``; return the paths."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output / "results.json",
        "markdown": output / "results.md",
        "plot": output / "accuracy_vs_params.png",
    }
    paths["json"].write_text(json.dumps(list(rows), indent=2, sort_keys=True) + "\n")
    paths["markdown"].write_text((f"### {title}\n\n" if title else "") + markdown_table(rows))
    plot_accuracy_vs_parameters(rows, paths["plot"], title=title)
    return paths


_SERIES = (
    ("t2v_R@1", 0.01, "t2v R@1", (40, 90, 200)),
    ("order_v2t", 1.0, "order-only accuracy", (210, 70, 40)),
)


def plot_accuracy_vs_parameters(
    rows: Sequence[dict[str, Any]], path: str | Path, title: str = "", size: tuple[int, int] = (720, 460)
) -> Path:
    """Scatter t2v R@1 and order-only accuracy (0-100%) against trainable parameters (log scale), one labelled
    point per method; methods with no trainable parameters sit at the left edge."""
    width, height = size
    left, right, top, bottom = 70, 170, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    counts = [max(int(r.get("trainable_params") or 0), 1) for r in rows]
    lo = math.floor(math.log10(min(counts))) if counts else 0
    hi = max(math.ceil(math.log10(max(counts))) if counts else 1, lo + 1)

    def px(count: int) -> float:
        return x0 + (math.log10(max(count, 1)) - lo) / (hi - lo) * (x1 - x0)

    def py(fraction: float) -> float:
        return y0 - fraction * (y0 - y1)

    draw.rectangle([x0, y1, x1, y0], outline="black")
    for tick in range(0, 101, 25):
        y = py(tick / 100)
        draw.line([x0 - 4, y, x0, y], fill="black")
        draw.line([x0, y, x1, y], fill=(225, 225, 225))
        draw.text((x0 - 30, y - 6), f"{tick}%", fill="black", font=font)
    has_zero = any(not r.get("trainable_params") for r in rows)
    for exponent in range(lo, hi + 1):
        x = px(10**exponent)
        draw.line([x, y0, x, y0 + 4], fill="black")
        label = (
            "0" if exponent == lo == 0 and has_zero else f"1e{exponent}"
        )  # 0 parameters sit at the left edge
        draw.text((x - 12, y0 + 8), label, fill="black", font=font)
    draw.line([x0, py(0.5), x1, py(0.5)], fill=(210, 70, 40))  # order-only chance
    draw.text((x1 + 4, py(0.5) - 6), "order chance", fill=(210, 70, 40), font=font)
    draw.text((x0 + (x1 - x0) // 2 - 60, height - 28), "trainable parameters (log)", fill="black", font=font)
    if title:
        draw.text((x0, 12), title, fill="black", font=font)
    labels: list[tuple[float, float]] = []  # where labels went, to move overlapping ones down a line
    for key, scale, _, colour in _SERIES:
        for row, count in zip(rows, counts, strict=True):
            value = row.get(key)
            if value is None:
                continue
            x, y = px(count), py(float(value) * scale)
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
            ty = y - 6
            while any(abs(lx - x) < 60 and abs(ly - ty) < 11 for lx, ly in labels):
                ty += 11
            labels.append((x, ty))
            draw.text((x + 7, ty), str(row.get("method", "")), fill=colour, font=font)
    for i, (_, _, label, colour) in enumerate(_SERIES):
        draw.ellipse([x1 + 10, y1 + 10 + 18 * i, x1 + 20, y1 + 20 + 18 * i], fill=colour)
        draw.text((x1 + 26, y1 + 9 + 18 * i), label, fill="black", font=font)
    image.save(path)
    return Path(path)
