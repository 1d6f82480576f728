"""``seg eval``: evaluate a method on a dataset under a protocol preset."""

from pathlib import Path
from typing import Annotated

import typer

from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.unavailable import not_available

__all__ = ["evaluate"]


def evaluate(
    method: Annotated[
        str,
        typer.Option(
            "--method", "-m", callback=validate_method, help=f"Method: {', '.join(METHOD_NAMES)}.", show_default=False
        ),
    ],
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            help="Dataset folder in COCO or VOC layout (e.g. made by `seg world generate`).",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Results file (JSON) to write.", dir_okay=False, show_default=False),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Zoo name, hf-hub:org/name[@rev] or local-dir:PATH (default: the method's default)."
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Protocol preset (default: the dataset's own preset).")
    ] = None,
) -> None:
    """Evaluate a method on a dataset under a protocol preset. [yellow](not available yet)[/]"""
    not_available(
        f"seg eval (evaluating {method} on {dataset})",
        "seg-eval (the evaluator and protocol presets) with the method's model code in seg-models",
    )
