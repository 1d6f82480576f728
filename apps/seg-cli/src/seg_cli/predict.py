"""``seg predict``: segment images into the given classes with one method."""

from pathlib import Path
from typing import Annotated

import typer

from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.params import validate_concept_names
from seg_cli.unavailable import not_available

__all__ = ["predict"]


def predict(
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
) -> None:
    """Segment IMAGES into the given classes with one method. [yellow](not available yet)[/]"""
    not_available(
        f"seg predict (segmenting {len(images)} image(s) with {method})",
        "seg-models (MaskCLIP first, with the CLIP/MaskCLIP issue) and seg-zoo (loading the weights)",
    )
