"""A self-contained HTML report of an evaluation: the results table and image / ground truth / prediction overlays.

Pictures are embedded as base64 PNG, so the file can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "ReportRow",
    "class_colors",
    "colorize",
    "instance_overlay",
    "legend_image",
    "overlay",
    "png_data_uri",
    "write_report",
]

# Distinct colours for user-given class lists (label 0 first); cycled past their number.
_DISTINCT = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ReportRow:
    """One image of the report: the picture, its ground truth and each method's prediction (label maps)."""

    image_id: str
    image: U8
    ground_truth: npt.NDArray[np.integer]
    predictions: Mapping[str, U8]


def class_colors(num_classes: int) -> npt.NDArray[np.uint8]:
    """A ``(256, 3)`` colour table for ``num_classes`` labels (255 = light grey for ignore)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for label in range(min(num_classes, 255)):
        table[label] = _DISTINCT[label % len(_DISTINCT)]
    table[255] = (224, 224, 192)
    return table


def legend_image(picture: U8, entries: Sequence[tuple[str, tuple[int, int, int]]], *, min_width: int = 320) -> U8:
    """``picture`` (upscaled to at least ``min_width`` wide, nearest) with a legend of coloured names below it."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(picture)
    if image.width < min_width:
        factor = -(-min_width // image.width)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    line_height, swatch = 16, 11
    columns = max(1, image.width // 160)
    rows = -(-len(entries) // columns) if entries else 0
    canvas = Image.new("RGB", (image.width, image.height + rows * line_height + 8), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, color) in enumerate(entries):
        x = 4 + (i % columns) * (image.width // columns)
        y = image.height + 4 + (i // columns) * line_height
        draw.rectangle((x, y + 2, x + swatch, y + 2 + swatch), fill=color)
        draw.text((x + swatch + 4, y), name, fill=(20, 20, 20))
    return np.asarray(canvas, dtype=np.uint8).copy()


def colorize(labels: npt.NDArray[np.integer], colors: npt.NDArray[np.uint8]) -> U8:
    """``(H, W)`` label ids to ``(H, W, 3)`` colours; ``colors`` is a ``(256, 3)`` table (255 = ignore colour)."""
    colored: U8 = colors[np.clip(labels, 0, 255).astype(np.uint8)]
    return colored


def overlay(image: U8, labels: npt.NDArray[np.integer], colors: npt.NDArray[np.uint8], alpha: float = 0.55) -> U8:
    """The image with its label colours blended over it."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(labels, colors).astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def instance_overlay(
    image: U8,
    masks: npt.NDArray[np.bool_],
    colors: npt.NDArray[np.uint8],
    alpha: float = 0.6,
) -> U8:
    """The image with each instance mask filled in its colour and outlined; earlier masks are drawn on top.

    Args:
        image: ``(H, W, 3)`` uint8.
        masks: ``(N, H, W)`` bool, best first (the first mask wins where masks overlap).
        colors: ``(N, 3)`` uint8, one colour per instance.
        alpha: Fill opacity.
    """
    picture = image.astype(np.float32)
    for mask, color in zip(masks[::-1], colors[::-1], strict=True):  # the best last, so on top
        if not mask.any():
            continue
        picture[mask] = (1 - alpha) * picture[mask] + alpha * color.astype(np.float32)
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        picture[mask & ~inner] = color.astype(np.float32)
    return np.clip(picture, 0, 255).astype(np.uint8)


def png_data_uri(array: U8, scale: int = 1) -> str:
    """An ``(H, W, 3)`` uint8 array as a ``data:image/png;base64,...`` URI, upscaled by ``scale`` (nearest)."""
    from PIL import Image

    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} p.meta{color:#666;margin:0 0 16px}
table.results{border-collapse:collapse} table.results td,table.results th{padding:4px 12px;border-bottom:1px solid #ddd;
text-align:right} table.results th:first-child,table.results td:first-child{text-align:left}
.grid{display:grid;gap:10px 6px;align-items:start}
.grid figure{margin:0} .grid figcaption{font-size:12px;color:#555;text-align:center}
.grid img{width:100%;image-rendering:pixelated;border-radius:3px}
.legend span{display:inline-block;margin:2px 10px 2px 0;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
"""


def write_report(
    path: str | Path,
    *,
    title: str,
    subtitle: str,
    columns: Sequence[str],
    table: Sequence[Sequence[str]],
    rows: Sequence[ReportRow],
    class_names: Sequence[str],
    colors: npt.NDArray[np.uint8],
    scale: int = 3,
) -> Path:
    """Write the report.

    Args:
        path: Output HTML file.
        title: Page title.
        subtitle: One line under the title (data, model, protocol).
        columns: Header of the results table.
        table: Its rows (already formatted strings).
        rows: Images to show.
        class_names: Label names, position = id (for the legend).
        colors: ``(256, 3)`` colour of each label id.
        scale: Upscaling of the pictures (nearest neighbour).
    """
    path = Path(path)
    esc = html.escape
    methods = list(rows[0].predictions) if rows else []
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in table)
    maps = [label_map for row in rows for label_map in (row.ground_truth, *row.predictions.values())]
    present = sorted({int(v) for labels in maps for v in np.unique(labels) if v != 255 and v < len(class_names)})
    legend = "".join(
        f'<span><i style="background:rgb{tuple(int(c) for c in colors[i])}"></i>{esc(class_names[i])}</span>'
        for i in present
    )
    figures: list[str] = []
    for row in rows:
        cells = [("image", row.image), ("ground truth", overlay(row.image, row.ground_truth, colors))]
        cells += [(name, overlay(row.image, pred, colors)) for name, pred in row.predictions.items()]
        figures.extend(
            f'<figure><img alt="{esc(row.image_id)} {esc(label)}" src="{png_data_uri(picture, scale)}">'
            f"<figcaption>{esc(row.image_id)}: {esc(label)}</figcaption></figure>"
            for label, picture in cells
        )
    grid_columns = 2 + len(methods)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_STYLE}</style></head>
<body><h1>{esc(title)}</h1><p class="meta">{esc(subtitle)}</p>
<h2>Results</h2><table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Predictions</h2><div class="legend">{legend}</div>
<div class="grid" style="grid-template-columns:repeat({grid_columns},minmax(0,1fr))">{"".join(figures)}</div>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
