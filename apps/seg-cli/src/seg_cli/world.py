"""``seg world``: the procedural synthetic world (images, captions and ground truth made from a seed)."""

import enum
from pathlib import Path
from typing import Annotated

import typer

from seg_cli.params import at_least, validate_split_name
from seg_cli.unavailable import not_available

__all__ = ["AnnotationFormat", "app", "generate"]

app = typer.Typer(
    name="world",
    help="The synthetic world: deterministic images with captions and ground truth, written as real benchmarks are.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class AnnotationFormat(enum.StrEnum):
    """On-disk layout of the written dataset."""

    COCO = "coco"
    VOC = "voc"


@app.command()
def generate(
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write the split into.", file_okay=False, show_default=False)
    ],
    split: Annotated[
        str,
        typer.Option(
            "--split", callback=validate_split_name, help="Split to generate, e.g. train or test.", show_default=False
        ),
    ],
    num: Annotated[
        int, typer.Option("--num", "-n", callback=at_least(1), help="Number of images.", show_default=False)
    ],
    seed: Annotated[
        int,
        typer.Option(
            "--seed", callback=at_least(0), help="Seed; the same seed writes the same files.", show_default=False
        ),
    ],
    annotation_format: Annotated[
        AnnotationFormat, typer.Option("--format", help="Annotation layout.", case_sensitive=False)
    ] = AnnotationFormat.COCO,
    size: Annotated[int, typer.Option("--size", callback=at_least(16), help="Image side in pixels.")] = 64,
) -> None:
    """Generate one split of the synthetic world. [yellow](not available yet)[/]"""
    not_available(
        f"seg world generate ({num} {size}px images of split {split!r}, {annotation_format.value} layout)",
        "seg-eval (the synthetic-world issue)",
    )
