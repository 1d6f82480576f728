"""Resumable, sharded float16 embedding stores of an image collection (memory-mapped on read).

ReCo (Shin, Xie & Albanie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022, Sec. 3.1) compares
the CLIP text embedding ``ψ_T(c)`` of a concept with the image embedding ``ψ_I(x)`` of every image ``x`` of an
unlabelled collection ``U`` and keeps the ``k`` nearest images. This module computes ``{ψ_I(x) : x ∈ U}`` once and
keeps it on disk, so indexes can be rebuilt and archives curated for new concepts without touching the images again
(the official code pickles one ``[N, D]`` array, ``utils/extract_image_embeddings.py``; a store is that array cut into
shards that a killed run does not lose).

Layout of a store folder::

    plan.json             StorePlan: encoder, dim, count, shard size, dtype; written first, a re-run must match it
    shard-00000.npy       [n, D] float16, rows L2-normalised in float32 before the cast
    shard-00000.ids.json  the n image ids of those rows, in order
    ...
    manifest.json         StoreManifest: the plan plus the shard list; written last, so it marks a complete store

Each shard file is written to a temporary name, flushed to disk and renamed, so a shard either exists whole or not
at all. A re-run with the same arguments skips complete shards; under ``torchrun`` rank ``r`` embeds shards
``r, r + world, ...`` and rank 0 writes the manifest once every rank is done.

Contents: the collection protocol; the plan and manifest records; :func:`embed_collection`; :class:`EmbeddingStore`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator
from torch import Tensor
from torch.utils.data import DataLoader

from seg_core import ConfigError, ImageTextEncoder, SegModel

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "MANIFEST_FILE",
    "PLAN_FILE",
    "STORE_FORMAT",
    "STORE_VERSION",
    "EmbeddingStore",
    "ImageCollection",
    "ProgressFn",
    "ShardRecord",
    "StoreManifest",
    "StorePlan",
    "StoreShard",
    "embed_collection",
    "shard_assignment",
]

STORE_FORMAT: Final = "seg-embedding-store"
"""Value of the ``format`` field of every plan and manifest."""

STORE_VERSION: Final = 1
"""Layout version this code writes and reads."""

MANIFEST_FILE: Final = "manifest.json"
PLAN_FILE: Final = "plan.json"

DEFAULT_SHARD_SIZE: Final = 65_536
"""Rows per shard: 96 MiB of float16 at D = 768 (CLIP ViT-L/14), small enough to lose little to a kill."""

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(done, total)`` (images), e.g. the ``update`` of ``seg_cli.console.progress_bar``."""


# ---------------------------------------------------------------------------------------------------------------
# The collection protocol
# ---------------------------------------------------------------------------------------------------------------


@runtime_checkable
class ImageCollection(Protocol):
    """An indexable image collection: ``collection[i]`` is ``(image_id, image)``.

    ``image`` is a normalised ``[3, H, W]`` float tensor, ready for the encoder's ``encode_image`` (images of one
    batch must share ``H, W``); ``image_id`` is a non-empty string, unique in the collection (a relative path).
    A ``torch.utils.data.Dataset`` returning such pairs is one.
    """

    def __len__(self) -> int:
        """Number of images."""
        ...

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        """The ``index``-th image id and normalised ``[3, H, W]`` image."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# Plan and manifest
# ---------------------------------------------------------------------------------------------------------------


class StorePlan(SegModel):
    """What a store holds and how it is cut; written before any shard, so a re-run can be checked against it.

    Attributes:
        format: Always :data:`STORE_FORMAT`.
        version: Layout version (:data:`STORE_VERSION`).
        encoder: Name of the image encoder (e.g. ``"open_clip:ViT-L-14-336/openai"``, ``"bundled:synthetic-clip"``).
        dim: Embedding dimension ``D``.
        count: Number of images ``N``.
        dtype: Dtype of the stored rows.
        shard_size: Rows per shard (the last shard may be shorter).
        collection: Optional fingerprint of the collection (e.g. a digest of its file list), checked on re-runs.
    """

    format: Literal["seg-embedding-store"] = STORE_FORMAT
    version: int = STORE_VERSION
    encoder: str = Field(min_length=1)
    dim: PositiveInt
    count: PositiveInt
    dtype: Literal["float16"] = "float16"
    shard_size: PositiveInt
    collection: str | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != STORE_VERSION:
            raise ValueError(
                f"store layout version {version} is not readable by this seg-retrieval (it reads version "
                f"{STORE_VERSION}); re-embed the collection or install the seg-retrieval that wrote it"
            )
        return version

    @property
    def num_shards(self) -> int:
        """Number of shards, ``ceil(count / shard_size)``."""
        return math.ceil(self.count / self.shard_size)

    def shard_rows(self, shard: int) -> range:
        """Row indices (into the collection) of shard number ``shard``."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range; the store has {self.num_shards} shards")
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.count))

    def differences(self, other: StorePlan) -> list[str]:
        """``field: ours != theirs`` for every plan field that differs (empty when the plans agree)."""
        fields = list(StorePlan.model_fields)
        return [
            f"{name}: {getattr(other, name)!r} != {getattr(self, name)!r}"
            for name in fields
            if getattr(self, name) != getattr(other, name)
        ]

    def as_plan(self) -> StorePlan:
        """The plan part of this record (drops a manifest's shard list)."""
        return StorePlan.model_validate({name: getattr(self, name) for name in StorePlan.model_fields})


