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
  per vector instead of ``4·D``; approximate scores. For billions of images.
* ``hnsw``: a graph, no training, fast and accurate at high recall but slow to build and ~``4·D + 8·hnsw_m`` bytes
  per vector; CPU only in faiss.

Contents: :class:`IndexConfig`; device resolution; :func:`build_index`; :class:`EmbeddingIndex`.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import faiss
import numpy as np
import numpy.typing as npt
import torch
from pydantic import Field, PositiveInt, model_validator
from torch import Tensor

from seg_core import ConfigError, SegModel
from seg_retrieval.store import EmbeddingStore

__all__ = [
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INDEX_IDS_FILE",
    "INDEX_MANIFEST_FILE",
    "INDEX_VERSION",
    "EmbeddingIndex",
    "IndexConfig",
    "IndexDevice",
    "IndexKind",
    "IndexManifest",
    "build_index",
    "default_nlist",
    "gpu_available",
    "resolve_device",
]

IndexKind = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]
IndexDevice = Literal["auto", "cpu", "gpu"]

INDEX_FORMAT: Final = "seg-embedding-index"
INDEX_VERSION: Final = 1
INDEX_FILE: Final = "index.faiss"
INDEX_IDS_FILE: Final = "ids.json"
INDEX_MANIFEST_FILE: Final = "index.json"

_ADD_CHUNK = 65_536  # rows normalised and added at a time: bounds the float32 copy to 65536·D·4 bytes
_GPU_MAX_K = 2048  # faiss GPU k-selection limit (also the largest nprobe)


class IndexConfig(SegModel):
    """How to index an embedding collection (all kinds use inner product on L2-normalised vectors).

    Attributes:
        kind: ``"flat"`` (exact), ``"ivf_flat"``, ``"ivf_pq"`` or ``"hnsw"``.
        nlist: IVF lists; ``None``: :func:`default_nlist` (4·√N, at most N).
        nprobe: IVF lists visited per query (recall/speed knob; at most ``nlist``).
        pq_m: IVF-PQ sub-quantisers (bytes per vector at 8 bits); must divide the dimension.
        pq_bits: Bits per sub-quantiser code (``2 ** pq_bits`` centroids each).
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW candidate-list size at search (faiss uses at least ``k``).
        ef_construction: HNSW candidate-list size at build.
        train_size: Vectors sampled to train IVF (and PQ); ``None``: ``min(N, max(64·nlist, 2 ** pq_bits · 39))``.
        seed: Seed of the training sample and the k-means initialisation.
        device: ``"gpu"`` needs GPU faiss (extra ``seg-retrieval[gpu]``); ``"auto"`` uses it when installed and a GPU
            is visible (never for HNSW, which faiss runs on CPU only), else the CPU.
    """

    kind: IndexKind = "flat"
    nlist: PositiveInt | None = None
    nprobe: PositiveInt = 32
    pq_m: PositiveInt = 64
    pq_bits: int = Field(default=8, ge=1, le=16)
    hnsw_m: int = Field(default=32, ge=2)
    ef_search: PositiveInt = 128
    ef_construction: PositiveInt = 200
    train_size: PositiveInt | None = None
    seed: int = 0
    device: IndexDevice = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> IndexConfig:
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


def _factory_string(config: IndexConfig) -> str:
    if config.kind == "flat":
        return "Flat"
    if config.kind == "ivf_flat":
        return f"IVF{config.nlist},Flat"
    if config.kind == "ivf_pq":
        # "np": no polysemous training, which the factory turns on by default; it only serves Hamming-distance
        # filtering, which we never use, and multiplies training time (9.9 s instead of 2.8 s for 2,000 x 32).
        return f"IVF{config.nlist},PQ{config.pq_m}x{config.pq_bits}np"
    return f"HNSW{config.hnsw_m},Flat"


# ---------------------------------------------------------------------------------------------------------------
# Vector sources
# ---------------------------------------------------------------------------------------------------------------


