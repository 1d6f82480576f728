"""``seg predict``: segment images into the given classes with one method."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from seg_cli.console import stderr_console, stdout_console
from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.params import AllowPickle, parse_concept_names, validate_concept_names

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import numpy.typing as npt

    from seg_cli.segmenters import ModelGeometry
    from seg_core import ConceptSet, ProtocolPreset, Segmenter

__all__ = [
    "INSTANCE_METHODS",
    "concept_set",
    "predict",
    "predict_preset",
    "read_rgb",
    "render_prediction",
    "segment_rgb",
]


def predict(
    *,
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Images to segment.", metavar="IMAGE", exists=True, dir_okay=False, readable=True, show_default=False
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method", "-m", callback=validate_method, help=f"Method: {', '.join(METHOD_NAMES)}.", show_default=False
        ),
    ],
    classes: Annotated[
        str,
        typer.Option(
            "--classes",
            "-c",
            callback=validate_concept_names,
            help='Comma-separated class names, e.g. "cat,dog,sky".',
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Zoo name, hf-hub:org/name[@rev] or local-dir:PATH (default: the method's default)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the label maps and overlays.", file_okay=False)
    ] = Path("predictions"),
    allow_pickle: AllowPickle = False,
) -> None:
    """Segment IMAGES into the given classes with one method.

    Writes, per image, OUT/<name>_labels.png (a palette PNG whose pixel values are the class ids, in the order of
    --classes) and OUT/<name>_overlay.png (the image with the label colours and a legend). Any RGB, RGBA or
    greyscale image of any size works; predictions are at the image's own size.

    Instance-aware methods (zutis) predict a "background" class too (label 0; the classes are then 1, 2, ...) and
    also write OUT/<name>_instances.png (every instance outlined in its own colour, the legend giving its class and
    score) and OUT/<name>_instances.json (class, score, box and area of each instance).
    """
    from seg_cli.segmenters import ensure_available

    ensure_available(method, "seg predict")
    names = parse_concept_names(classes)
    failures = _predict(images, method=method, names=names, model=model, out=out, allow_pickle=allow_pickle)
    if failures:
        raise typer.Exit(code=1)


def concept_set(method: str, names: tuple[str, ...], background: str = "auto") -> ConceptSet:
    """The concepts ``seg predict`` segments: ``names`` with a background policy.

    ``background``: ``auto`` (a literal "background" class for instance-aware methods, none otherwise), ``none``,
    ``class`` (prompt the word "background") or ``threshold`` (a pixel whose best probability is low is background).
    """
    from seg_core import BackgroundClass, BackgroundPolicy, BackgroundThreshold, ConceptSet, NoBackground

    if background == "auto":
        background = "class" if method in INSTANCE_METHODS else "none"
    policies: dict[str, BackgroundPolicy] = {
        "none": NoBackground(),
        "class": BackgroundClass(),
        "threshold": BackgroundThreshold(),
    }
    if background not in policies:
        raise ValueError(f"background {background!r}: choose auto, none, class or threshold")
    return ConceptSet(names=names, templates="imagenet85", background=policies[background])


def predict_preset(method: str, refinement: str = "none") -> Callable[[ModelGeometry], ProtocolPreset]:
    """The preset function ``seg predict`` uses for ``method`` (sliding windows; whole images for instance-aware
    methods), with ``refinement`` (``none``, ``pamr`` or ``crf``)."""
    base = _whole_preset if method in INSTANCE_METHODS else _predict_preset
    if refinement == "none":
        return base
    if refinement not in ("pamr", "crf"):
        raise ValueError(f"refinement {refinement!r}: choose none, pamr or crf")

    def refined(geometry: ModelGeometry) -> ProtocolPreset:
        return base(geometry).model_copy(update={"refinement": refinement})

    return refined


def read_rgb(source: Any) -> npt.NDArray[np.uint8]:
    """An image file (path or file object) as ``[H, W, 3]`` uint8 RGB; transparency is composited over white.

    Raises:
        PIL.UnidentifiedImageError, OSError: Not a readable image.
    """
    import numpy as np
    from PIL import Image

    with Image.open(source) as opened:
        picture = opened.convert("RGBA") if opened.mode in {"RGBA", "LA", "P"} else opened.convert("RGB")
        if picture.mode == "RGBA":  # transparent pixels over white, not over black
            white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(white, picture).convert("RGB")
        return np.asarray(picture, dtype=np.uint8).copy()


def segment_rgb(segmenter: Segmenter, rgb: npt.NDArray[np.uint8], concepts: ConceptSet) -> tuple[Any, Any]:
    """``(labels, output)``: the ``[H, W]`` uint8 label map of one RGB image and the segmenter's raw output."""
    import numpy as np
    import torch

    from seg_eval.evaluator import image_to_tensor

    with torch.inference_mode():
        output = segmenter.segment(image_to_tensor(rgb), concepts)
    return output.labels[0].cpu().numpy().astype(np.uint8), output


def render_prediction(
    rgb: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], label_names: tuple[str, ...]
) -> tuple[Any, Any, list[tuple[str, float, tuple[int, int, int]]]]:
    """``(overlay, label_png, areas)``: the image with label colours and a legend, the palette PNG of the label map,
    and ``(name, fraction of pixels, colour)`` of every present label, largest first."""
    import numpy as np
    from PIL import Image

    from seg_cli.report import class_colors, legend_image, overlay

    colors = class_colors(len(label_names))
    label_png = Image.fromarray(labels, mode="P")
    label_png.putpalette(colors.tobytes())
    counts = np.bincount(labels.ravel(), minlength=len(label_names))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    areas = [
        (label_names[i], float(counts[i] / labels.size), (int(colors[i][0]), int(colors[i][1]), int(colors[i][2])))
        for i in present
    ]
    entries = [(f"{name} {100 * fraction:.0f}%", color) for name, fraction, color in areas]
    picture = legend_image(overlay(rgb, labels, colors), entries)
    return picture, label_png, areas