class ShardRecord(SegModel):
    """One shard of a store: file names relative to the store folder and the rows it holds."""

    embeddings: str = Field(min_length=1)
    ids: str = Field(min_length=1)
    start: NonNegativeInt
    count: PositiveInt


class StoreManifest(StorePlan):
    """A complete store: the plan plus its shards, which cover rows ``0 .. count - 1`` in order."""

    shards: tuple[ShardRecord, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _shards_cover_the_rows(self) -> StoreManifest:
        if len(self.shards) != self.num_shards:
            raise ValueError(
                f"shards lists {len(self.shards)} shards, but count={self.count} and shard_size={self.shard_size} "
                f"make {self.num_shards}"
            )
        for number, shard in enumerate(self.shards):
            rows = self.shard_rows(number)
            if shard.start != rows.start or shard.count != len(rows):
                raise ValueError(
                    f"shards.{number} holds rows {shard.start}..{shard.start + shard.count - 1}, expected "
                    f"{rows.start}..{rows.stop - 1}"
                )
        return self


def _shard_names(shard: int) -> tuple[str, str]:
    return f"shard-{shard:05d}.npy", f"shard-{shard:05d}.ids.json"


def _manifest_for(plan: StorePlan) -> StoreManifest:
    shards = []
    for number in range(plan.num_shards):
        rows = plan.shard_rows(number)
        embeddings, ids = _shard_names(number)
        shards.append(ShardRecord(embeddings=embeddings, ids=ids, start=rows.start, count=len(rows)))
    return StoreManifest.model_validate({**plan.model_dump(), "shards": shards})


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def shard_assignment(num_shards: int, rank: int, world_size: int) -> range:
    """The shards that rank ``rank`` of ``world_size`` embeds: ``rank, rank + world_size, ...``.

    Round-robin rather than contiguous blocks, so every rank gets the same number of full shards (±1) and the
    shorter last shard does not leave one rank idle for long.

    Raises:
        ValueError: ``world_size < 1``, ``rank`` outside ``[0, world_size)`` or ``num_shards < 0``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if num_shards < 0:
        raise ValueError(f"num_shards must be >= 0, got {num_shards}")
    return range(rank, num_shards, world_size)


def _atomic_write(path: Path, write: Callable[[Any], None], *, binary: bool) -> None:
    """Write through ``write(handle)`` into a temporary sibling, fsync it, then rename over ``path``.

    The rename is atomic on POSIX file systems, and the fsync keeps a crash right after it from leaving a renamed
    but empty file; so a reader (or a resumed run) sees the old file, no file, or the whole new one.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") if binary else tmp.open("w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda handle: json.dump(data, handle), binary=False)


