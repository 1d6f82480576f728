"""``seg retrieve``: image embeddings, nearest-neighbour indexes and per-concept archive curation (ReCo)."""

import enum
from pathlib import Path
from typing import Annotated

import typer

from seg_cli.params import at_least, validate_concept_names
from seg_cli.unavailable import not_available

__all__ = ["IndexKind", "app", "curate", "embed", "index"]

_PROVIDER = "seg-retrieval (embedding stores, faiss indexes and archive curation)"

app = typer.Typer(
    name="retrieve",
    help="Embed an image collection, index it, and curate per-concept archives from it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class IndexKind(enum.StrEnum):
    """Kind of nearest-neighbour index."""

    FLAT = "flat"
    IVF = "ivf"


@app.command()
def embed(
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of images to embed.", metavar="IMAGES_DIR", exists=True, file_okay=False, show_default=False
        ),
    ],
    model: Annotated[
        str,
        typer.Option("--model", help="Image-text encoder: zoo name, hf-hub:... or local-dir:...", show_default=False),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Embedding store to write.", dir_okay=False, show_default=False)
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=at_least(1), help="Images per forward pass.")
    ] = 64,
) -> None:
    """Embed every image of a folder with an image-text encoder. [yellow](not available yet)[/]"""
    not_available(f"seg retrieve embed ({images})", _PROVIDER)


@app.command()
def index(
    embeddings: Annotated[
        Path,
        typer.Argument(
            help="Embedding store written by `seg retrieve embed`.",
            metavar="EMBEDDINGS",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index file to write.", dir_okay=False, show_default=False)],
    kind: Annotated[IndexKind, typer.Option("--kind", help="Index kind.", case_sensitive=False)] = IndexKind.FLAT,
) -> None:
    """Build a nearest-neighbour index over an embedding store. [yellow](not available yet)[/]"""
    not_available(f"seg retrieve index ({kind.value} index over {embeddings})", _PROVIDER)


@app.command()
def curate(
    index_path: Annotated[
        Path,
        typer.Option(
            "--index", help="Index written by `seg retrieve index`.", exists=True, dir_okay=False, show_default=False
        ),
    ],
    concepts: Annotated[
        str,
        typer.Option(
            "--concepts",
            callback=validate_concept_names,
            help='Comma-separated concepts, e.g. "cat,dog".',
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the curated archives.", file_okay=False, show_default=False)
    ],
    per_concept: Annotated[
        int, typer.Option("--per-concept", "-k", callback=at_least(1), help="Images kept per concept.")
    ] = 50,
) -> None:
    """Curate an archive of the best-matching images for each concept. [yellow](not available yet)[/]"""
    not_available(f"seg retrieve curate ({per_concept} images per concept)", _PROVIDER)
