"""``seg zoo``: the model registry and Hugging Face Hub I/O."""

from pathlib import Path
from typing import Annotated

import typer

from seg_cli.params import validate_repo_id
from seg_cli.unavailable import not_available

__all__ = ["app", "info", "list_models", "pull", "push"]

_PROVIDER = "seg-zoo (the model registry and Hub I/O)"

app = typer.Typer(
    name="zoo",
    help="List, inspect, download and publish pretrained models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("list")
def list_models(
    pattern: Annotated[
        str, typer.Argument(help="Wildcard over registry names, e.g. 'reco-*'.", metavar="PATTERN")
    ] = "*",
) -> None:
    """List registered models whose name matches PATTERN. [yellow](not available yet)[/]"""
    not_available(f"seg zoo list {pattern}", _PROVIDER)


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Registry name (method-arch.tag).", metavar="NAME", show_default=False)],
) -> None:
    """Show a model's config, preprocessing, weights source and results. [yellow](not available yet)[/]"""
    not_available(f"seg zoo info {name}", _PROVIDER)


@app.command()
def pull(
    name: Annotated[
        str,
        typer.Argument(
            help="Registry name, hf-hub:org/name[@rev] or local-dir:PATH.", metavar="NAME", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder to copy the files into (default: the Hub cache only).", file_okay=False
        ),
    ] = None,
) -> None:
    """Download a model's weights, config and model card. [yellow](not available yet)[/]"""
    not_available(f"seg zoo pull {name}", _PROVIDER)


@app.command()
def push(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder written by save_pretrained.", exists=True, file_okay=False, metavar="DIR", show_default=False
        ),
    ],
    repo_id: Annotated[
        str,
        typer.Argument(
            callback=validate_repo_id, help="Hub repository, namespace/name.", metavar="REPO_ID", show_default=False
        ),
    ],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
) -> None:
    """Upload a saved model folder to the Hugging Face Hub. [yellow](not available yet)[/]"""
    not_available(f"seg zoo push {folder} {repo_id}", _PROVIDER)