def _write_model(path: Path, model: SegModel) -> None:
    text = model.to_json()
    _atomic_write(path, lambda handle: handle.write(text), binary=False)


def _read_ids(path: Path) -> list[str]:
    ids = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise ValueError(f"{path} must hold a JSON list of strings")
    return ids


def _shard_is_complete(root: Path, plan: StorePlan, shard: int) -> bool:
    """Whether shard ``shard`` exists whole with the plan's shape (a resumed run skips it)."""
    embeddings_name, ids_name = _shard_names(shard)
    expected = len(plan.shard_rows(shard))
    try:
        array = np.load(root / embeddings_name, mmap_mode="r")
        ids = _read_ids(root / ids_name)
    except (OSError, ValueError):  # missing, or not a valid .npy / JSON: embed it again
        return False
    return array.shape == (expected, plan.dim) and array.dtype == np.float16 and len(ids) == expected


def _collate(items: Sequence[object]) -> tuple[list[str], Tensor]:
    # Items come from user code: check them at run time, whatever the Protocol promises.
    ids: list[str] = []
    images: list[Tensor] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"a collection item must be a pair (image_id: str, image: Tensor), got {type(item)}")
        image_id, image = item
        if not isinstance(image_id, str) or not image_id:
            raise TypeError(f"image ids must be non-empty strings, got {image_id!r}")
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image {image_id!r} must be a [3, H, W] tensor, got {shape}")
        ids.append(image_id)
        images.append(image)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise ValueError(
            f"images of one batch must share a size, got {sorted(sizes)} (ids {ids[0]!r}..{ids[-1]!r}); resize and "
            "crop in the collection to the encoder's input size"
        )
    return ids, torch.stack(images)


class _TextProgress:
    """``progress=True`` without a rich dependency: one status line on stderr, redrawn at most twice a second."""

    def __init__(self) -> None:
        self._last = 0.0
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == self._shown or (done < total and now - self._last < 0.5):
            return
        self._last, self._shown = now, done
        end = "\n" if done >= total else ""
        if sys.stderr.isatty():
            sys.stderr.write(f"\rembedding images: {done}/{total}{end}")
        elif done >= total or done == 0:
            sys.stderr.write(f"embedding images: {done}/{total}\n")
        sys.stderr.flush()


