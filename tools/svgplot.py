"""Small dependency-free SVG line plots for the study scripts under ``tools/`` (no matplotlib in the environment).

from svgplot import line_plot
line_plot({"GroupViT": [(0, 0.1), (1, 0.3)]}, Path("docs/images/x.svg"), "title", "x label", "y label")
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["line_plot"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + step * index for index in range(count)]


def line_plot(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    title: str,
    x_label: str,
    y_label: str,
    *,
    y_range: tuple[float, float] | None = None,
    width: int = 560,
    height: int = 320,
) -> None:
    """Write one polyline per series (legend at the line ends) to ``path``.

    Args:
        series: ``name -> [(x, y), ...]`` in drawing order.
        path: The ``.svg`` file (parent folders are created).
        title, x_label, y_label: Texts.
        y_range: Fixed ``(low, high)`` of the y axis; default: the data's range.
        width, height: Canvas size in pixels.
    """
    margin = 56
    xs = sorted({x for points in series.values() for x, _ in points})
    ys = [y for points in series.values() for _, y in points]
    x_low, x_high = xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1
    y_low, y_high = y_range if y_range is not None else (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)

    def px(x: float) -> float:
        return margin + (width - 2 * margin) * (x - x_low) / (x_high - x_low)

    def py(y: float) -> float:
        return height - margin - (height - 2 * margin) * (y - y_low) / (y_high - y_low)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{margin}" y1="{py(y_low)}" x2="{width - margin}" y2="{py(y_low)}" stroke="black"/>',
        f'<line x1="{margin}" y1="{py(y_low)}" x2="{margin}" y2="{py(y_high)}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{x_label}</text>',
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">{y_label}</text>',
    ]
    for tick in _ticks(y_low, y_high):
        parts.append(f'<text x="{margin - 6}" y="{py(tick) + 4}" text-anchor="end">{tick:.3g}</text>')
        parts.append(f'<line x1="{margin}" y1="{py(tick)}" x2="{width - margin}" y2="{py(tick)}" stroke="#ddd"/>')
    shown = xs if len(xs) <= 12 else _ticks(x_low, x_high, 6)
    for x in shown:
        parts.append(f'<text x="{px(x)}" y="{py(y_low) + 16}" text-anchor="middle">{x:.4g}</text>')
    for number, (name, points) in enumerate(series.items()):
        colour = COLOURS[number % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - margin + 4}" y="{py(points[-1][1]) + 4 + 12 * number}" fill="{colour}">')
        parts.append(f"{name}</text>")
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
