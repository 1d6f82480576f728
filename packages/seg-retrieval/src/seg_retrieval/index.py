"""faiss nearest-neighbour indexes over embedding stores (flat, IVF-Flat, IVF-PQ, HNSW), CPU or GPU, save/load.

ReCo builds each concept's archive from the ``k`` nearest images of the collection to the concept's text embedding
and notes that "thanks to mature approximate nearest neighbour search techniques [Johnson et al., faiss], this archive
construction process can be readily applied to a collection containing billions of images" (Sec. 3.1). Here every
index does maximum inner product search over L2-normalised vectors, so scores are cosine similarities; vectors and
queries are normalised on the way in.

Which index (Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs", 2017; the faiss wiki's
"Guidelines to choose an index"):

* ``flat``: exact, no training, memory ``4·N·D`` bytes, time linear in ``N``; the right choice up to a few million.
* ``ivf_flat``: k-means into ``nlist`` lists, search visits ``nprobe`` of them; exact vectors, so recall is bounded
  only by the lists visited. ``nlist`` ≈ 4·√N to 16·√N.
* ``ivf_pq``: IVF with product-quantised residuals (``pq_m`` codes of ``pq_bits`` bits per vector): ~``pq_m`` bytes
  per vector instead of ``4·D``; approximate scores, which ``IndexConfig.rerank`` corrects by re-scoring the best
  candidates with exact vectors from the embedding store (faiss's ``IndexRefine`` idea). For billions of images.
* ``hnsw``: a graph, no training, fast and accurate at high recall but slow to build and ~``4·D + 8·hnsw_m`` bytes
  per vector; CPU only in faiss.

Indexes larger than memory: with ``IndexConfig.on_disk`` an IVF index keeps its inverted lists in a memory-mapped
file (``index.ivfdata``, faiss's ``OnDiskInvertedLists``) next to ``index.faiss``; only the coarse centroids (and PQ
codebooks) live in RAM. It is built the way faiss's own on-disk recipe does it (``faiss/contrib/ondisk.py``): the
empty trained index is kept, each block of the store is added to a copy of it and written as a part, and the parts'
lists are merged into the on-disk file; a build that dies resumes from the parts already written.

Choosing parameters for a memory budget: :func:`estimate_index_bytes` gives what a config's faiss index holds in RAM
and :func:`config_for_memory` picks the most accurate kind that fits a budget: exact ``flat`` while it fits (and the
collection is small enough for exact search to be fast), then ``ivf_flat``, then ``ivf_pq`` with the largest code
that fits, then ``ivf_pq`` on disk. This is the rule autofaiss follows (the largest product-quantisation code that
fits the memory budget, https://criteo.github.io/autofaiss/), written here because autofaiss pins ``numpy<2`` and
would downgrade the rest of the stack; the coarse quantiser stays a flat one unless the base config asks for
``coarse_quantizer="hnsw"`` (autofaiss's IVF-HNSW), which large collections should.

Indexes built elsewhere: :meth:`EmbeddingIndex.from_faiss` wraps a faiss index that another tool wrote (LAION's
published knn indexes, built by autofaiss / clip-retrieval with factory strings such as ``IVF16384_HNSW32,PQ128x8``
or ``OPQ256_768,IVF131072_HNSW32,PQ256x8``) without recomputing anything. The file is memory-mapped where faiss
allows it (the inverted lists of an IVF index; lists already in a separate ``.ivfdata`` file are found next to the
index file), the :class:`IndexConfig` is read off the index (through pre-transforms such as OPQ), and an L2 index
is accepted by converting its squared distances between unit vectors to cosines: ``‖q − x‖² = 2 − 2·cos(q, x)``.

Contents: :class:`IndexConfig`; device resolution; memory estimates; :func:`build_index`; :class:`EmbeddingIndex`
(with :meth:`~EmbeddingIndex.from_faiss`); :func:`read_faiss_index`.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

import faiss
import numpy as np
import numpy.typing as npt
import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor

from seg_core import ConfigError, SegModel
from seg_retrieval.store import EmbeddingStore, _atomic_write, _process_group

__all__ = [
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INDEX_IDS_FILE",
    "INDEX_IVFDATA_FILE",
    "INDEX_MANIFEST_FILE",
    "INDEX_VERSION",
    "EmbeddingIndex",
    "IndexConfig",
    "IndexDevice",
    "IndexKind",
    "IndexManifest",
    "IndexMetric",
    "RowStore",
    "build_index",
    "config_for_memory",
    "default_nlist",
    "estimate_index_bytes",
    "gpu_available",
    "parse_bytes",
    "read_faiss_index",
    "resolve_device",
]

IndexKind = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]
CoarseQuantizer = Literal["flat", "hnsw"]
IndexDevice = Literal["auto", "cpu", "gpu"]
IndexMetric = Literal["inner_product", "l2"]

INDEX_FORMAT: Final = "seg-embedding-index"
INDEX_VERSION: Final = 1
INDEX_FILE: Final = "index.faiss"
INDEX_IDS_FILE: Final = "ids.json"
INDEX_MANIFEST_FILE: Final = "index.json"
INDEX_IVFDATA_FILE: Final = "index.ivfdata"
_PARTS_DIR = ".parts"  # in-progress parts of an on-disk build (hidden: copies and uploads skip it)

_ADD_CHUNK = 65_536  # rows normalised and added at a time: bounds the float32 copy to 65536·D·4 bytes
_GPU_MAX_K = 2048  # faiss GPU k-selection limit (also the largest nprobe)
_RERANK_BLOCK = 1 << 22  # float32 values of candidate vectors re-scored at a time (16 MB)


class IndexConfig(SegModel):
    """How to index an embedding collection (inner product on L2-normalised vectors; L2 only for imported indexes).

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf_flat"``, ``"ivf_pq"`` or ``"hnsw"``.
        nlist: IVF lists; ``None``: :func:`default_nlist` (4·√N, at most N).
        nprobe: IVF lists visited per query (recall/speed knob; at most ``nlist``).
        pq_m: IVF-PQ sub-quantisers (bytes per vector at 8 bits); must divide the dimension.
        pq_bits: Bits per sub-quantiser code (``2 ** pq_bits`` centroids each).
        hnsw_m: HNSW neighbours per node (of the index, or of an HNSW coarse quantiser).
        ef_search: HNSW candidate-list size at search (faiss uses at least ``k``); for an IVF index with an HNSW
            coarse quantiser (``IVF..._HNSW32``), the quantiser's. ``None``: :attr:`search_breadth`'s default, 128
            for an HNSW index and 16 for an HNSW coarse quantiser (the graph beats the exhaustive comparison only at
            a small breadth; faiss raises it to ``nprobe`` at search).
        ef_construction: HNSW candidate-list size at build.
        train_size: Vectors sampled to train IVF (and PQ); ``None``: ``min(N, max(64·nlist, 2 ** pq_bits · 39))``.
        seed: Seed of the training sample and the k-means initialisation.
        device: ``"gpu"`` needs GPU faiss (extra ``seg-retrieval[gpu]``); ``"auto"`` uses it when installed and a GPU
            is visible (never for HNSW, which faiss runs on CPU only), else the CPU.
        on_disk: IVF kinds only: keep the inverted lists in a memory-mapped file next to the saved index instead of
            in RAM (for indexes larger than memory); built and searched on the CPU, and
            :func:`build_index` needs the ``directory`` to write it to. An index imported by
            :meth:`EmbeddingIndex.from_faiss` has ``on_disk=True`` when its lists are memory-mapped from a file.
        metric: ``"inner_product"`` (everything :func:`build_index` makes) or ``"l2"``: an imported index over unit
            vectors searched by squared L2 distance ``d``, whose scores are converted to cosines ``1 - d / 2``.
        factory: The faiss factory description of an imported index (e.g. ``"OPQ8_32,IVF32,PQ8x4"``), ``None`` for
            one built by :func:`build_index`; informational (the saved faiss file holds the index itself).
        coarse_quantizer: IVF kinds: how a vector finds its lists. ``"flat"`` compares it with all ``nlist``
            centroids (``2·nlist·D`` flops per vector added or query); ``"hnsw"`` searches an HNSW graph over the
            centroids (``IVF{nlist}_HNSW{hnsw_m}``, the billion-scale faiss recipe and autofaiss's choice), about
            ``O(ef_search·hnsw_m·D)`` whatever ``nlist``: use it from tens of thousands of lists up. CPU only.
        rerank: Candidates per query re-scored exactly: :meth:`EmbeddingIndex.search` fetches ``max(k, rerank)``
            approximate neighbours (at most the index size, and faiss GPU's k limit of 2048 on a GPU), reads their
            vectors from the embedding store the index was built from, and keeps the ``k`` best by exact cosine,
            which lifts IVF-PQ's recall towards that of the lists visited. ``None``: no re-ranking. A search-time
            knob (:meth:`EmbeddingIndex.set_search_params`); searching needs the store.
    """

    kind: IndexKind = "flat"
    nlist: PositiveInt | None = None
    nprobe: PositiveInt = 32
    pq_m: PositiveInt = 64
    pq_bits: int = Field(default=8, ge=1, le=16)
    hnsw_m: int = Field(default=32, ge=2)
    ef_search: PositiveInt | None = None
    ef_construction: PositiveInt = 200
    train_size: PositiveInt | None = None
    seed: int = 0
    device: IndexDevice = "auto"
    on_disk: bool = False
    metric: IndexMetric = "inner_product"
    factory: str | None = None
    coarse_quantizer: CoarseQuantizer = "flat"
    rerank: PositiveInt | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IndexConfig:
        if self.coarse_quantizer == "hnsw" and self.kind not in {"ivf_flat", "ivf_pq"}:
            raise ValueError(
                f"coarse_quantizer='hnsw' with kind={self.kind!r}: only IVF indexes have a coarse quantiser; use "
                "kind='ivf_pq' or 'ivf_flat', or coarse_quantizer='flat'"
            )
        if self.coarse_quantizer == "hnsw" and self.device == "gpu":
            raise ValueError(
                "coarse_quantizer='hnsw' with device='gpu': faiss runs HNSW on the CPU only; use device='cpu' or "
                "'auto', or coarse_quantizer='flat' on the GPU"
            )
        if self.on_disk and self.kind not in {"ivf_flat", "ivf_pq"}:
            raise ValueError(
                f"on_disk=True with kind={self.kind!r}: only IVF indexes keep their lists on disk; use "
                "kind='ivf_pq' (or 'ivf_flat'), or on_disk=False"
            )
        if self.on_disk and self.device == "gpu":
            raise ValueError(
                "on_disk=True with device='gpu': faiss searches on-disk inverted lists on the CPU only; use "
                "device='cpu' or 'auto'"
            )
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(
                f"nprobe={self.nprobe} exceeds nlist={self.nlist}; use nprobe <= nlist (nprobe = nlist is exhaustive)"
            )
        if self.nlist is not None and self.train_size is not None and self.train_size < self.nlist:
            raise ValueError(
                f"train_size={self.train_size} is smaller than nlist={self.nlist}; k-means needs at least one "
                "training vector per list (faiss recommends 39 or more): raise train_size or lower nlist"
            )
        return self

    @property
    def is_ivf(self) -> bool:
        """Whether the index is an inverted file (needs training)."""
        return self.kind in {"ivf_flat", "ivf_pq"}

    @property
    def search_breadth(self) -> int:
        """``ef_search``, or its default for the graph it sets: 16 for an IVF index's HNSW coarse quantiser, else
        128."""
        if self.ef_search is not None:
            return self.ef_search
        return 16 if self.is_ivf and self.coarse_quantizer == "hnsw" else 128


class IndexManifest(SegModel):
    """``index.json`` of a saved index: what it indexes and how it was built.

    Attributes:
        format: Always :data:`INDEX_FORMAT`.
        version: Layout version (:data:`INDEX_VERSION`).
        config: The config, with ``nlist`` and ``train_size`` resolved.
        dim: Vector dimension.
        count: Number of vectors (= ids).
        encoder: The encoder of the indexed embeddings, when known (from the store).
        store: Path of the indexed store, when built from one (used for exact vectors in :meth:`vectors`); a relative
            path is relative to the index folder (what published copies hold: ``../store``).
        faiss_version: faiss version that wrote the index file.
    """

    format: Literal["seg-embedding-index"] = INDEX_FORMAT
    version: Literal[1] = INDEX_VERSION
    config: IndexConfig
    dim: PositiveInt
    count: PositiveInt
    encoder: str | None = None
    store: str | None = None
    faiss_version: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Devices and defaults
# ---------------------------------------------------------------------------------------------------------------


def gpu_available() -> bool:
    """Whether the installed faiss has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


def resolve_device(device: IndexDevice, kind: IndexKind, *, has_gpu: bool | None = None) -> Literal["cpu", "gpu"]:
    """Where an index of ``kind`` runs under the ``device`` setting.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        kind: The index kind (faiss has no GPU HNSW).
        has_gpu: Whether GPU faiss is usable; default :func:`gpu_available`.

    Raises:
        ConfigError: ``device="gpu"`` without GPU faiss or with ``kind="hnsw"``.
    """
    usable = gpu_available() if has_gpu is None else has_gpu
    if device == "cpu":
        return "cpu"
    if device == "gpu":
        if kind == "hnsw":
            raise ConfigError(
                "IndexConfig.device='gpu' with kind='hnsw': faiss runs HNSW on the CPU only; use device='cpu' or "
                "'auto', or kind='ivf_flat' / 'flat' on the GPU"
            )
        if not usable:
            raise ConfigError(
                "IndexConfig.device='gpu' but the installed faiss has no GPU support or sees no GPU; install "
                "seg-retrieval[gpu] (faiss-gpu-cu12) on a CUDA machine, or use device='auto' or 'cpu'"
            )
        return "gpu"
    return "gpu" if usable and kind != "hnsw" else "cpu"


def default_nlist(count: int) -> int:
    """IVF lists for ``count`` vectors: ``round(4·√count)`` clamped to ``[1, count]`` (faiss guideline's low end)."""
    return max(1, min(count, round(4 * math.sqrt(count))))


def _resolved_config(config: IndexConfig, count: int, dim: int) -> IndexConfig:
    """``config`` with ``nlist``/``train_size`` filled in for ``count`` vectors of ``dim``, checked against them."""
    if not config.is_ivf:
        return config
    nlist = config.nlist if config.nlist is not None else default_nlist(count)
    if nlist > count:
        low, high = round(4 * math.sqrt(count)), round(16 * math.sqrt(count))
        raise ConfigError(
            f"IndexConfig.nlist={nlist} exceeds the {count} vectors to index: every IVF list needs training vectors; "
            f"use nlist <= {count} (the faiss guideline is 4·√N..16·√N = {min(low, count)}..{min(high, count)}) or "
            "kind='flat', which is exact and fast at this size"
        )
    if config.nprobe > nlist:
        raise ConfigError(f"IndexConfig.nprobe={config.nprobe} exceeds nlist={nlist}; use nprobe <= {nlist}")
    if config.kind == "ivf_pq":
        if dim % config.pq_m:
            divisors = [m for m in (4, 8, 16, 32, 48, 64, 96, 128) if dim % m == 0]
            raise ConfigError(
                f"IndexConfig.pq_m={config.pq_m} does not divide the dimension {dim}; product quantisation splits "
                f"each vector into pq_m equal parts: use one of {divisors or [1]}"
            )
        if 2**config.pq_bits > count:
            raise ConfigError(
                f"IndexConfig.pq_bits={config.pq_bits} needs {2**config.pq_bits} training vectors per sub-quantiser "
                f"but only {count} vectors exist; lower pq_bits to {max(1, int(math.log2(count)))} or use ivf_flat"
            )
    wanted = 2**config.pq_bits * 39 if config.kind == "ivf_pq" else 0
    train_size = config.train_size if config.train_size is not None else min(count, max(64 * nlist, wanted))
    train_size = min(train_size, count)
    if train_size < nlist:
        raise ConfigError(
            f"IndexConfig.train_size={train_size} is smaller than nlist={nlist}; raise train_size to >= {nlist}"
        )
    if config.kind == "ivf_pq" and train_size < 2**config.pq_bits:
        raise ConfigError(
            f"IndexConfig.train_size={train_size} is smaller than the {2**config.pq_bits} PQ centroids of "
            f"pq_bits={config.pq_bits}; raise train_size"
        )
    return config.model_copy(update={"nlist": nlist, "train_size": train_size})


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------

_UNITS: Final = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20}
_UNITS.update({"GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12})
_FLAT_SEARCH_MAX = 5_000_000  # beyond this, exact search of 1,000 queries takes minutes (docs/benchmarks.md)
_PQ_CHOICES: Final = (128, 96, 64, 48, 32, 24, 16, 8, 4)  # sub-quantisers tried, most accurate first


def parse_bytes(value: str | int) -> int:
    """A size such as ``"16GB"``, ``"512 MiB"`` or ``4_000_000`` in bytes (decimal units; ``KiB``.. binary).

    Raises:
        ValueError: Not a positive size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        text = str(value).strip().upper().replace(" ", "").replace("_", "")
        split = len(text.rstrip("KMGTIB"))
        number_text, unit = text[:split], text[split:]
        try:
            number = float(number_text)
        except ValueError:
            number = -1.0
        if unit not in _UNITS:
            number = -1.0
    if not number > 0:
        raise ValueError(f"memory size {value!r} is not a positive size; write e.g. '16GB', '512MB' or '2GiB'")
    return int(number * _UNITS[unit])


def estimate_index_bytes(config: IndexConfig, count: int, dim: int) -> int:
    """Bytes the faiss index of ``config`` over ``count`` vectors of ``dim`` holds in RAM once built.

    The dominant terms, as in faiss's storage layout: vectors (``4·D`` bytes each for flat and IVF-Flat, the PQ code
    of ``pq_m·pq_bits/8`` bytes for IVF-PQ, plus HNSW's ``2·hnsw_m`` 4-byte links on its base level), the 8-byte id
    IVF lists store per vector, the ``nlist·D`` float32 coarse centroids and the PQ codebooks. With ``on_disk`` the
    lists are memory-mapped and only the centroids and codebooks count. The image-id strings kept next to the index
    (a Python tuple, about 60-100 bytes per id) are not included.
    """
    if count < 1 or dim < 1:
        raise ValueError(f"count and dim must be positive, got count={count}, dim={dim}")
    if config.kind == "flat":
        return 4 * count * dim
    if config.kind == "hnsw":
        return count * (4 * dim + 4 * 2 * config.hnsw_m)
    nlist = config.nlist if config.nlist is not None else default_nlist(count)
    fixed = 4 * nlist * dim
    if config.coarse_quantizer == "hnsw":
        fixed += nlist * 4 * 2 * config.hnsw_m  # the graph's base-level links over the centroids
    if config.kind == "ivf_pq":
        fixed += 4 * (2**config.pq_bits) * dim  # pq_m codebooks of 2**pq_bits centroids of D/pq_m dims
        per_vector = math.ceil(config.pq_m * config.pq_bits / 8) + 8
    else:
        per_vector = 4 * dim + 8
    return fixed if config.on_disk else fixed + count * per_vector


def config_for_memory(
    count: int,
    dim: int,
    budget: int | str,
    *,
    flat_max: int = _FLAT_SEARCH_MAX,
    allow_on_disk: bool = True,
    base: IndexConfig | None = None,
) -> IndexConfig:
    """The most accurate index config whose faiss index fits in ``budget`` bytes of RAM.

    In order: exact ``flat`` (when it fits and ``count <= flat_max``); ``ivf_flat``; ``ivf_pq`` in RAM with the
    largest ``pq_m`` that fits (8-bit codes, ``pq_m`` dividing ``dim``, at most ``dim / 2``), down to ``dim / 8``;
    then, with ``allow_on_disk``, ``ivf_pq`` with ``pq_m`` about ``dim / 8`` and its lists on disk (disk is cheap, but
    every probed list is read from it); then shorter codes in RAM. ``nlist`` is ``base.nlist`` or
    :func:`default_nlist`. Estimates are :func:`estimate_index_bytes`; building needs the training sample and one
    block of rows on top (``train_size·D·4`` and ``65,536·D·4`` bytes).

    Args:
        count: Vectors to index.
        dim: Their dimension.
        budget: RAM for the index, in bytes or as a size string (``"16GB"``).
        flat_max: Largest collection indexed exactly even when it would fit.
        allow_on_disk: Whether an on-disk IVF-PQ may be chosen when nothing fits in RAM.
        base: Settings kept from this config (``nlist`` when set, ``nprobe``, ``seed``, ``device``, ...); ``kind``,
            ``pq_m``, ``pq_bits`` and ``on_disk`` are chosen here (and ``metric``, ``factory`` left at their
            defaults: the result is for :func:`build_index`).

    Raises:
        ConfigError: Nothing fits, not even the centroids of an on-disk index; the message names the least
            budget that works.
    """
    limit = parse_bytes(budget)
    base = base if base is not None else IndexConfig()
    keep = base.model_dump(exclude={"kind", "pq_m", "pq_bits", "on_disk", "metric", "factory"})
    nlist = base.nlist if base.nlist is not None else default_nlist(count)
    if base.nprobe > nlist:
        keep["nprobe"] = nlist
    candidates: list[IndexConfig] = []
    if count <= flat_max:
        candidates.append(IndexConfig(kind="flat", **(keep | {"coarse_quantizer": "flat"})))
    if count >= 2:
        candidates.append(IndexConfig(kind="ivf_flat", **keep))
    pq_ms = [m for m in _PQ_CHOICES if dim % m == 0 and m <= dim // 2]
    if count >= 256:  # 8-bit codes need 256 training vectors
        disk_m = next((m for m in pq_ms if m <= max(dim // 8, 4)), pq_ms[-1] if pq_ms else None)
        for m in pq_ms:  # an on-disk index with a longer code beats an in-RAM one with a shorter code
            if allow_on_disk and m == disk_m:
                candidates.append(IndexConfig(kind="ivf_pq", pq_m=m, pq_bits=8, **keep))
                candidates.append(IndexConfig(kind="ivf_pq", pq_m=m, pq_bits=8, on_disk=True, **keep))
            else:
                candidates.append(IndexConfig(kind="ivf_pq", pq_m=m, pq_bits=8, **keep))
    for candidate in candidates:
        if candidate.on_disk and candidate.device == "gpu":
            continue
        if estimate_index_bytes(candidate, count, dim) <= limit:
            return candidate
    least = min(
        (estimate_index_bytes(candidate, count, dim) for candidate in candidates),
        default=4 * count * dim,
    )
    raise ConfigError(
        f"no index over {count} vectors of dimension {dim} fits in {limit:,} bytes; the smallest "
        f"({'on disk' if allow_on_disk else 'in RAM'}) needs {least:,} bytes: raise the memory budget"
        + ("" if allow_on_disk else " or allow an on-disk index")
    )


def _factory_string(config: IndexConfig) -> str:
    if config.kind == "flat":
        return "Flat"
    ivf = f"IVF{config.nlist}" + (f"_HNSW{config.hnsw_m}" if config.coarse_quantizer == "hnsw" else "")
    if config.kind == "ivf_flat":
        return f"{ivf},Flat"
    if config.kind == "ivf_pq":
        # "np": no polysemous training, which the factory turns on by default; it only serves Hamming-distance
        # filtering, which we never use, and multiplies training time (9.9 s instead of 2.8 s for 2,000 x 32).
        return f"{ivf},PQ{config.pq_m}x{config.pq_bits}np"
    return f"HNSW{config.hnsw_m},Flat"


# ---------------------------------------------------------------------------------------------------------------
# Vector sources
# ---------------------------------------------------------------------------------------------------------------


def _normalised(rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A float32, C-contiguous, L2-normalised copy of ``rows`` (zero rows stay zero)."""
    array = np.array(rows, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(array)
    return array


def _normalised_slice(rows: npt.NDArray[Any], start: int) -> npt.NDArray[np.float32]:
    return _normalised(rows[start : start + _ADD_CHUNK])


class _Source:
    """Rows to index, from a store (shard by shard) or an in-memory ``[N, D]`` array."""

    def __init__(self, source: EmbeddingStore | npt.NDArray[Any] | Tensor, ids: Sequence[str] | None) -> None:
        self.store: EmbeddingStore | None = None
        self.array: npt.NDArray[Any] | None = None
        if isinstance(source, EmbeddingStore):
            if ids is not None:
                raise ValueError("ids must be None when indexing a store: the store's own ids are used")
            self.store = source
            self.count, self.dim = len(source), source.dim
            self.ids: tuple[str, ...] = source.ids
            return
        if isinstance(source, Tensor):
            array = source.detach().cpu().numpy()
        elif isinstance(source, np.ndarray):
            array = source
        else:
            raise TypeError(
                f"build_index indexes an EmbeddingStore, a numpy array or a torch Tensor, got {type(source).__name__}"
            )
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
            raise ValueError(f"vectors must be a non-empty [N, D] array, got shape {tuple(array.shape)}")
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"vectors must be floating point, got dtype {array.dtype}")
        self.array = array
        self.count, self.dim = int(array.shape[0]), int(array.shape[1])
        if ids is None:
            self.ids = tuple(str(row) for row in range(self.count))
        else:
            self.ids = tuple(ids)
            if len(self.ids) != self.count:
                raise ValueError(f"ids has {len(self.ids)} entries for {self.count} vectors; give one id per row")

    def chunks(self) -> Iterator[npt.NDArray[np.float32]]:
        """Normalised float32 blocks of at most ``_ADD_CHUNK`` rows, in row order."""
        for _, read in self.blocks():
            yield read()

    def blocks(self) -> Iterator[tuple[int, Callable[[], npt.NDArray[np.float32]]]]:
        """``(first row, read)`` of each block of at most ``_ADD_CHUNK`` rows (within a store shard), in row order;
        ``read()`` loads the block normalised, so a caller can skip blocks without reading them."""
        if self.store is not None:
            offset = 0
            for shard in self.store.shards():
                for start in range(0, len(shard.ids), _ADD_CHUNK):
                    yield offset + start, functools.partial(_normalised_slice, shard.embeddings, start)
                offset += len(shard.ids)
            return
        assert self.array is not None
        for start in range(0, self.count, _ADD_CHUNK):
            yield start, functools.partial(_normalised_slice, self.array, start)

    def sample(self, size: int, seed: int) -> npt.NDArray[np.float32]:
        """``size`` distinct rows drawn uniformly (sorted, for sequential reads), normalised."""
        rows = np.sort(np.random.default_rng(seed).choice(self.count, size=size, replace=False))
        if self.store is not None:
            return _normalised(self.store.embeddings(rows).numpy())
        assert self.array is not None
        return _normalised(self.array[rows])


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------


def build_index(
    source: EmbeddingStore | npt.NDArray[Any] | Tensor,
    config: IndexConfig | None = None,
    *,
    ids: Sequence[str] | None = None,
    encoder: str | None = None,
    directory: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EmbeddingIndex:
    """Build a faiss index over a store or an ``[N, D]`` array (rows are L2-normalised first).

    IVF kinds are trained (k-means, and PQ codebooks) on ``config.train_size`` rows sampled with ``config.seed``;
    rows are then added in blocks of 65,536, so indexing a store never holds more than one block in float32
    beyond the index itself. With ``config.on_disk`` each block goes into a part file under ``directory`` and the
    parts are merged into ``directory/index.ivfdata`` (resumable: a rerun with the same config and rows keeps the
    trained index and the parts already written); the index is then saved in ``directory``. Under ``torchrun`` the
    parts are split across ranks (rank 0 trains and merges; ``directory`` on a file system all ranks see).

    Args:
        source: An :class:`~seg_retrieval.store.EmbeddingStore` or ``[N, D]`` float vectors.
        config: How to index; default ``IndexConfig()`` (exact ``flat``, ``device="auto"``).
        ids: One id per row of an array source; default ``"0" .. "N-1"``. Must be ``None`` for a store.
        encoder: Name of the encoder of an array source, recorded with the index (a store brings its own).
        directory: Where an on-disk index is built and saved (required with ``on_disk``, unused otherwise).
        progress: Called with ``(rows added, total rows)`` after each block.

    Returns:
        The index, searchable and savable.

    Raises:
        ConfigError: ``nlist`` larger than ``N``, ``pq_m`` not dividing ``D``, too few training vectors, an
            unusable ``device`` (see :func:`resolve_device`), ``on_disk`` without ``directory``, or a config of an
            imported index (``metric="l2"`` or a ``factory``).
        ValueError, TypeError: A source that is not ``[N, D]`` floats, or ``ids`` of the wrong length.
    """
    config = config if config is not None else IndexConfig()
    if config.metric != "inner_product" or config.factory is not None:
        raise ConfigError(
            f"IndexConfig(metric={config.metric!r}, factory={config.factory!r}) describes an index imported with "
            "EmbeddingIndex.from_faiss; build_index makes inner-product indexes from kind/nlist/pq_m/...: use "
            "metric='inner_product' and factory=None"
        )
    rows = _Source(source, ids)
    config = _resolved_config(config, rows.count, rows.dim)
    if config.on_disk and directory is None:
        raise ConfigError(
            "IndexConfig.on_disk=True needs a folder for the inverted lists: pass build_index(..., directory=DIR) "
            "(`seg retrieve index --on-disk` uses --out)"
        )
    cpu_only = config.on_disk or config.coarse_quantizer == "hnsw"  # faiss has neither on the GPU
    device = "cpu" if cpu_only else resolve_device(config.device, config.kind)
    index: Any = None if config.on_disk else _empty_index(config, rows.dim)
    resources = None
    if device == "gpu":  # train and add on the GPU too: the k-means assignment is the expensive part
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    store_path = str(rows.store.root.resolve()) if rows.store is not None else None
    recorded_encoder = rows.store.encoder if rows.store is not None else encoder
    if config.on_disk:
        assert directory is not None
        index = _build_on_disk(rows, config, Path(directory), progress)
    else:
        if config.is_ivf:
            assert config.train_size is not None
            index.train(rows.sample(config.train_size, config.seed))
        added = 0
        for block in rows.chunks():
            index.add(block)
            added += block.shape[0]
            if progress is not None:
                progress(added, rows.count)
    built = EmbeddingIndex(
        index,
        rows.ids,
        config,
        device=device,
        encoder=recorded_encoder,
        store=store_path,
        opened_store=rows.store,
        gpu_resources=resources,
        ivfdata=Path(directory) / INDEX_IVFDATA_FILE if config.on_disk and directory is not None else None,
    )
    if config.on_disk:
        assert directory is not None
        rank, _, barrier = _process_group()
        if rank == 0:
            built.save(directory)
            shutil.rmtree(Path(directory) / _PARTS_DIR, ignore_errors=True)
        barrier()
    return built


def _empty_index(config: IndexConfig, dim: int) -> Any:
    """The untrained faiss index of ``config`` (inner product), with its seeds and build knobs set."""
    index: Any = faiss.index_factory(dim, _factory_string(config), faiss.METRIC_INNER_PRODUCT)
    if config.kind == "hnsw":
        index.hnsw.efConstruction = config.ef_construction
    if config.is_ivf:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = config.seed
        if config.kind == "ivf_pq":
            index.pq.cp.seed = config.seed
        if config.coarse_quantizer == "hnsw":
            quantizer: Any = faiss.downcast_index(ivf.quantizer)
            quantizer.hnsw.efConstruction = config.ef_construction
            quantizer.hnsw.efSearch = config.search_breadth
    return index


def _build_on_disk(
    rows: _Source, config: IndexConfig, directory: Path, progress: Callable[[int, int], None] | None
) -> Any:
    """Train, add block by block into part files, and merge the parts' lists into ``directory/index.ivfdata``.

    Resuming is safe against changed inputs: the trained index is reused only for the same config, ids and training
    sample, and a part only when the digest of its block's rows is the one it was written from. Under
    ``torch.distributed`` (``torchrun``) rank 0 trains, every rank builds the parts ``rank, rank + world, ...``
    (``directory`` must be on a file system all ranks see), and rank 0 merges; every rank returns the index.
    """
    from faiss.contrib.ondisk import merge_ondisk

    rank, world_size, barrier = _process_group()
    parts = directory / _PARTS_DIR
    trained_file = parts / "trained.faiss"
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        assert config.train_size is not None
        sample = rows.sample(config.train_size, config.seed)
        plan = {
            "config": config.model_dump(
                mode="json", exclude={"nprobe", "ef_search", "rerank", "device", "metric", "factory"}
            ),
            "count": rows.count,
            "dim": rows.dim,
            "ids": _digest(*(image_id.encode("utf-8") + b"\0" for image_id in rows.ids)),
            "sample": _digest(sample.tobytes()),
        }
        plan_file = parts / "plan.json"
        if plan_file.is_file() and json.loads(plan_file.read_text(encoding="utf-8")) != plan:
            shutil.rmtree(parts)  # another config or other rows: nothing written before is valid for this build
            parts.mkdir(parents=True)
        _atomic_write(plan_file, functools.partial(_write_str, json.dumps(plan, sort_keys=True)), binary=False)
        if not trained_file.is_file():
            trained = _empty_index(config, rows.dim)
            trained.train(sample)
            _write_index(trained, trained_file)
        del sample
    barrier()
    trained = faiss.read_index(str(trained_file))
    part_files: list[str] = []
    for number, (start, read) in enumerate(rows.blocks()):
        part_file = parts / f"part-{number:05d}.faiss"
        part_files.append(str(part_file))
        if number % world_size != rank:
            continue
        block = read()
        digest_file = part_file.with_suffix(".digest")
        digest = _digest(block.tobytes())
        done = part_file.is_file() and digest_file.is_file() and digest_file.read_text(encoding="utf-8") == digest
        if not done:
            part = faiss.clone_index(trained)
            part.add_with_ids(block, np.arange(start, start + block.shape[0], dtype=np.int64))
            _write_index(part, part_file)
            _atomic_write(digest_file, functools.partial(_write_str, digest), binary=False)
        if progress is not None:
            progress(min(start + block.shape[0], rows.count), rows.count)
    barrier()
    ivfdata = directory / INDEX_IVFDATA_FILE
    if rank == 0:
        merged = trained
        ivfdata.unlink(missing_ok=True)  # merge_ondisk appends to an existing file
        merge_ondisk(merged, part_files, str(ivfdata))
        _write_index(merged, directory / INDEX_FILE)
    barrier()
    if rank == 0:
        return merged
    return faiss.read_index(str(directory / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)


def _digest(*chunks: bytes) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _write_str(text: str, handle: Any) -> None:
    handle.write(text)


def _write_index(index: Any, path: Path) -> None:
    """``faiss.write_index`` through a temporary file, so a killed write never leaves a truncated ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Indexes built elsewhere
# ---------------------------------------------------------------------------------------------------------------

_SUPPORTED_FAISS: Final = (
    "Flat, HNSW<M>(,Flat), IVF<nlist>,Flat, IVF<nlist>,PQ<m>x<bits> and IVF<nlist>_HNSW<M>,Flat/PQ..., optionally "
    "behind pre-transforms (OPQ, PCA, L2norm) and an IDMap whose ids are the row numbers; inner-product or L2 metric"
)


def read_faiss_index(path: str | Path, *, mmap: bool = True) -> Any:
    """Read a faiss index file written by any tool, memory-mapping what faiss can.

    With ``mmap`` the inverted lists of an IVF index stay in the file (faiss's ``IO_FLAG_MMAP``: read-only, paged in
    by the queries that visit them), which is how a LAION-sized ``knn.index`` is opened without its size in RAM; flat
    and HNSW indexes are read into memory either way. An index whose lists are in a separate file
    (``OnDiskInvertedLists``, e.g. ``populated.index`` + ``merged_index.ivfdata`` from faiss's on-disk recipe) finds
    that file next to the index file whatever path was recorded when it was built (``IO_FLAG_ONDISK_SAME_DIR``), and
    opens it read-only. The memory-mapped lists of an in-RAM-format file record that file as theirs, so the result
    can be passed to :meth:`EmbeddingIndex.from_faiss` (and saved) like any on-disk index.

    Args:
        path: The index file.
        mmap: Whether to memory-map IVF lists; ``False`` reads them into RAM.

    Returns:
        The faiss index (CPU).

    Raises:
        ConfigError: A missing file, a binary faiss index, or a file faiss cannot read (e.g. its ``.ivfdata`` is not
            next to it).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"faiss index file {path} does not exist; give the path of the index file (e.g. knn.index)")
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    if mmap:
        flags |= faiss.IO_FLAG_MMAP
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as error:
        try:
            faiss.read_index_binary(str(path))
        except RuntimeError:
            raise ConfigError(
                f"faiss cannot read {path} ({str(error).splitlines()[-1]}); an index with on-disk lists needs its "
                f".ivfdata file in the same folder as the index file"
            ) from None
        raise ConfigError(
            f"{path} is a binary faiss index (Hamming distances over bit codes); seg searches float embeddings by "
            f"cosine: use a float index ({_SUPPORTED_FAISS})"
        ) from None
    lists = _ondisk_lists(index)
    if lists is not None and not str(lists.filename):
        lists.filename = str(path.resolve())  # IO_FLAG_MMAP maps the lists inside the index file itself
    elif lists is not None and lists.ptr is None:  # a separate lists file: IO_FLAG_MMAP's skip-data bit leaves it
        try:  # unmapped, and a search would then crash
            lists.do_mmap()
        except RuntimeError:
            raise ConfigError(
                f"{path} keeps its inverted lists in {Path(str(lists.filename)).name}, which is not next to it "
                f"({lists.filename} is missing or unreadable): copy the lists file into {path.parent}"
            ) from None
    return index


def _ondisk_lists(index: Any) -> Any:
    """The ``OnDiskInvertedLists`` of a CPU IVF index (through wrappers), else ``None``."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    if ivf.invlists is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def _unwrapped(index: Any) -> Any:
    """The faiss index inside pre-transforms and id maps, downcast to its class."""
    core = faiss.downcast_index(index)
    while isinstance(core, faiss.IndexPreTransform | faiss.IndexIDMap):
        core = faiss.downcast_index(core.index)
    return core


def _factory_description(index: Any) -> str:
    """A faiss factory-style description of ``index`` (e.g. ``"OPQ8_32,IVF32_HNSW8,PQ8x4"``), for config and errors.

    Pre-transforms and id maps are named here because a saved OPQ reads back as a plain ``LinearTransform``, which
    faiss's ``reverse_index_factory`` cannot name; the rest is its description, else the class name.
    """
    from faiss.contrib import factory_tools

    describe: Callable[[Any], object] = factory_tools.reverse_index_factory
    parts: list[str] = []
    core: Any = faiss.downcast_index(index)
    while isinstance(core, faiss.IndexPreTransform | faiss.IndexIDMap):
        if isinstance(core, faiss.IndexIDMap):
            parts.append(type(core).__name__.removeprefix("Index"))
        else:
            chain: Any = core.chain
            parts.extend(_transform_name(faiss.downcast_VectorTransform(chain.at(i))) for i in range(chain.size()))
        core = faiss.downcast_index(core.index)
    try:
        parts.append(str(describe(core)))
    except (NotImplementedError, RuntimeError, AttributeError, AssertionError, TypeError, KeyError):
        parts.append(type(core).__name__)
    return ",".join(parts)


def _transform_name(transform: Any) -> str:
    """The factory name of a pre-transform (``OPQ8_32``, ``PCA64``, ``L2norm``), else its class and dimensions."""
    if isinstance(transform, faiss.OPQMatrix):
        return f"OPQ{transform.M}_{transform.d_out}"
    if isinstance(transform, faiss.PCAMatrix):
        return f"PCA{'R' if transform.random_rotation else ''}{transform.d_out}"
    if isinstance(transform, faiss.NormalizationTransform):
        return "L2norm"
    return f"{type(transform).__name__}{transform.d_in}_{transform.d_out}"


_METRIC_NAMES: Final = {
    int(getattr(faiss, name)): name.removeprefix("METRIC_") for name in dir(faiss) if name.startswith("METRIC_")
}
_NORM_TOLERANCE = 1e-2  # float16-stored unit vectors are within 1e-3 of norm 1
_NORM_SAMPLE = 16


def _imported_config(index: Any) -> tuple[IndexConfig, Path | None]:
    """The :class:`IndexConfig` describing a faiss index built elsewhere, and its lists file when it has one.

    Raises:
        ConfigError: An index kind or metric seg cannot search (the message names it and what works).
    """
    factory = _factory_description(index)
    metric_type = int(index.metric_type)
    if metric_type == faiss.METRIC_INNER_PRODUCT:
        metric: IndexMetric = "inner_product"
    elif metric_type == faiss.METRIC_L2:
        metric = "l2"
    else:
        raise ConfigError(
            f"the faiss index {factory} uses metric {_METRIC_NAMES.get(metric_type, metric_type)}; seg scores by "
            "cosine, which only inner product (unit vectors) and L2 (converted: cos = 1 - d/2) give: rebuild it with "
            "METRIC_INNER_PRODUCT"
        )
    core: Any = faiss.downcast_index(index)
    while isinstance(core, faiss.IndexPreTransform | faiss.IndexIDMap):
        if isinstance(core, faiss.IndexIDMap):
            labels = faiss.vector_to_array(core.id_map)
            if not np.array_equal(labels, np.arange(labels.size)):
                raise ConfigError(
                    f"the faiss index {factory} maps its rows to arbitrary ids (an IDMap); seg needs ids that are the "
                    "row numbers, so that row i is ids[i]: pass the index inside the IDMap (index.index) with the "
                    "image ids in the IDMap's order"
                )
        core = faiss.downcast_index(core.index)
    fields: dict[str, Any] = {"metric": metric, "factory": factory, "device": "cpu"}
    ivfdata = None
    if isinstance(core, faiss.IndexFlat):
        fields["kind"] = "flat"
    elif isinstance(core, faiss.IndexHNSWFlat):
        hnsw: Any = core.hnsw
        fields.update(kind="hnsw", hnsw_m=max(2, int(hnsw.nb_neighbors(1))), ef_search=max(1, int(hnsw.efSearch)))
        fields["ef_construction"] = max(1, int(hnsw.efConstruction))
    elif isinstance(core, faiss.IndexIVFFlat | faiss.IndexIVFPQ):
        nlist = int(core.nlist)
        fields.update(kind="ivf_flat", nlist=nlist, nprobe=min(max(1, int(core.nprobe)), nlist))
        if isinstance(core, faiss.IndexIVFPQ):
            bits = int(core.pq.nbits)
            if bits > 16:
                raise ConfigError(f"the faiss index {factory} has {bits}-bit PQ codes; seg supports up to 16 bits")
            fields.update(kind="ivf_pq", pq_m=int(core.pq.M), pq_bits=bits)
        quantizer: Any = faiss.downcast_index(core.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            graph: Any = quantizer.hnsw
            fields.update(hnsw_m=max(2, int(graph.nb_neighbors(1))), ef_search=max(1, int(graph.efSearch)))
            fields["coarse_quantizer"] = "hnsw"
        lists = _ondisk_lists(core)
        if lists is not None:
            if not str(lists.filename):
                raise ConfigError(
                    f"the faiss index {factory} has memory-mapped lists but does not say from which file; pass the "
                    "index file's path to EmbeddingIndex.from_faiss (or read it with read_faiss_index)"
                )
            fields["on_disk"] = True
            ivfdata = Path(str(lists.filename)).resolve()
    else:
        hint = " (pass the CPU index: faiss.index_gpu_to_cpu)" if type(core).__name__.startswith("Gpu") else ""
        raise ConfigError(
            f"the faiss index {factory} ({type(core).__name__}) is not a kind seg can search{hint}; supported: "
            f"{_SUPPORTED_FAISS}"
        )
    return IndexConfig(**fields), ivfdata


def _check_unit_rows(index: Any, core: Any, factory: str) -> None:
    """Refuse a flat or HNSW index (without pre-transform) whose sampled stored rows are not unit vectors."""
    count = int(index.ntotal)
    if count == 0 or not isinstance(core, faiss.IndexFlat | faiss.IndexHNSWFlat):
        return
    if not isinstance(faiss.downcast_index(index), faiss.IndexFlat | faiss.IndexHNSWFlat):
        return  # behind a transform or id map: its rows are not the embeddings themselves
    rows = np.unique(np.linspace(0, count - 1, num=min(count, _NORM_SAMPLE)).astype(np.int64))
    norms = np.linalg.norm(np.stack([core.reconstruct(int(row)) for row in rows]), axis=1)
    worst = int(np.argmax(np.abs(norms - 1)))
    if abs(float(norms[worst]) - 1) > _NORM_TOLERANCE:
        raise ConfigError(
            f"row {int(rows[worst])} of the faiss index {factory} has norm {float(norms[worst]):.4f}; seg's scores "
            "are cosines, which needs an index over L2-normalised embeddings (CLIP embeddings as clip-retrieval "
            "writes them): normalise the rows (faiss.normalize_L2) and rebuild it, or build one with build_index"
        )


@runtime_checkable
class RowStore(Protocol):
    """Embeddings by row (an :class:`~seg_retrieval.store.EmbeddingStore` or a
    :class:`~seg_retrieval.laion.ClipRetrievalStore`), whose row ``i`` is image ``ids[i]``.

    Attributes:
        root: The folder it was opened from.
    """

    root: Path

    @property
    def ids(self) -> tuple[str, ...]:
        """Image ids, one per row."""
        ...

    def embeddings(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]] | slice) -> Tensor:
        """Rows ``indices`` as ``[n, D]`` float32."""
        ...


def _open_row_store(root: Path) -> RowStore | None:
    """The store in ``root``: a seg store (``manifest.json``) or a clip-retrieval folder; ``None`` if neither opens."""
    from seg_retrieval.store import MANIFEST_FILE

    if (root / MANIFEST_FILE).is_file():
        return EmbeddingStore.open(root)
    from seg_retrieval.laion import EMBEDDINGS_FOLDER, METADATA_FOLDER, ClipRetrievalStore

    if (root / EMBEDDINGS_FOLDER).is_dir() and (root / METADATA_FOLDER).is_dir():
        try:
            return ClipRetrievalStore.open(root)
        except (ConfigError, ImportError):
            return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------------------------


class EmbeddingIndex:
    """A faiss index with image ids; a :class:`seg_core.Retriever` (maximum inner product = cosine).

    Build one with :func:`build_index`, read one with :meth:`load`, or wrap a faiss index built elsewhere with
    :meth:`from_faiss`.

    Attributes:
        faiss_index: The faiss index (CPU or GPU).
        config: The config it was built with (``nlist``, ``train_size`` resolved; search knobs current), or read off
            an imported index.
        device: ``"cpu"`` or ``"gpu"``.
        encoder: Encoder of the indexed embeddings, when known.
        store: Path of the indexed store (a seg store or a clip-retrieval folder), when known.
        ivfdata: The memory-mapped inverted-list file of an on-disk index (``None`` in RAM).
    """

    def __init__(
        self,
        faiss_index: Any,
        ids: Sequence[str],
        config: IndexConfig,
        *,
        device: Literal["cpu", "gpu"] = "cpu",
        encoder: str | None = None,
        store: str | None = None,
        opened_store: RowStore | None = None,
        gpu_resources: Any = None,
        ivfdata: Path | None = None,
    ) -> None:
        if config.on_disk and ivfdata is None:
            raise ValueError("an on-disk index needs the path of its inverted-list file (ivfdata)")
        self.faiss_index = faiss_index
        self.ivfdata = ivfdata
        self._ids = tuple(ids)
        if len(self._ids) != int(faiss_index.ntotal):
            raise ValueError(f"{len(self._ids)} ids for an index of {int(faiss_index.ntotal)} vectors")
        if len(set(self._ids)) != len(self._ids):
            raise ValueError("image ids of an index must be unique")
        self.config = config
        self.device: Literal["cpu", "gpu"] = device
        self.encoder = encoder
        self.store = store
        self._opened_store = opened_store
        self._store_checked = opened_store is not None
        self._gpu_resources = gpu_resources  # must outlive the GPU index
        self._positions: dict[str, int] | None = None
        self._direct_map_ready = False
        self.set_search_params(nprobe=config.nprobe, ef_search=config.search_breadth)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"EmbeddingIndex(kind={self.config.kind!r}, count={len(self)}, dim={self.dim}, device={self.device!r})"

    @property
    def ids(self) -> tuple[str, ...]:
        """Image ids, one per indexed row."""
        return self._ids

    @property
    def dim(self) -> int:
        """Vector dimension ``D``."""
        return int(self.faiss_index.d)

    def set_search_params(
        self, *, nprobe: int | None = None, ef_search: int | None = None, rerank: int | None = None
    ) -> None:
        """Change the search-time knobs (IVF ``nprobe``, HNSW ``ef_search``, exact ``rerank``) without rebuilding.

        ``ef_search`` also sets the candidate list of an HNSW coarse quantiser (an imported ``IVF..._HNSW..`` index).

        Args:
            nprobe: IVF lists visited per query; ``None`` leaves it as it is.
            ef_search: HNSW candidate-list size; ``None`` leaves it as it is.
            rerank: Candidates per query re-scored exactly from the embedding store (:attr:`IndexConfig.rerank`);
                ``0`` turns re-ranking off, ``None`` leaves it as it is.

        Raises:
            ConfigError: ``nprobe`` outside ``[1, nlist]``, ``ef_search < 1`` or ``rerank < 0``.
        """
        update: dict[str, int | None] = {}
        if nprobe is not None:
            nlist = self.config.nlist
            if nprobe < 1 or (nlist is not None and nprobe > nlist):
                raise ConfigError(f"nprobe={nprobe} must be in [1, nlist={nlist}]")
            if self.device == "gpu" and nprobe > _GPU_MAX_K:
                raise ConfigError(f"nprobe={nprobe} exceeds faiss GPU's limit of {_GPU_MAX_K}")
            update["nprobe"] = nprobe
            if self.config.is_ivf:
                if self.device == "gpu":
                    faiss.GpuParameterSpace().set_index_parameter(self.faiss_index, "nprobe", nprobe)
                else:
                    faiss.extract_index_ivf(self.faiss_index).nprobe = nprobe
        if ef_search is not None:
            if ef_search < 1:
                raise ConfigError(f"ef_search={ef_search} must be >= 1")
            update["ef_search"] = ef_search
            if self.config.kind == "hnsw":
                _unwrapped(self.faiss_index).hnsw.efSearch = ef_search
            elif self.config.is_ivf and self.device == "cpu":
                quantizer = faiss.downcast_index(faiss.extract_index_ivf(self.faiss_index).quantizer)
                if isinstance(quantizer, faiss.IndexHNSW):
                    quantizer.hnsw.efSearch = ef_search
        if rerank is not None:
            if isinstance(rerank, bool) or rerank < 0:
                raise ConfigError(
                    f"rerank={rerank!r} is not a number of candidates: use rerank >= 1 (candidates per query re-scored "
                    "exactly, e.g. 4·k) or rerank=0 to turn re-ranking off"
                )
            update["rerank"] = rerank or None
        self.config = self.config.model_copy(update=update)

    def search(self, queries: Tensor | npt.NDArray[Any], k: int) -> tuple[Tensor, list[list[str]]]:
        """The ``k`` nearest images of each query by cosine similarity, best first.

        With :attr:`IndexConfig.rerank` set, the index is asked for ``max(k, rerank)`` candidates (at most the index
        size, and 2048 on a GPU), whose vectors are read from the embedding store and re-scored by exact cosine; the
        ``k`` best of them are returned with those exact scores.

        Args:
            queries: ``[Q, D]`` query vectors (any norm; normalised here), e.g. prompt-ensembled text embeddings.
            k: Neighbours per query, ``1 <= k <= len(self)``.

        Returns:
            ``scores`` ``[Q, k]`` float32 on the CPU (cosine similarities, non-increasing along each row; for an
            ``metric="l2"`` index without re-ranking ``1 - d / 2`` of faiss's squared distances ``d``, the cosine for
            unit vectors; with re-ranking the exact cosines with the stored vectors) and the ``k`` image ids of each
            query.

        Raises:
            ValueError: Queries not ``[Q, D]``, or ``k`` out of range.
            ConfigError: ``rerank`` is set but the embedding store the index was built from is not available.
            RuntimeError: An approximate index found fewer than ``k`` neighbours (raise ``nprobe``/``ef_search``),
                or an imported index returned an id that is not a row number.
        """
        if isinstance(queries, Tensor):
            array = queries.detach().float().cpu().numpy()
        elif isinstance(queries, np.ndarray):
            array = queries
        else:
            raise TypeError(f"queries must be a [Q, D] Tensor or numpy array, got {type(queries).__name__}")
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(array.shape)}")
        if isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} exceeds the {len(self)} vectors in the index; use k <= {len(self)}")
        if self.device == "gpu" and k > _GPU_MAX_K:
            raise ValueError(f"k={k} exceeds faiss GPU's limit of {_GPU_MAX_K}; use k <= {_GPU_MAX_K} or a CPU index")
        rerank = self.config.rerank
        store = None if rerank is None else self._rerank_store(rerank)
        if array.shape[0] == 0:
            return torch.empty(0, k), []
        fetch = k if rerank is None else min(max(k, rerank), len(self))
        if self.device == "gpu":
            fetch = min(fetch, _GPU_MAX_K)
        normalised = _normalised(array)
        scores, rows = self.faiss_index.search(normalised, fetch)
        found = (rows >= 0).sum(axis=1)
        short = np.flatnonzero(found < k)
        if short.size:
            knob = "nprobe" if self.config.is_ivf else "ef_search"
            raise RuntimeError(
                f"the {self.config.kind} index found only {int(found[short[0]])} < k={k} neighbours for query "
                f"{int(short[0])}; raise {knob} (now {getattr(self.config, knob)}) with set_search_params, or lower k"
            )
        if rows.size and int(rows.max()) >= len(self._ids):
            raise RuntimeError(
                f"the faiss index returned id {int(rows.max())} but holds {len(self._ids)} rows: its ids are not row "
                "numbers (vectors added with add_with_ids?); seg needs row i of the index to be ids[i]"
            )
        if store is not None:
            scores, rows = self._exact_top_k(normalised, rows, k, store)
        elif self.config.metric == "l2":
            scores = 1.0 - scores / 2.0  # ‖q − x‖² = 2 − 2·cos(q, x) for unit q and x
        ids = self._ids
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), [
            [ids[row] for row in query_rows] for query_rows in rows.tolist()
        ]

    def _rerank_store(self, rerank: int) -> RowStore:
        """The store whose exact vectors re-rank candidates.

        Raises:
            ConfigError: No store, or one that no longer holds this index's rows.
        """
        store = self._store()
        if store is not None:
            return store
        why = (
            "it was built from an array or imported without store="
            if self.store is None
            else f"{self.store} is missing or no longer holds the index's rows in its order"
        )
        raise ConfigError(
            f"IndexConfig.rerank={rerank} re-scores candidates with the exact vectors of the embedding store the index "
            f"was built from, but this index has none ({why}); build or load the index with its store available "
            "(build_index over an EmbeddingStore, EmbeddingIndex.from_faiss(..., store=...)), or turn re-ranking off "
            "with set_search_params(rerank=0) (IndexConfig.rerank=None)"
        )

    def _exact_top_k(
        self, queries: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], k: int, store: RowStore
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``k`` best of each query's candidate ``rows`` by exact cosine with the store's vectors, best first.

        Candidates are re-scored a block of queries at a time (about 16 MB of float32 vectors), reading each block's
        distinct rows once, in row order; ties keep the approximate order.

        Args:
            queries: ``[Q, D]`` L2-normalised queries.
            rows: ``[Q, R]`` candidate rows from faiss, ``-1`` where it found none (at least ``k`` per query).
            k: Neighbours kept per query, ``k <= R``.
            store: Where the exact vectors are read.

        Returns:
            ``[Q, k]`` exact cosines (non-increasing along each row) and the ``[Q, k]`` rows they belong to.
        """
        count, width = rows.shape
        exact = np.empty((count, width), dtype=np.float32)
        block = max(1, _RERANK_BLOCK // (width * self.dim))
        for start in range(0, count, block):
            part = rows[start : start + block]
            valid = part >= 0
            filled = np.where(valid, part, part[:, :1])  # a query's first candidate is always found (k >= 1)
            distinct, inverse = np.unique(filled, return_inverse=True)
            vectors = _normalised(store.embeddings(distinct).numpy())
            candidates = vectors[inverse.reshape(part.shape)]  # [b, R, D]
            cosines = np.matmul(candidates, queries[start : start + block, :, None])[..., 0]
            exact[start : start + block] = np.where(valid, cosines, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def positions(self, ids: Sequence[str]) -> list[int]:
        """Rows of ``ids`` in the index.

        Raises:
            KeyError: An id that is not indexed.
        """
        if self._positions is None:
            self._positions = {image_id: row for row, image_id in enumerate(self._ids)}
        try:
            return [self._positions[image_id] for image_id in ids]
        except KeyError as error:
            raise KeyError(f"image {error.args[0]!r} is not in the index") from None

    def vectors(self, ids: Sequence[str]) -> Tensor:
        """``[n, D]`` float32 L2-normalised vectors of ``ids`` (for de-duplication).

        Read from the indexed store when it is available (exact up to float16 storage); otherwise reconstructed
        from the faiss index: exact for ``flat``, ``ivf_flat`` and ``hnsw``, the PQ approximation for ``ivf_pq``.

        Raises:
            KeyError: An id that is not indexed.
            RuntimeError: No store, and the (GPU) index cannot reconstruct vectors.
        """
        rows = self.positions(ids)
        store = self._store()
        if store is not None:
            return torch.from_numpy(_normalised(store.embeddings(rows).numpy()))
        index = self.faiss_index
        try:
            if self.config.is_ivf and not self._direct_map_ready:
                faiss.extract_index_ivf(index).make_direct_map()
                self._direct_map_ready = True
            vectors = np.stack([index.reconstruct(row) for row in rows]) if rows else np.empty((0, self.dim))
        except RuntimeError as error:
            raise RuntimeError(
                f"cannot read vectors back from this {self.device} {self.config.kind} index ({error}); build or load "
                "it with its embedding store available"
            ) from None
        return torch.from_numpy(_normalised(vectors))

    def _store(self) -> RowStore | None:
        if self._store_checked:
            return self._opened_store
        self._store_checked = True
        store = None if self.store is None else _open_row_store(Path(self.store))
        if store is None or store.ids != self._ids:  # rebuilt since: its rows are not this index's rows
            return None
        self._opened_store = store
        return store

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss`` (CPU form), ``ids.json`` and ``index.json`` into ``directory`` (each atomically).

        An on-disk index also needs its ``index.ivfdata`` there: it is copied when ``directory`` is another folder
        (the lists file of an imported index whatever its name, e.g. ``merged_index.ivfdata`` or the memory-mapped
        ``knn.index`` itself), and the saved ``index.faiss`` refers to that copy.

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.ivfdata is not None:
            target = directory / INDEX_IVFDATA_FILE
            if not target.exists() or not target.samefile(self.ivfdata):
                tmp_data = directory / f".{INDEX_IVFDATA_FILE}.{uuid.uuid4().hex}.tmp"
                try:
                    shutil.copyfile(self.ivfdata, tmp_data)
                    tmp_data.replace(target)
                finally:
                    tmp_data.unlink(missing_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self.faiss_index) if self.device == "gpu" else self.faiss_index
        lists = _ondisk_lists(cpu_index) if self.ivfdata is not None else None
        recorded = str(lists.filename) if lists is not None else ""
        if lists is not None:  # the file the saved index names: load finds it next to index.faiss by this name
            lists.filename = str(directory / INDEX_IVFDATA_FILE)
        try:
            _write_index(cpu_index, directory / INDEX_FILE)
        finally:
            if lists is not None:
                lists.filename = recorded
        ids_tmp = directory / f".{INDEX_IDS_FILE}.{uuid.uuid4().hex}.tmp"
        ids_tmp.write_text(json.dumps(list(self._ids)), encoding="utf-8")
        ids_tmp.replace(directory / INDEX_IDS_FILE)
        manifest = IndexManifest(
            config=self.config,
            dim=self.dim,
            count=len(self),
            encoder=self.encoder,
            store=self.store,
            faiss_version=str(faiss.__version__),
        )
        manifest.save(directory / INDEX_MANIFEST_FILE)  # written last: it marks a complete index folder
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: IndexDevice | None = None) -> EmbeddingIndex:
        """Read an index written by :meth:`save`.

        Args:
            directory: The index folder.
            device: Override the saved config's device (e.g. ``"cpu"`` to read a GPU-built index on a laptop).

        Raises:
            ConfigError: Missing or corrupt ``index.json``, a missing index or ids file, or ids that disagree with
                the index.
        """
        directory = Path(directory)
        manifest_path = directory / INDEX_MANIFEST_FILE
        if not manifest_path.is_file():
            raise ConfigError(
                f"{directory} is not a saved index: {INDEX_MANIFEST_FILE} is missing (write one with "
                "EmbeddingIndex.save or `seg retrieve index`)"
            )
        manifest = IndexManifest.load(manifest_path)
        for name in (INDEX_FILE, INDEX_IDS_FILE):
            if not (directory / name).is_file():
                raise ConfigError(f"the index in {directory} lacks {name}; rebuild it with `seg retrieve index`")
        ids = json.loads((directory / INDEX_IDS_FILE).read_text(encoding="utf-8"))
        ivfdata = None
        flags = 0
        if manifest.config.on_disk:
            ivfdata = directory / INDEX_IVFDATA_FILE
            if not ivfdata.is_file():
                raise ConfigError(
                    f"the on-disk index in {directory} lacks its inverted lists {INDEX_IVFDATA_FILE}; copy it next "
                    f"to {INDEX_FILE} or rebuild the index with `seg retrieve index --on-disk`"
                )
            if device == "gpu":
                raise ConfigError(
                    f"the index in {directory} keeps its lists on disk, which faiss searches on the CPU only; load it "
                    "with device='cpu' or 'auto'"
                )
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR  # the lists file is found next to index.faiss, wherever it moved
        if manifest.config.coarse_quantizer == "hnsw" and device == "gpu":
            raise ConfigError(
                f"the index in {directory} finds its lists with an HNSW coarse quantiser, which faiss runs on the CPU "
                "only; load it with device='cpu' or 'auto'"
            )
        index = faiss.read_index(str(directory / INDEX_FILE), flags)
        if not isinstance(ids, list) or len(ids) != index.ntotal or index.ntotal != manifest.count:
            raise ConfigError(
                f"the index in {directory} is inconsistent: {manifest.count} vectors in {INDEX_MANIFEST_FILE}, "
                f"{index.ntotal} in {INDEX_FILE}, {len(ids) if isinstance(ids, list) else 'no list of'} ids; rebuild it"
            )
        config = manifest.config if device is None else manifest.config.model_copy(update={"device": device})
        cpu_only = config.on_disk or config.coarse_quantizer == "hnsw"
        resolved = "cpu" if cpu_only else resolve_device(config.device, config.kind)
        store = manifest.store
        if store is not None and not Path(store).is_absolute():  # relative to the index folder (portable copies)
            store = str((directory / store).resolve())
        resources = None
        if resolved == "gpu":
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, 0, index)
        return cls(
            index,
            ids,
            config,
            device=resolved,
            encoder=manifest.encoder,
            store=store,
            gpu_resources=resources,
            ivfdata=ivfdata,
        )

    @classmethod
    def from_faiss(
        cls,
        index: str | Path | faiss.Index,
        ids: Sequence[str],
        *,
        encoder: str | None = None,
        store: str | Path | RowStore | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
        mmap: bool = True,
    ) -> EmbeddingIndex:
        """Wrap a faiss index built elsewhere (autofaiss, clip-retrieval, plain faiss) without recomputing anything.

        The index is read with :func:`read_faiss_index` (IVF lists memory-mapped; a separate ``.ivfdata`` lists file
        is found next to the index file) or taken as given, and its :class:`IndexConfig` is read off it: ``kind``
        (``flat``, ``ivf_flat``, ``ivf_pq`` or ``hnsw``, looking through pre-transforms such as OPQ), ``nlist``,
        ``pq_m``, ``pq_bits``, ``hnsw_m``, the current ``nprobe`` / ``efSearch`` (an ``IVF..._HNSW..`` index's
        coarse-quantiser ``efSearch`` is ``ef_search``), ``on_disk`` (lists memory-mapped from a file, which
        :attr:`ivfdata` names), ``metric`` and the faiss ``factory`` string; ``device`` is ``"cpu"``.

        The metric must be inner product, used as is (the scores are cosines when the indexed rows are L2-normalised,
        as CLIP embeddings from clip-retrieval are), or L2, whose squared distances ``d`` are converted to
        ``1 - d / 2``: the cosine when rows and queries are unit vectors (``‖q − x‖² = 2 − 2·cos(q, x)``); queries are
        normalised by :meth:`search`. The rows of a flat or HNSW index are checked to be unit vectors on a sample.
        Row ``i`` of the index is image ``ids[i]``: an IVF index's stored ids must be its row numbers (as autofaiss
        and faiss's on-disk recipe write them); :meth:`search` raises on an id that is not.

        Args:
            index: A faiss index file (e.g. LAION's ``knn.index``, or ``populated.index`` next to its
                ``merged_index.ivfdata``), or a CPU ``faiss.Index``.
            ids: One image id per row, in row order (``len(ids) == index.ntotal``; unique).
            encoder: The encoder of the indexed embeddings (recorded; query with the same CLIP).
            store: The indexed embeddings: the path of a seg store or clip-retrieval folder, or the opened store;
                :meth:`vectors` reads exact vectors from it (its ids must be ``ids``), else reconstructs them from
                the index where faiss can (the PQ approximation for IVF-PQ).
            nprobe: IVF lists visited per query; default the index's own setting.
            ef_search: HNSW candidate-list size (of the index, or of an IVF index's HNSW quantiser); default the
                index's own.
            rerank: Candidates per query re-scored exactly from ``store`` (:attr:`IndexConfig.rerank`); default
                none. Lifts the recall of a PQ index (LAION's are) at the cost of reading ``rerank`` rows per query.
            mmap: Memory-map the IVF lists of an index file (``False``: read them into RAM).

        Returns:
            The index (CPU), searchable and savable (:meth:`save` copies a lists file as ``index.ivfdata``).

        Raises:
            ConfigError: An unreadable or binary index, a kind or metric seg cannot search (the message names what
                it found and what works), ids whose count differs from the index's rows, a flat/HNSW index whose
                rows are not unit vectors, a ``store`` whose ids differ, or ``nprobe`` / ``ef_search`` / ``rerank``
                out of range.
            TypeError: ``index`` is neither a path nor a faiss index.
        """
        given: object = index  # checked here: callers may pass anything, binary indexes included
        if isinstance(given, str | Path):
            faiss_index = read_faiss_index(given, mmap=mmap)
            label = str(given)
        elif isinstance(given, faiss.IndexBinary):
            raise ConfigError(
                f"{type(given).__name__} is a binary faiss index (Hamming distances over bit codes); seg searches "
                f"float embeddings by cosine: use a float index ({_SUPPORTED_FAISS})"
            )
        elif isinstance(given, faiss.Index):
            faiss_index = given
            label = f"the {type(faiss.downcast_index(given)).__name__}"
        else:
            raise TypeError(f"index must be a faiss index file or a faiss.Index, got {type(given).__name__}")
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of image ids, not one string; wrap it in a list")
        id_tuple = tuple(ids)
        if len(id_tuple) != int(faiss_index.ntotal):
            raise ConfigError(
                f"{len(id_tuple)} ids for {label}, which holds {int(faiss_index.ntotal)} vectors; give one id per row "
                "of the index, in row order"
            )
        config, ivfdata = _imported_config(faiss_index)
        _check_unit_rows(faiss_index, _unwrapped(faiss_index), config.factory or "")
        opened: RowStore | None = None
        store_path: str | None = None
        if isinstance(store, str | Path):
            store_path = str(Path(store).resolve())
        elif store is not None:
            if not isinstance(store, RowStore):
                raise TypeError(f"store must be a path or an opened store, got {type(store).__name__}")
            if store.ids != id_tuple:
                raise ConfigError(
                    f"the store {store.root} holds {len(store.ids)} rows whose ids are not the index's {len(id_tuple)} "
                    "ids in the same order; pass the store the index was built from (or no store)"
                )
            opened, store_path = store, str(Path(store.root).resolve())
        imported = cls(
            faiss_index,
            id_tuple,
            config,
            device="cpu",
            encoder=encoder,
            store=store_path,
            opened_store=opened,
            ivfdata=ivfdata,
        )
        imported.set_search_params(nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        return imported
