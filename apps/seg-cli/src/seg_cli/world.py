"""``seg world``: the procedural synthetic world (images, captions and ground truth made from a seed)."""

import enum
from pathlib import Path
from typing import Annotated

import typer

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.params import at_least

WORLD_SPLITS = ("index", "pairs", "val", "test", "shift")

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


def _validate_world_split(value: str) -> str:
    if value not in WORLD_SPLITS:
        raise typer.BadParameter(
            f"{value!r} is not a split of the synthetic world; use one of {', '.join(WORLD_SPLITS)}"
        )
    return value


@app.command()
def generate(
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write the split into.", file_okay=False, show_default=False)
    ],
    split: Annotated[
        str,
        typer.Option(
            "--split",
            callback=_validate_world_split,
            help="Split: index (retrieval collection), pairs (image-text training pairs), val, test, shift.",
            show_default=False,
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
    size: Annotated[int, typer.Option("--size", callback=at_least(32), help="Image side in pixels.")] = 64,
    workers: Annotated[int, typer.Option("--workers", callback=at_least(1), help="Rendering processes.")] = 1,
) -> None:
    """Generate one split of the synthetic world (deterministic: the same seed writes the same files).

    The folder records the world's config in world.json, so readers know its classes; several splits and both
    layouts may share one folder. An interrupted run continues where it stopped.
    """
    from seg_core import ConfigError
    from seg_eval.world import WorldConfig, generate_split

    with progress_bar(f"[bold]{split}[/] ({annotation_format.value})", num) as update:
        try:
            written = generate_split(
                out,
                split,  # type: ignore[arg-type]  # validated against WORLD_SPLITS by the callback
                num,
                seed,
                fmt=annotation_format.value,
                size=size,
                config=WorldConfig(),
                progress=update,
                workers=workers,
            )
        except (ConfigError, ValueError, FileExistsError) as error:
            stderr_console().print(f"[bold red]seg world generate:[/] {error}")
            raise typer.Exit(code=1) from None
    stdout_console().print(
        f"wrote {written.num} images of split {split!r} ({annotation_format.value} layout, {size}px, seed {seed}) "
        f"to {written.root}"
    )