def _encoder_name(encoder: ImageTextEncoder) -> str:
    name = getattr(encoder, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(encoder).__qualname__


def _encoder_device(encoder: ImageTextEncoder) -> torch.device:
    if isinstance(encoder, torch.nn.Module):
        parameter = next(encoder.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def _distributed_barrier() -> None:
    if dist.get_backend() == "nccl":  # nccl needs to know the device, or it may pick the wrong one
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def embed_collection(
    encoder: ImageTextEncoder,
    collection: ImageCollection,
    out_dir: str | Path,
    *,
    encoder_name: str | None = None,
    batch_size: int = 64,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    collection_id: str | None = None,
    progress: bool | ProgressFn = True,
) -> EmbeddingStore:
    """Embed every image of ``collection`` into an on-disk store; resumes a killed run with the same arguments.

    Images go through ``encoder.encode_image`` in batches under ``torch.no_grad()``; each ``[B, D]`` output is
    L2-normalised in float32 and stored as float16 (at D ≥ 128 the rounding moves a cosine by about 1e-3).

    Under ``torch.distributed`` (``torchrun``), rank ``r`` embeds shards ``r, r + world, ...``
    (:func:`shard_assignment`) and rank 0 writes the manifest after a barrier; every rank returns the store.
    A rank that fails leaves the others waiting at the barrier until the process group's timeout.

    Args:
        encoder: Any :class:`seg_core.ImageTextEncoder` (only ``encode_image`` and ``embed_dim`` are used).
        collection: ``collection[i] -> (image_id, [3, H, W] normalised image)``, see :class:`ImageCollection`.
        out_dir: The store folder: new, empty, or a store of the same plan (resumed).
        encoder_name: Name recorded in the store; default the encoder's ``name`` attribute, else its class name.
        batch_size: Images per ``encode_image`` call.
        shard_size: Rows per shard file.
        num_workers: ``DataLoader`` worker processes loading images (0: load in this process).
        device: Where images are sent; default the device of the encoder's parameters (CPU for non-modules).
        collection_id: Optional fingerprint of the collection (e.g. a digest of its file list), recorded in the
            plan; a re-run with a different one is refused.
        progress: ``True``: a status line on stderr; ``False``: nothing; a function: called as
            ``progress(done, total)``. Under ``torch.distributed`` only rank 0 reports, counting its own images.

    Returns:
        The store, opened (memory-mapped).

    Raises:
        ValueError: ``batch_size``, ``shard_size`` or ``num_workers`` out of range, an empty collection, or an
            encoder output that is not ``[B, embed_dim]``.
        ConfigError: ``out_dir`` holds a store of another plan (other encoder, dimension, size, shard size,
            collection), or is a non-empty folder that is not a store.
    """
    rank, world_size, barrier = _process_group()
    return _embed_on_rank(
        encoder,
        collection,
        Path(out_dir),
        encoder_name=encoder_name,
        batch_size=batch_size,
        shard_size=shard_size,
        num_workers=num_workers,
        device=device,
        collection_id=collection_id,
        progress=progress,
        rank=rank,
        world_size=world_size,
        barrier=barrier,
    )


def _process_group() -> tuple[int, int, Callable[[], None]]:
    """``(rank, world size, barrier)`` of the ``torch.distributed`` process group, or ``(0, 1, no-op)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), _distributed_barrier
    return 0, 1, _no_barrier


def _no_barrier() -> None:
    return None


def _embed_on_rank(
    encoder: ImageTextEncoder,
    collection: ImageCollection,
    root: Path,
    *,
    encoder_name: str | None,
    batch_size: int,
    shard_size: int,
    num_workers: int,
    device: torch.device | str | None,
    collection_id: str | None,
    progress: bool | ProgressFn,
    rank: int,
    world_size: int,
    barrier: Callable[[], object],
) -> EmbeddingStore:
    """:func:`embed_collection` for one rank of ``world_size`` with an explicit ``barrier`` (testable in threads)."""
    for name, value, minimum in (("batch_size", batch_size, 1), ("shard_size", shard_size, 1)):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    count = len(collection)
    if count == 0:
        raise ValueError("the collection is empty; there is nothing to embed")
    dim = int(encoder.embed_dim)
    plan = StorePlan(
        encoder=encoder_name or _encoder_name(encoder),
        dim=dim,
        count=count,
        shard_size=shard_size,
        collection=collection_id,
    )
    # Every rank checks the folder before anyone writes, so all ranks raise the same error (and none waits
    # forever at a barrier that a failed rank never reaches).
    existing = _check_store_folder(root, plan)
    barrier()
    if rank == 0 and existing is None:
        root.mkdir(parents=True, exist_ok=True)
        _write_model(root / PLAN_FILE, plan)
    barrier()

    report: ProgressFn | None
    if rank != 0 or progress is False:
        report = None
    elif progress is True:
        report = _TextProgress()
    else:
        report = progress
    mine = shard_assignment(plan.num_shards, rank, world_size)
    total = sum(len(plan.shard_rows(shard)) for shard in mine)
    target = torch.device(device) if device is not None else _encoder_device(encoder)
    done = 0
    if report is not None:
        report(0, total)
    for shard in mine:
        rows = plan.shard_rows(shard)
        if not _shard_is_complete(root, plan, shard):
            _embed_shard(
                encoder,
                collection,
                root,
                plan,
                shard,
                batch_size=batch_size,
                num_workers=num_workers,
                device=target,
                done_before=done,
                total=total,
                report=report,
            )
        done += len(rows)
        if report is not None:
            report(done, total)
    barrier()
    if rank == 0:
        _finish(root, plan)
    barrier()
    return EmbeddingStore.open(root)


def _existing_plan(root: Path) -> StorePlan | None:
    for name, model in ((MANIFEST_FILE, StoreManifest), (PLAN_FILE, StorePlan)):
        path = root / name
        if path.is_file():
            return model.load(path).as_plan()
    return None


def _embed_shard(
    encoder: ImageTextEncoder,
    collection: ImageCollection,
    root: Path,
    plan: StorePlan,
    shard: int,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    done_before: int,
    total: int,
    report: ProgressFn | None,
) -> None:
    rows = plan.shard_rows(shard)
    loader: DataLoader[Any] = DataLoader(
        cast(Any, collection),  # any object with __len__/__getitem__ is a map-style dataset
        batch_size=batch_size,
        sampler=list(rows),
        num_workers=num_workers,
        collate_fn=_collate,
    )
    embeddings = np.empty((len(rows), plan.dim), dtype=np.float16)
    ids: list[str] = []
    with torch.no_grad():
        for batch_ids, images in loader:
            output = encoder.encode_image(images.to(device))
            if output.ndim != 2 or output.shape != (len(batch_ids), plan.dim):
                raise ValueError(
                    f"encode_image returned shape {tuple(output.shape)} for {len(batch_ids)} images; expected "
                    f"[{len(batch_ids)}, {plan.dim}] (embed_dim)"
                )
            normalised = F.normalize(output.float(), dim=-1)
            embeddings[len(ids) : len(ids) + len(batch_ids)] = normalised.cpu().numpy().astype(np.float16)
            ids.extend(batch_ids)
            if report is not None:
                report(done_before + len(ids), total)
    embeddings_name, ids_name = _shard_names(shard)
    # ids first, embeddings last: a shard counts as complete only when both exist with matching lengths.
    _write_json(root / ids_name, ids)
    _atomic_write(root / embeddings_name, lambda handle: np.save(handle, embeddings), binary=True)


def _finish(root: Path, plan: StorePlan) -> None:
    missing = [shard for shard in range(plan.num_shards) if not _shard_is_complete(root, plan, shard)]
    if missing:
        raise RuntimeError(
            f"shards {missing[:10]} of {root} are missing or incomplete after every rank finished; re-run with the "
            "same arguments to embed them"
        )
    seen: set[str] = set()
    duplicates: list[str] = []
    for shard in range(plan.num_shards):
        for image_id in _read_ids(root / _shard_names(shard)[1]):
            if image_id in seen:
                duplicates.append(image_id)
            seen.add(image_id)
    if duplicates:
        raise ValueError(
            f"the collection repeats image ids {sorted(set(duplicates))[:5]}; ids must be unique (e.g. paths "
            "relative to the collection root)"
        )
    _write_model(root / MANIFEST_FILE, _manifest_for(plan))


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StoreShard:
    """One shard of an opened store.

    Attributes:
        start: Row of the store where the shard begins.
        ids: Image ids of its rows.
        embeddings: ``[n, D]`` float16 memory-mapped array (read-only).
    """

    start: int
    ids: tuple[str, ...]
    embeddings: npt.NDArray[np.float16]


class EmbeddingStore:
    """A complete embedding store, memory-mapped (rows are read from disk when touched).

    Open one with :meth:`open`. Row ``i`` is image ``ids[i]``; rows are L2-normalised float16.

    Attributes:
        root: The store folder.
        manifest: Its manifest.
    """

    def __init__(self, root: Path, manifest: StoreManifest, shards: Sequence[StoreShard]) -> None:
        self.root = root
        self.manifest = manifest
        self._shards = tuple(shards)
        self._starts = np.array([shard.start for shard in self._shards], dtype=np.int64)
        self._ids = tuple(image_id for shard in self._shards for image_id in shard.ids)
        self._positions: dict[str, int] | None = None

    @classmethod
    def open(cls, root: str | Path) -> EmbeddingStore:
        """Open the store in ``root``, checking every shard against the manifest.

        Raises:
            ConfigError: No manifest (not a store, or the run that writes it did not finish), a corrupt manifest,
                or a shard file that is missing or disagrees with it.
        """
        root = Path(root)
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            hint = (
                "the embedding run did not finish; re-run it with the same arguments to complete it"
                if (root / PLAN_FILE).is_file()
                else "write one with seg_retrieval.embed_collection or `seg retrieve embed`"
            )
            raise ConfigError(f"{root} is not a complete embedding store: {MANIFEST_FILE} is missing ({hint})")
        manifest = StoreManifest.load(manifest_path)
        shards = []
        for number, record in enumerate(manifest.shards):
            try:
                array = np.load(root / record.embeddings, mmap_mode="r")
                ids = _read_ids(root / record.ids)
            except (OSError, ValueError) as error:
                raise ConfigError(
                    f"shard {number} of the store in {root} cannot be read ({error}); re-run the embedding with the "
                    "same arguments to rewrite it"
                ) from None
            if array.shape != (record.count, manifest.dim) or array.dtype != np.float16 or len(ids) != record.count:
                raise ConfigError(
                    f"shard {number} of the store in {root} holds {array.shape} {array.dtype} rows and {len(ids)} "
                    f"ids, but the manifest says ({record.count}, {manifest.dim}) float16; the store is corrupt: "
                    "delete the shard files and re-run the embedding with the same arguments"
                )
            shards.append(StoreShard(start=record.start, ids=tuple(ids), embeddings=array))
        return cls(root, manifest, shards)

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.root)!r}, encoder={self.encoder!r}, count={len(self)}, dim={self.dim})"

    @property
    def encoder(self) -> str:
        """Name of the encoder that wrote the store."""
        return self.manifest.encoder

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return self.manifest.dim

    @property
    def ids(self) -> tuple[str, ...]:
        """Image ids, one per row, in row order."""
        return self._ids

    def shards(self) -> Iterator[StoreShard]:
        """The shards in row order (memory-mapped ``[n, D]`` float16 arrays with their ids)."""
        return iter(self._shards)

    def index_of(self, image_id: str) -> int:
        """Row of ``image_id``.

        Raises:
            KeyError: The store has no such image.
        """
        if self._positions is None:
            self._positions = {image_id: row for row, image_id in enumerate(self._ids)}
        try:
            return self._positions[image_id]
        except KeyError:
            raise KeyError(f"no image {image_id!r} in the store {self.root}") from None

    def embeddings(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]] | slice) -> Tensor:
        """Rows ``indices`` as ``[n, D]`` float32 (still L2-normalised up to float16 rounding), in the given order.

        Raises:
            IndexError: An index outside ``[-len, len)``.
        """
        rows = _checked_rows(indices, len(self))
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for number in np.unique(shard_of):
            take = shard_of == number
            shard = self._shards[int(number)]
            local = rows[take] - shard.start
            order = np.argsort(local, kind="stable")  # sorted reads are sequential on disk
            block = np.empty((local.size, self.dim), dtype=np.float32)
            block[order] = shard.embeddings[local[order]]
            out[take] = block
        return torch.from_numpy(out)


def _checked_rows(indices: Sequence[int] | npt.NDArray[np.integer[Any]] | slice, count: int) -> npt.NDArray[np.int64]:
    """``indices`` of a store of ``count`` rows as non-negative int64 row numbers (negative ones count from the end).

    Raises:
        ValueError: ``indices`` is not one-dimensional.
        IndexError: An index outside ``[-count, count)``.
    """
    rows = np.arange(count)[indices] if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {rows.shape}")
    bad = rows[(rows < -count) | (rows >= count)]
    if bad.size:
        raise IndexError(f"row {int(bad[0])} out of range for a store of {count} embeddings")
    return np.where(rows < 0, rows + count, rows).astype(np.int64)


def _check_store_folder(root: Path, plan: StorePlan) -> StorePlan | None:
    """The plan already in ``root`` (a run to resume), or ``None`` for a new or empty folder.

    Raises:
        ConfigError: ``root`` holds a store of another plan (the differing fields are named), or something that is
            not a store.
    """
    existing = _existing_plan(root)
    if existing is not None:
        differences = plan.differences(existing)
        if differences:
            raise ConfigError(
                f"{root} holds an embedding store of different arguments ({'; '.join(differences)}, stored != "
                "requested); re-run with the stored arguments to resume it, or write to a new folder"
            )
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(
            f"out_dir {root} exists and is not an embedding store (no {PLAN_FILE}); choose a new or empty folder"
        )
    return existing