def _normalised(rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A float32, C-contiguous, L2-normalised copy of ``rows`` (zero rows stay zero)."""
    array = np.array(rows, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(array)
    return array


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
        if self.store is not None:
            for shard in self.store.shards():
                for start in range(0, len(shard.ids), _ADD_CHUNK):
                    yield _normalised(shard.embeddings[start : start + _ADD_CHUNK])
            return
        assert self.array is not None
        for start in range(0, self.count, _ADD_CHUNK):
            yield _normalised(self.array[start : start + _ADD_CHUNK])

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
) -> EmbeddingIndex:
    """Build a faiss index over a store or an ``[N, D]`` array (rows are L2-normalised first).

    IVF kinds are trained (k-means, and PQ codebooks) on ``config.train_size`` rows sampled with ``config.seed``;
    rows are then added in blocks of 65,536, so indexing a store never holds more than one block in float32
    beyond the index itself.

    Args:
        source: An :class:`~seg_retrieval.store.EmbeddingStore` or ``[N, D]`` float vectors.
        config: How to index; default ``IndexConfig()`` (exact ``flat``, ``device="auto"``).
        ids: One id per row of an array source; default ``"0" .. "N-1"``. Must be ``None`` for a store.
        encoder: Name of the encoder of an array source, recorded with the index (a store brings its own).

    Returns:
        The index, searchable and savable.

    Raises:
        ConfigError: ``nlist`` larger than ``N``, ``pq_m`` not dividing ``D``, too few training vectors, or an
            unusable ``device`` (see :func:`resolve_device`).
        ValueError, TypeError: A source that is not ``[N, D]`` floats, or ``ids`` of the wrong length.
    """
    config = config if config is not None else IndexConfig()
    rows = _Source(source, ids)
    config = _resolved_config(config, rows.count, rows.dim)
    device = resolve_device(config.device, config.kind)
    index: Any = faiss.index_factory(rows.dim, _factory_string(config), faiss.METRIC_INNER_PRODUCT)
    if config.kind == "hnsw":
        index.hnsw.efConstruction = config.ef_construction
    if config.is_ivf:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = config.seed
        if config.kind == "ivf_pq":
            index.pq.cp.seed = config.seed
    resources = None
    if device == "gpu":  # train and add on the GPU too: the k-means assignment is the expensive part
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if config.is_ivf:
        assert config.train_size is not None
        index.train(rows.sample(config.train_size, config.seed))
    for block in rows.chunks():
        index.add(block)
    store_path = str(rows.store.root.resolve()) if rows.store is not None else None
    recorded_encoder = rows.store.encoder if rows.store is not None else encoder
    return EmbeddingIndex(
        index,
        rows.ids,
        config,
        device=device,
        encoder=recorded_encoder,
        store=store_path,
        opened_store=rows.store,
        gpu_resources=resources,
    )


# ---------------------------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------------------------


class EmbeddingIndex:
    """A faiss index with image ids; a :class:`seg_core.Retriever` (maximum inner product = cosine).

    Build one with :func:`build_index` or read one with :meth:`load`.

    Attributes:
        faiss_index: The faiss index (CPU or GPU).
        config: The config it was built with (``nlist``, ``train_size`` resolved; search knobs current).
        device: ``"cpu"`` or ``"gpu"``.
        encoder: Encoder of the indexed embeddings, when known.
        store: Path of the indexed store, when built from one.
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
        opened_store: EmbeddingStore | None = None,
        gpu_resources: Any = None,
    ) -> None:
        self.faiss_index = faiss_index
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
        self.set_search_params(nprobe=config.nprobe, ef_search=config.ef_search)

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

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time knobs (IVF ``nprobe``, HNSW ``ef_search``) without rebuilding.

        Raises:
            ConfigError: ``nprobe`` outside ``[1, nlist]`` or ``ef_search < 1``.
        """
        update: dict[str, int] = {}
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
                self.faiss_index.hnsw.efSearch = ef_search
        self.config = self.config.model_copy(update=update)

    def search(self, queries: Tensor | npt.NDArray[Any], k: int) -> tuple[Tensor, list[list[str]]]:
        """The ``k`` nearest images of each query by cosine similarity, best first.

        Args:
            queries: ``[Q, D]`` query vectors (any norm; normalised here), e.g. prompt-ensembled text embeddings.
            k: Neighbours per query, ``1 <= k <= len(self)``.

        Returns:
            ``scores`` ``[Q, k]`` float32 on the CPU (cosine similarities, non-increasing along each row) and the
            ``k`` image ids of each query.

        Raises:
            ValueError: Queries not ``[Q, D]``, or ``k`` out of range.
            RuntimeError: An approximate index found fewer than ``k`` neighbours (raise ``nprobe``/``ef_search``).
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
        if array.shape[0] == 0:
            return torch.empty(0, k), []
        scores, rows = self.faiss_index.search(_normalised(array), k)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if short.size:
            found = int((rows[short[0]] >= 0).sum())
            knob = "nprobe" if self.config.is_ivf else "ef_search"
            raise RuntimeError(
                f"the {self.config.kind} index found only {found} < k={k} neighbours for query {int(short[0])}; "
                f"raise {knob} (now {getattr(self.config, knob)}) with set_search_params, or lower k"
            )
        ids = self._ids
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), [
            [ids[row] for row in query_rows] for query_rows in rows.tolist()
        ]

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

    def _store(self) -> EmbeddingStore | None:
        if self._store_checked:
            return self._opened_store
        self._store_checked = True
        if self.store is None or not (Path(self.store) / "manifest.json").is_file():
            return None
        store = EmbeddingStore.open(self.store)
        if store.ids != self._ids:  # rebuilt since: its rows are not this index's rows
            return None
        self._opened_store = store
        return store

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss`` (CPU form), ``ids.json`` and ``index.json`` into ``directory`` (each atomically).

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self.faiss_index) if self.device == "gpu" else self.faiss_index
        tmp = directory / f".{INDEX_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            faiss.write_index(cpu_index, str(tmp))
            tmp.replace(directory / INDEX_FILE)
        finally:
            tmp.unlink(missing_ok=True)
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
        index = faiss.read_index(str(directory / INDEX_FILE))
        if not isinstance(ids, list) or len(ids) != index.ntotal or index.ntotal != manifest.count:
            raise ConfigError(
                f"the index in {directory} is inconsistent: {manifest.count} vectors in {INDEX_MANIFEST_FILE}, "
                f"{index.ntotal} in {INDEX_FILE}, {len(ids) if isinstance(ids, list) else 'no list of'} ids; rebuild it"
            )
        config = manifest.config if device is None else manifest.config.model_copy(update={"device": device})
        resolved = resolve_device(config.device, config.kind)
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
        )
