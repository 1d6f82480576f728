"""``seg train``: train one method with its recipe from seg-trainers."""

from pathlib import Path
from typing import Annotated

import typer

from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.unavailable import not_available

__all__ = ["train"]


def train(
    method: Annotated[
        str,
        typer.Argument(
            callback=validate_method, help=f"Method: {', '.join(METHOD_NAMES)}.", metavar="METHOD", show_default=False
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Recipe config (YAML or JSON); default: the recipe's defaults.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Run folder for checkpoints and logs (default: runs/METHOD).", file_okay=False
        ),
    ] = None,
) -> None:
    """Train METHOD with its recipe. [yellow](not available yet)[/]"""
    not_available(
        f"seg train {method}",
        "seg-trainers (one recipe per method) running on the seg-train engine",
    )
