"""``seg retrieve``: image embeddings, nearest-neighbour indexes and per-concept archive curation (ReCo).

The three commands are the three stages of ReCo's retrieval (Sec. 3.1): ``embed`` computes the CLIP image embedding
of every image of a folder into an embedding store, ``index`` builds a faiss index over the store, and ``curate``
retrieves, for each concept, the k images nearest to its prompt-ensembled text embedding and writes the archive.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.params import at_least, parse_concept_names, validate_concept_names

if TYPE_CHECKING:
    from torch import Tensor

    from seg_core import Normalization
    from seg_models.clip import ClipModel

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderImages",
    "IndexDeviceChoice",
    "IndexKind",
    "app",
    "collection_fingerprint",
    "curate",
    "embed",
    "image_files",
    "index",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File endings ``seg retrieve embed`` treats as images (case-insensitive)."""

app = typer.Typer(
    name="retrieve",
    help="Embed an image collection, index it, and curate per-concept archives from it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class IndexKind(enum.StrEnum):
    """Kind of nearest-neighbour index (see docs/retrieval.md for when to use which)."""

    FLAT = "flat"
    IVF_FLAT = "ivf_flat"
    IVF_PQ = "ivf_pq"
    HNSW = "hnsw"


class IndexDeviceChoice(enum.StrEnum):
    """Where faiss builds and searches the index."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


def _validate_templates(value: str) -> str:
    from seg_core import TEMPLATE_SETS

    if value not in TEMPLATE_SETS:
        raise typer.BadParameter(f"{value!r} is not a template set; use one of {', '.join(sorted(TEMPLATE_SETS))}")
    return value


def _optional_at_least(minimum: int) -> Callable[[int | None], int | None]:
    check = at_least(minimum)

    def callback(value: int | None) -> int | None:
        return None if value is None else check(value)

    return callback


def _validate_dedup(value: float | None) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value} is not a cosine similarity in (0, 1]; e.g. 0.95 drops near-copies")
    return value


def _fail(command: str, error: BaseException) -> typer.Exit:
    from rich.markup import escape

    stderr_console().print(f"[bold red]seg retrieve {command}:[/] {escape(str(error))}")
    return typer.Exit(code=1)


# ---------------------------------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by their path relative to it."""
    found = [
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def collection_fingerprint(folder: Path, files: list[Path]) -> str:
    """sha256 over the relative paths and sizes of ``files``: a resumed run must see the same collection."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}\n".encode())
    return f"sha256:{digest.hexdigest()}"


class FolderImages:
    """Images of a folder for :func:`seg_retrieval.store.embed_collection`, preprocessed as CLIP does.

    Each image is read with PIL (transparent pixels over white, greyscale to RGB), resized with bicubic
    interpolation so that it covers ``size`` (the short side for a square size), centre-cropped to ``size`` and
    normalised with ``normalization``. The id of an image is its path relative to the folder.

    Args:
        root: The folder.
        files: Image files under it (from :func:`image_files`).
        size: ``(height, width)`` of the encoder's input.
        normalization: The encoder's pixel mean and std.
    """

    def __init__(self, root: Path, files: list[Path], size: tuple[int, int], normalization: Normalization) -> None:
        self.root = root
        self.files = files
        self.size = size
        self.mean = tuple(normalization.mean)
        self.std = tuple(normalization.std)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        import numpy as np
        import torch
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as opened:
                picture = opened.convert("RGBA") if opened.mode in {"RGBA", "LA", "P"} else opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"cannot read {path} as an image ({error}); remove it from the folder") from None
        if picture.mode == "RGBA":
            white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(white, picture).convert("RGB")
        height, width = self.size
        scale = max(height / picture.height, width / picture.width)
        resized_w, resized_h = max(width, round(picture.width * scale)), max(height, round(picture.height * scale))
        picture = picture.resize((resized_w, resized_h), Image.Resampling.BICUBIC)
        left, top = (resized_w - width) // 2, (resized_h - height) // 2
        picture = picture.crop((left, top, left + width, top + height))
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return path.relative_to(self.root).as_posix(), (pixels - mean) / std


@app.command()
def embed(
    *,
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of images to embed (searched recursively).",
            metavar="IMAGES_DIR",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Embedding store folder to write.", file_okay=False, show_default=False),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Image-text encoder: bundled:NAME, local-dir:PATH, hf-hub:org/name or NAME/TAG "
            "(default: the bundled synthetic-world CLIP).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", callback=at_least(1), help="Images per forward pass.")
    ] = 64,
    shard_size: Annotated[
        int, typer.Option("--shard-size", callback=at_least(1), help="Embeddings per shard file.")
    ] = 65_536,
    workers: Annotated[
        int, typer.Option("--workers", callback=at_least(0), help="Image-loading processes (0: this process).")
    ] = 0,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device, e.g. cpu or cuda (default: cuda if available).")
    ] = None,
) -> None:
    """Embed every image of a folder with a CLIP image encoder into an embedding store.

    Images are resized and centre-cropped to the encoder's input size and normalised with its statistics; ids
    are paths relative to IMAGES_DIR. Re-running the same command after an interruption continues where it
    stopped; running it with other arguments over an existing store is refused.
    """
    from seg_core import ConfigError

    files = image_files(images)
    if not files:
        raise _fail("embed", ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {images}"))
    clip, recorded = _load_clip(model, device)
    collection = FolderImages(images, files, clip.image_size, clip.normalization)
    started = time.perf_counter()
    from seg_retrieval.store import embed_collection

    with progress_bar("[bold]embedding[/]", len(files)) as update:
        try:
            store = embed_collection(
                clip,
                collection,
                out,
                encoder_name=recorded,
                batch_size=batch_size,
                shard_size=shard_size,
                num_workers=workers,
                collection_id=collection_fingerprint(images, files),
                progress=update,
            )
        except (ConfigError, ValueError, OSError) as error:
            raise _fail("embed", error) from None
    seconds = time.perf_counter() - started
    shards = len(store.manifest.shards)
    stdout_console().print(
        f"embedded {len(store)} images with {recorded} ({store.dim}-d, {shards} shard{'s' * (shards != 1)}) "
        f"into {out} in {seconds:.1f} s"
    )


def _load_clip(model: str | None, device: str | None) -> tuple[ClipModel, str]:
    import torch

    from seg_cli.segmenters import load_clip_source

    clip, recorded = load_clip_source(model)
    target = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return clip.to(target), recorded


# ---------------------------------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------------------------------


@app.command()
def index(
    *,
    store: Annotated[
        Path,
        typer.Argument(
            help="Embedding store written by `seg retrieve embed`.",
            metavar="STORE_DIR",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Index folder to write.", file_okay=False, show_default=False)
    ],
    kind: Annotated[IndexKind, typer.Option("--kind", help="Index kind.", case_sensitive=False)] = IndexKind.FLAT,
    nlist: Annotated[
        int | None,
        typer.Option("--nlist", callback=_optional_at_least(1), help="IVF lists (default 4·√N)."),
    ] = None,
    nprobe: Annotated[int, typer.Option("--nprobe", callback=at_least(1), help="IVF lists searched per query.")] = 32,
    pq_m: Annotated[
        int, typer.Option("--pq-m", callback=at_least(1), help="IVF-PQ sub-quantisers (bytes/vector).")
    ] = 64,
    pq_bits: Annotated[int, typer.Option("--pq-bits", callback=at_least(1), help="IVF-PQ bits per code.")] = 8,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", callback=at_least(2), help="HNSW neighbours per node.")] = 32,
    ef_search: Annotated[int, typer.Option("--ef-search", callback=at_least(1), help="HNSW search breadth.")] = 128,
    ef_construction: Annotated[
        int, typer.Option("--ef-construction", callback=at_least(1), help="HNSW build breadth.")
    ] = 200,
    train_size: Annotated[
        int | None,
        typer.Option(
            "--train-size",
            callback=_optional_at_least(1),
            help="Vectors sampled to train IVF (default min(N, 64·nlist)).",
        ),
    ] = None,
    device: Annotated[
        IndexDeviceChoice, typer.Option("--device", help="faiss device.", case_sensitive=False)
    ] = IndexDeviceChoice.AUTO,
) -> None:
    """Build a faiss nearest-neighbour index (inner product on L2-normalised embeddings) over an embedding store."""
    from seg_core import ConfigError
    from seg_retrieval.index import IndexConfig, build_index
    from seg_retrieval.store import EmbeddingStore

    started = time.perf_counter()
    try:
        embeddings = EmbeddingStore.open(store)
        config = IndexConfig.parse(
            {
                "kind": kind.value,
                "nlist": nlist,
                "nprobe": nprobe,
                "pq_m": pq_m,
                "pq_bits": pq_bits,
                "hnsw_m": hnsw_m,
                "ef_search": ef_search,
                "ef_construction": ef_construction,
                "train_size": train_size,
                "device": device.value,
            }
        )
        built = build_index(embeddings, config)
        built.save(out)
    except (ConfigError, ValueError, OSError) as error:
        raise _fail("index", error) from None
    seconds = time.perf_counter() - started
    details = f", nlist={built.config.nlist}, nprobe={built.config.nprobe}" if built.config.is_ivf else ""
    stdout_console().print(
        f"indexed {len(built)} embeddings of {embeddings.encoder} ({built.config.kind}{details}, {built.device}) "
        f"into {out} in {seconds:.1f} s"
    )


# ---------------------------------------------------------------------------------------------------------------
# curate
# ---------------------------------------------------------------------------------------------------------------


@app.command()
def curate(
    *,
    index_dir: Annotated[
        Path,
        typer.Option("--index", help="Index folder written by `seg retrieve index`.", exists=True, show_default=False),
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
        Path,
        typer.Option("--out", "-o", help="Archive file to write (.json).", dir_okay=False, show_default=False),
    ],
    per_concept: Annotated[
        int, typer.Option("--per-concept", "-k", callback=at_least(1), help="Images kept per concept.")
    ] = 50,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Text encoder: the CLIP that embedded the images (default: the encoder recorded in the index).",
            show_default=False,
        ),
    ] = None,
    templates: Annotated[
        str, typer.Option("--templates", callback=_validate_templates, help="Prompt template set.")
    ] = "imagenet85",
    dedup: Annotated[
        float | None,
        typer.Option(
            "--dedup",
            callback=_validate_dedup,
            help="Drop an image whose cosine with a better-ranked kept image is >= this (e.g. 0.95).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device of the text encoder (default: cuda if available).")
    ] = None,
) -> None:
    """Curate an archive of the best-matching images for each concept (ReCo's retrieval).

    Each concept is prompted with every template of the set, the prompt embeddings are averaged (prompt
    ensembling), and the index returns the images nearest to the result by cosine similarity.
    """
    from seg_core import ConceptSet, ConfigError
    from seg_retrieval.curate import curate_archive, save_archive
    from seg_retrieval.index import EmbeddingIndex

    names = parse_concept_names(concepts)
    if out.suffix.lower() != ".json":
        raise _fail("curate", ValueError(f"--out must be a .json file, got {out}"))
    try:
        if not index_dir.is_dir():
            raise ConfigError(f"--index must be a folder written by `seg retrieve index`, got the file {index_dir}")
        retriever = EmbeddingIndex.load(index_dir)
    except (ConfigError, ValueError, OSError) as error:
        raise _fail("curate", error) from None
    if per_concept > len(retriever):  # checked before loading the CLIP, which takes seconds
        raise _fail(
            "curate",
            ValueError(
                f"-k {per_concept} exceeds the {len(retriever)} images in the index; use -k <= {len(retriever)}"
            ),
        )
    source = model if model is not None else retriever.encoder  # None: the bundled CLIP
    try:
        clip, recorded = _load_clip(source, device)
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        hint = "" if model is not None else " (the encoder recorded in the index); pass --model"
        raise _fail("curate", RuntimeError(f"cannot load the text encoder {source}{hint}: {error}")) from None
    if retriever.encoder is not None and recorded != retriever.encoder:
        stderr_console().print(
            f"[bold yellow]warning:[/] the images were embedded with {retriever.encoder}, the concepts with "
            f"{recorded}; retrieval only works when both are the same CLIP"
        )
    if clip.embed_dim != retriever.dim:
        raise _fail(
            "curate",
            ValueError(
                f"{recorded} embeds into {clip.embed_dim} dimensions but the index holds {retriever.dim}-d "
                f"embeddings of {retriever.encoder}; pass --model with the CLIP that embedded the images"
            ),
        )
    text = clip.concept_embeddings(ConceptSet(names=names, templates=templates)).embeddings
    try:
        archive = curate_archive(
            retriever,
            names,
            text,
            per_concept,
            encoder=recorded,
            store=retriever.store or str(index_dir),
            templates=templates,
            dedup_threshold=dedup,
        )
        save_archive(archive, out)
    except (ConfigError, ValueError, RuntimeError, OSError) as error:
        raise _fail("curate", error) from None
    console = stdout_console()
    for concept in archive.concepts:
        scores = [item.score for item in concept.items]
        console.print(
            f"{concept.concept}: {len(scores)} images, cosine {scores[0]:.3f} .. {scores[-1]:.3f}, "
            f"best {concept.image_ids[0]}"
        )
    console.print(f"wrote the archive of {len(names)} concepts to {out}")