def _predict(
    images: list[Path], *, method: str, names: tuple[str, ...], model: str | None, out: Path, allow_pickle: bool = False
) -> int:
    from PIL import Image, UnidentifiedImageError

    from seg_cli.segmenters import build_segmenter
    from seg_core import ConfigError

    concepts = concept_set(method, names)
    label_names = concepts.label_names
    try:
        built = build_segmenter(method, model, predict_preset(method), allow_pickle=allow_pickle)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        stderr_console().print(f"[bold red]seg predict:[/] {error}")
        raise typer.Exit(code=1) from None
    out.mkdir(parents=True, exist_ok=True)
    console, errors = stdout_console(), stderr_console()
    failures = 0
    for path in images:
        try:
            rgb = read_rgb(path)
        except (UnidentifiedImageError, OSError) as error:
            errors.print(f"[bold red]seg predict:[/] cannot read {path} as an image ({error}); skipped")
            failures += 1
            continue
        try:
            labels, output = segment_rgb(built.segmenter, rgb, concepts)
        except ConfigError as error:  # e.g. a closed-set model asked for classes it was not trained on
            stderr_console().print(f"[bold red]seg predict:[/] {error}")
            raise typer.Exit(code=1) from None
        picture, label_png, areas = render_prediction(rgb, labels, label_names)
        label_path = out / f"{path.stem}_labels.png"
        label_png.save(label_path)
        overlay_path = out / f"{path.stem}_overlay.png"
        Image.fromarray(picture).save(overlay_path)
        shown = ", ".join(f"{name} {100 * fraction:.0f}%" for name, fraction, _ in areas)
        console.print(f"{path.name}: {shown} -> {label_path}, {overlay_path}")
        if output.instances is not None:
            _write_instances(rgb, output.instances[0], label_names, out / path.stem)
    return failures


INSTANCE_METHODS = ("zutis",)
"""Methods that predict instances (and a literal "background" class)."""


def _write_instances(rgb: Any, instances: Any, label_names: tuple[str, ...], stem: Path) -> None:
    """``<stem>_instances.png`` (outlined instances, legend "class score") and ``<stem>_instances.json``."""
    import json

    import numpy as np
    from PIL import Image

    from seg_cli.report import class_colors, instance_overlay, legend_image

    order = instances.scores.argsort(descending=True)
    masks = instances.masks[order].cpu().numpy().astype(bool)
    scores = instances.scores[order].cpu().tolist()
    labels = instances.labels[order].cpu().tolist()
    palette = class_colors(255)[1 : 1 + max(len(labels), 1)]
    colors = np.stack([palette[i % len(palette)] for i in range(len(labels))]) if labels else palette[:0]
    entries = [
        (f"{label_names[label]} {score:.2f}", (int(color[0]), int(color[1]), int(color[2])))
        for label, score, color in zip(labels, scores, colors, strict=True)
    ]
    picture = legend_image(instance_overlay(rgb, masks, colors), entries)
    Image.fromarray(picture).save(f"{stem}_instances.png")
    records = []
    for mask, label, score in zip(masks, labels, scores, strict=True):
        rows, cols = np.nonzero(mask)
        box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1] if rows.size else None
        records.append(
            {"class": label_names[label], "score": round(score, 4), "box_xyxy": box, "area": int(mask.sum())}
        )
    Path(f"{stem}_instances.json").write_text(json.dumps(records, indent=2) + "\n")
    stdout_console().print(
        f"  {len(records)} instances: "
        + ", ".join(f"{r['class']} {r['score']:.2f}" for r in records[:8])
        + (" ..." if len(records) > 8 else "")
        + f" -> {stem}_instances.png"
    )


def _whole_preset(clip: ModelGeometry) -> ProtocolPreset:
    """Whole-image inference (ZUTIS predicts instances from one pass): small models (trained below 224 px) see the
    image resized to their training size's short side, large ones the image at its own size (the official
    protocol)."""
    from seg_core import BackgroundClass, ProtocolPreset, ResizeRule

    crop = min(clip.image_size)
    return ProtocolPreset(
        name=f"predict-whole-{crop}",
        resize=ResizeRule(short_side=crop) if crop < 224 else ResizeRule(),
        mode="whole",
        templates="imagenet85",
        background=BackgroundClass(),
        normalization=clip.normalization,
    )


def _predict_preset(clip: ModelGeometry) -> ProtocolPreset:
    """Resize the short side to 448 px (the model's own size for small models trained on small images) and slide
    windows of the model's training size with half overlap."""
    from seg_core import ProtocolPreset, ResizeRule, SlidingWindow

    crop = min(clip.image_size)
    short_side = max(crop, 448) if crop >= 224 else crop
    return ProtocolPreset(
        name=f"predict-{crop}",
        resize=ResizeRule(short_side=short_side),
        mode="slide",
        window=SlidingWindow(crop=crop, stride=max(crop // 2, 1)),
        templates="imagenet85",
        normalization=clip.normalization,
    )
