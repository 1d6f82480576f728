"""``seg retrieve``: image embeddings, nearest-neighbour indexes and per-concept archive curation (ReCo).

The three commands are the three stages of ReCo's retrieval (Sec. 3.1): ``embed`` computes the CLIP image embedding
of every image of a folder into an embedding store, ``index`` builds a faiss index over the store, and ``curate``
retrieves, for each concept, the k images nearest to its prompt-ensembled text embedding and writes the archive.
"""

from __future__ import annotations

import enum
import hashlib
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.params import at_least, parse_concept_names, validate_concept_names

if TYPE_CHECKING:
    from torch import Tensor

    from seg_core import Archive, Normalization
    from seg_models.clip import ClipModel

__all__ = [
    "IMAGE_SUFFIXES",
    "CoarseChoice",
    "FolderImages",
    "IndexDeviceChoice",
    "IndexKind",
    "app",
    "collection_fingerprint",
    "curate",
    "embed",
    "image_files",
    "index",
    "read_concepts_file",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File endings ``seg retrieve embed`` treats as images (case-insensitive)."""

app = typer.Typer(
    name="retrieve",
    help="Embed an image collection, index it, and curate per-concept archives from it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


class CoarseChoice(enum.StrEnum):
    """Coarse quantiser of an IVF index."""

    FLAT = "flat"
    HNSW = "hnsw"


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
    kind: Annotated[
        IndexKind | None,
        typer.Option("--kind", help="Index kind (default: flat).", case_sensitive=False, show_default=False),
    ] = None,
    nlist: Annotated[
        int | None,
        typer.Option("--nlist", callback=_optional_at_least(1), help="IVF lists (default 4·√N)."),
    ] = None,
    nprobe: Annotated[int, typer.Option("--nprobe", callback=at_least(1), help="IVF lists searched per query.")] = 32,
    pq_m: Annotated[
        int | None,
        typer.Option(
            "--pq-m", callback=_optional_at_least(1), help="IVF-PQ sub-quantisers (bytes/vector) (default: 64)."
        ),
    ] = None,
    pq_bits: Annotated[
        int | None,
        typer.Option("--pq-bits", callback=_optional_at_least(1), help="IVF-PQ bits per code (default: 8)."),
    ] = None,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", callback=at_least(2), help="HNSW neighbours per node.")] = 32,
    ef_search: Annotated[
        int | None,
        typer.Option(
            "--ef-search",
            callback=_optional_at_least(1),
            help="HNSW search breadth (default: 128; 16 for the graph of --coarse hnsw).",
        ),
    ] = None,
    ef_construction: Annotated[
        int, typer.Option("--ef-construction", callback=at_least(1), help="HNSW build breadth.")
    ] = 200,
    rerank: Annotated[
        int | None,
        typer.Option(
            "--rerank",
            callback=_optional_at_least(1),
            help="Re-rank this many approximate candidates per query by exact cosine, read from STORE_DIR (lifts "
            "IVF-PQ's recall; e.g. 100-200 for -k 50; default off); saved with the index, whose searches then need "
            "the store.",
            show_default=False,
        ),
    ] = None,
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
    coarse: Annotated[
        CoarseChoice,
        typer.Option(
            "--coarse",
            help="IVF kinds: how vectors find their lists (hnsw: a graph over the centroids, for tens of thousands "
            "of lists and up; CPU only).",
            case_sensitive=False,
        ),
    ] = CoarseChoice.FLAT,
    on_disk: Annotated[
        bool,
        typer.Option(
            "--on-disk",
            help="IVF kinds: keep the inverted lists in OUT/index.ivfdata, memory-mapped (indexes larger than RAM); "
            "a killed build resumes.",
        ),
    ] = False,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget",
            help="RAM for the index, e.g. 16GB: chooses --kind, --pq-m, --pq-bits and --on-disk (the most accurate "
            "index that fits).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build a faiss nearest-neighbour index (inner product on L2-normalised embeddings) over an embedding store."""
    from seg_core import ConfigError
    from seg_retrieval.index import IndexConfig, build_index, config_for_memory, estimate_index_bytes
    from seg_retrieval.store import EmbeddingStore

    if memory_budget is not None:
        chosen = {"--kind": kind, "--pq-m": pq_m, "--pq-bits": pq_bits, "--on-disk": on_disk or None}
        given = [name for name, value in chosen.items() if value is not None]
        if given:
            raise _fail(
                "index",
                ValueError(f"--memory-budget chooses {', '.join(given)}; drop {' and '.join(given)} or the budget"),
            )
    started = time.perf_counter()
    try:
        embeddings = EmbeddingStore.open(store)
        config = IndexConfig.parse(
            {
                "kind": (kind or IndexKind.FLAT).value,
                "nlist": nlist,
                "nprobe": nprobe,
                "pq_m": 64 if pq_m is None else pq_m,
                "pq_bits": 8 if pq_bits is None else pq_bits,
                "hnsw_m": hnsw_m,
                "ef_search": ef_search,
                "ef_construction": ef_construction,
                "train_size": train_size,
                "device": device.value,
                "on_disk": on_disk,
                "coarse_quantizer": coarse.value,
                "rerank": rerank,
            }
        )
        if memory_budget is not None:
            config = config_for_memory(len(embeddings), embeddings.dim, memory_budget, base=config)
        with progress_bar("[bold]indexing[/]", len(embeddings)) as update:
            built = build_index(embeddings, config, directory=out if config.on_disk else None, progress=update)
        if not config.on_disk:  # an on-disk index is saved where it was built
            built.save(out)
    except (ConfigError, ValueError, OSError) as error:
        raise _fail("index", error) from None
    seconds = time.perf_counter() - started
    details = f", nlist={built.config.nlist}, nprobe={built.config.nprobe}" if built.config.is_ivf else ""
    if built.config.kind == "ivf_pq":
        details += f", pq_m={built.config.pq_m}x{built.config.pq_bits}"
    if built.config.coarse_quantizer == "hnsw":
        details += ", HNSW coarse quantiser"
    if built.config.on_disk:
        details += ", lists on disk"
    if built.config.rerank is not None:
        details += f", rerank={built.config.rerank}"
    size = estimate_index_bytes(built.config, len(built), built.dim) / 1e6
    stdout_console().print(
        f"indexed {len(built)} embeddings of {embeddings.encoder} ({built.config.kind}{details}, {built.device}) "
        f"into {out} in {seconds:.1f} s; about {size:,.1f} MB in memory"
    )


# ---------------------------------------------------------------------------------------------------------------
# curate
# ---------------------------------------------------------------------------------------------------------------

_MAX_LISTED = 20
"""Up to this many concepts ``curate`` prints one line each; beyond, a summary."""


def read_concepts_file(path: Path) -> tuple[str, ...]:
    """The concepts of a ``--concepts-file``: one per line, blank lines and lines starting with ``#`` ignored.

    The names follow the rules of ``--concepts`` (:func:`seg_cli.params.parse_concept_names`): stripped, non-empty,
    each listed once (compared case-insensitively); a comma, which ``--concepts`` would split at, is refused.
    Errors name the line.

    Args:
        path: A UTF-8 text file.

    Returns:
        The names in file order.

    Raises:
        ValueError: The file is unreadable, lists no concept, or a line holds a comma or repeats an earlier name.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read --concepts-file {path} as UTF-8 text: {error}") from None
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if "," in name:
            raise ValueError(f"line {number} of {path} ({name!r}) holds a comma; write one concept per line")
        key = name.lower()
        if key in first_line:
            raise ValueError(
                f"concept {name!r} on line {number} of {path} repeats line {first_line[key]}; list each concept once"
            )
        first_line[key] = number
        names.append(name)
    if not names:
        raise ValueError(f"{path} lists no concepts; write one concept per line (# starts a comment line)")
    return tuple(names)


def _validate_optional_concepts(value: str | None) -> str | None:
    return None if value is None else validate_concept_names(value)


def _concept_names(concepts: str | None, concepts_file: Path | None) -> tuple[str, ...]:
    """The names of exactly one of ``--concepts`` and ``--concepts-file`` (usage error otherwise)."""
    if concepts is not None and concepts_file is not None:
        raise typer.BadParameter("both given; use only one of them", param_hint="'--concepts' / '--concepts-file'")
    if concepts is not None:
        return parse_concept_names(concepts)
    if concepts_file is not None:
        return read_concepts_file(concepts_file)
    raise typer.BadParameter(
        'none given; use --concepts "a,b,c" or --concepts-file FILE (one concept per line)',
        param_hint="'--concepts' / '--concepts-file'",
    )


@app.command()
def curate(
    *,
    index_dir: Annotated[
        Path,
        typer.Option("--index", help="Index folder written by `seg retrieve index`.", exists=True, show_default=False),
    ],
    concepts: Annotated[
        str | None,
        typer.Option(
            "--concepts",
            callback=_validate_optional_concepts,
            help='Comma-separated concepts, e.g. "cat,dog" (or --concepts-file).',
            show_default=False,
        ),
    ] = None,
    concepts_file: Annotated[
        Path | None,
        typer.Option(
            "--concepts-file",
            help="Text file with one concept per line (blank lines and lines starting with # ignored).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
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
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            callback=at_least(1),
            help="Concepts embedded and searched together; finished batches are kept in OUT.parts/ for a resume.",
        ),
    ] = 256,
    device: Annotated[
        str | None, typer.Option("--device", help="torch device of the text encoder (default: cuda if available).")
    ] = None,
) -> None:
    """Curate an archive of the best-matching images for each concept (ReCo's retrieval).

    Each concept is prompted with every template of the set, the prompt embeddings are averaged (prompt
    ensembling), and the index returns the images nearest to the result by cosine similarity. Concepts go
    --batch-size at a time; finished batches are kept in OUT.parts/ next to --out until the archive is written, so
    re-running an interrupted command resumes it (other settings are refused: delete OUT.parts/ to start over).
    """
    from seg_core import ConceptSet, ConfigError
    from seg_retrieval.curate import curate_archive_batched, save_archive
    from seg_retrieval.index import EmbeddingIndex

    try:
        names = _concept_names(concepts, concepts_file)
    except ValueError as error:
        raise _fail("curate", error) from None
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

    def embed_text(batch: Sequence[str]) -> Tensor:
        return clip.concept_embeddings(ConceptSet(names=tuple(batch), templates=templates)).embeddings

    parts = out.with_name(f"{out.name}.parts")
    try:
        with progress_bar("[bold]curating[/]", len(names)) as update:
            archive = curate_archive_batched(
                retriever,
                names,
                embed_text,
                per_concept,
                encoder=recorded,
                store=retriever.store or str(index_dir),
                templates=templates,
                batch_size=batch_size,
                dedup_threshold=dedup,
                parts_dir=parts,
                progress=update,
            )
        save_archive(archive, out)
    except (ConfigError, ValueError, RuntimeError, OSError) as error:
        raise _fail("curate", error) from None
    shutil.rmtree(parts, ignore_errors=True)  # the archive is written: the parts have served
    _print_curated(archive, per_concept)
    stdout_console().print(f"wrote the archive of {len(names)} concepts to {out}")


def _print_curated(archive: Archive, k: int) -> None:
    """One line per concept for a few concepts; for many, a summary of the k-th (last kept) image's cosine."""
    console = stdout_console()
    if len(archive.concepts) <= _MAX_LISTED:
        for concept in archive.concepts:
            scores = [item.score for item in concept.items]
            console.print(
                f"{concept.concept}: {len(scores)} images, cosine {scores[0]:.3f} .. {scores[-1]:.3f}, "
                f"best {concept.image_ids[0]}"
            )
        return
    last = {concept.concept: concept.items[-1].score for concept in archive.concepts}
    weakest = min(last, key=last.__getitem__)
    short = sum(len(concept.items) < k for concept in archive.concepts)
    shortfall = f"; {short} concepts have fewer than {k} images after de-duplication" if short else ""
    mean = statistics.fmean(last.values())
    console.print(
        f"curated {len(archive.concepts)} concepts: cosine of the k-th image mean {mean:.3f}, "
        f"min {last[weakest]:.3f} ({weakest}){shortfall}"
    )
