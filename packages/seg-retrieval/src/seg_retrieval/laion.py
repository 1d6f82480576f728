"""Embedding collections in clip-retrieval's layout (the public LAION-400M / LAION-5B CLIP embeddings).

ReCo (Shin, Xie & Albanie, NeurIPS 2022, Sec. 3.1) builds each concept's archive from the images of an unlabelled
collection ``U`` whose CLIP image embeddings ``ψ_I(x)`` are nearest, by cosine similarity, to the concept's text
embedding ``ψ_T(c)``, and notes that the construction scales to billions of images. The largest public collections
with such embeddings precomputed are LAION-400M (Schuhmann et al., 2021) and LAION-5B (Schuhmann et al., NeurIPS 2022
Datasets and Benchmarks): their ``ψ_I`` are published in the layout that clip-retrieval (Beaumont, 2022; its
``clip-retrieval inference`` command) writes and that its companion package embedding-reader reads::

    <folder>/
        img_emb/img_emb_0.npy           [n_0, D] float16, rows L2-normalised
        img_emb/img_emb_1.npy           [n_1, D] ...
        metadata/metadata_0.parquet     n_0 rows in the same order: image_path (local collections) or url,
        metadata/metadata_1.parquet     caption, key, ... (LAION)
        text_emb/text_emb_0.npy ...     optional caption embeddings (not used here)
        seg.json                        optional, seg's addition: {"encoder": "<encoder name>"}

Shard ``N`` is the pair ``img_emb_N.npy`` / ``metadata_N.parquet``; zero-padded numbers (``img_emb_0000.npy``,
as in some LAION releases) are read the same. Shards are ordered by ``N`` as a number, so ``img_emb_10`` follows
``img_emb_9`` (embedding-reader sorts file names as strings, so its row numbers differ from ours past ten shards;
the ids of each row are the same).

Reading is numpy memory-mapping of each ``.npy`` (``np.load(mmap_mode="r")``) and pyarrow for the parquet metadata,
imported lazily (extra ``seg-retrieval[laion]``). embedding-reader 1.8.1 is not used: it requires ``pandas<3`` and
would downgrade the pandas of seg's environment; it also reads whole batches through a thread pool, where a memory
map lets :meth:`ClipRetrievalStore.embeddings` read scattered rows.

Rows are scored as ReCo does, by cosine similarity: every row read is re-normalised in float32
(``x / ‖x‖₂``; a zero row stays zero), which undoes the float16 rounding of the norm.

The same releases publish faiss indexes over these rows (autofaiss / clip-retrieval's ``knn.index``, or
``populated.index`` with its lists in ``merged_index.ivfdata``; row ``i`` of the index is row ``i`` of the folder).
:func:`open_clip_retrieval_index` searches such an index in place, as an
:class:`~seg_retrieval.index.EmbeddingIndex` whose ids are the folder's, without building anything.

Contents: :func:`write_clip_retrieval_store`; :class:`ClipRetrievalShard` and :class:`ClipRetrievalStore` (read);
:func:`import_clip_retrieval` (convert to a seg :class:`~seg_retrieval.store.EmbeddingStore`, resumable);
:func:`open_clip_retrieval_index` (a published faiss index over the folder).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from seg_core import ConfigError
from seg_retrieval.store import (
    DEFAULT_SHARD_SIZE,
    PLAN_FILE,
    EmbeddingStore,
    ProgressFn,
    StorePlan,
    _atomic_write,
    _check_store_folder,
    _checked_rows,
    _finish,
    _shard_is_complete,
    _shard_names,
    _write_json,
    _write_model,
)

if TYPE_CHECKING:
    from seg_retrieval.index import EmbeddingIndex

__all__ = [
    "CLIP_RETRIEVAL_SHARD_SIZE",
    "EMBEDDINGS_FOLDER",
    "ID_COLUMNS",
    "METADATA_FOLDER",
    "SEG_INFO_FILE",
    "ClipRetrievalShard",
    "ClipRetrievalStore",
    "import_clip_retrieval",
    "open_clip_retrieval_index",
    "write_clip_retrieval_store",
]

EMBEDDINGS_FOLDER: Final = "img_emb"
"""Subfolder of the image embedding shards ``img_emb_N.npy``."""

METADATA_FOLDER: Final = "metadata"
"""Subfolder of the metadata shards ``metadata_N.parquet``."""

SEG_INFO_FILE: Final = "seg.json"
"""Optional file next to ``img_emb/`` naming the encoder: ``{"encoder": "..."}`` (not part of clip-retrieval)."""

ID_COLUMNS: Final = ("image_path", "url", "key")
"""Metadata columns tried, in order, as image ids when none is given."""

CLIP_RETRIEVAL_SHARD_SIZE: Final = 1_000_000
"""Rows per shard written by :func:`write_clip_retrieval_store` (clip-retrieval's LAION shards hold about a million)."""

_INSTALL_HINT: Final = "install it with `pip install 'seg-retrieval[laion]'` (or `pip install pyarrow`)"
_READ_ROWS = 65_536  # rows converted to float32 at a time by import_clip_retrieval


def _parquet() -> Any:
    """``pyarrow.parquet``, imported on first use (an optional dependency)."""
    try:
        return importlib.import_module("pyarrow.parquet")
    except ImportError as error:
        raise ImportError(
            f"clip-retrieval metadata is parquet, which needs pyarrow ({error}); {_INSTALL_HINT}"
        ) from error


def _unit_rows(rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A float32 copy of ``[n, D]`` rows divided by their L2 norms (zero rows stay zero)."""
    array = np.array(rows, dtype=np.float32, copy=True)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    np.divide(array, norms, out=array, where=norms > 0)
    return array


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def write_clip_retrieval_store(
    embeddings: npt.NDArray[Any] | Tensor,
    ids: Sequence[str],
    folder: str | Path,
    *,
    shard_size: int = CLIP_RETRIEVAL_SHARD_SIZE,
    id_column: str = "image_path",
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    encoder: str | None = None,
) -> Path:
    """Write ``[N, D]`` image embeddings and their ids in clip-retrieval's layout (see the module docstring).

    Rows are L2-normalised in float32 and stored as float16 in ``img_emb/img_emb_{N}.npy``, ``shard_size`` rows per
    shard (the last may be shorter); ``metadata/metadata_{N}.parquet`` holds the same rows' ids in ``id_column`` and
    the ``extra_columns`` (e.g. ``{"caption": [...]}``). clip-retrieval itself writes ``image_path`` for local
    collections; LAION's shards use ``url``/``caption``/``key``.

    Args:
        embeddings: ``[N, D]`` floating-point image embeddings, any norm (no zero or non-finite row).
        ids: ``N`` unique, non-empty image ids, in row order.
        folder: Destination; must not exist or be empty.
        shard_size: Rows per shard.
        id_column: Metadata column of the ids.
        extra_columns: Further metadata columns, each with ``N`` values (types pyarrow can infer).
        encoder: Encoder name recorded in ``seg.json`` (read back as :attr:`ClipRetrievalStore.encoder`); ``None``
            writes no ``seg.json``.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Embeddings not ``[N, D]`` floats with ``N, D >= 1``, a zero or non-finite row, ids of the wrong
            length, empty or repeated, ``shard_size < 1``, an empty ``id_column``, an extra column named like the
            id column or of the wrong length, an empty ``encoder``, or a non-empty ``folder``.
        ImportError: pyarrow is not installed.
    """
    if isinstance(embeddings, Tensor):
        array = embeddings.detach().cpu().float().numpy()
    elif isinstance(embeddings, np.ndarray):
        array = embeddings
    else:
        raise TypeError(f"embeddings must be an [N, D] numpy array or torch Tensor, got {type(embeddings).__name__}")
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point, got dtype {array.dtype}; convert with .astype(float)")
    count = int(array.shape[0])
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of image ids, not one string; wrap it in a list")
    id_list: list[Any] = list(ids)  # checked below: callers may pass anything
    if len(id_list) != count:
        raise ValueError(f"ids has {len(id_list)} entries for {count} embeddings; give one id per row")
    bad = [image_id for image_id in id_list if not isinstance(image_id, str) or not image_id]
    if bad:
        raise ValueError(f"ids must be non-empty strings, got {bad[0]!r}")
    if len(set(id_list)) != count:
        raise ValueError(
            f"ids repeat {_repeated(id_list)[:5]}; image ids must be unique (e.g. paths relative to a root)"
        )
    if isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of rows, got {shard_size!r}")
    if not id_column:
        raise ValueError("id_column is empty; name the metadata column of the ids, e.g. 'image_path'")
    columns = dict(extra_columns or {})
    for name, values in columns.items():
        if name == id_column:
            raise ValueError(f"extra_columns has a column {name!r}, which is id_column; drop it or rename one")
        if len(values) != count:
            raise ValueError(f"extra_columns[{name!r}] has {len(values)} values for {count} rows; give one per row")
    if encoder is not None and not encoder:
        raise ValueError("encoder is an empty string; give the encoder's name (e.g. 'open_clip:ViT-B-32/openai')")
    root = Path(folder)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(
            f"folder {root} exists and is not empty; write a clip-retrieval store to a new or empty folder"
        )

    norms = np.linalg.norm(array.astype(np.float32), axis=1)
    broken = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if broken.size:
        raise ValueError(
            f"embeddings row {int(broken[0])} ({id_list[int(broken[0])]!r}) is all zeros or not finite; it cannot be "
            "L2-normalised: drop that image or re-embed it"
        )
    parquet = _parquet()
    pyarrow = importlib.import_module("pyarrow")
    unit = _unit_rows(array)
    (root / EMBEDDINGS_FOLDER).mkdir(parents=True, exist_ok=True)
    (root / METADATA_FOLDER).mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, count, shard_size)):
        stop = min(start + shard_size, count)
        np.save(root / EMBEDDINGS_FOLDER / f"img_emb_{number}.npy", unit[start:stop].astype(np.float16))
        table = pyarrow.table(
            {id_column: id_list[start:stop], **{name: list(values[start:stop]) for name, values in columns.items()}}
        )
        parquet.write_table(table, root / METADATA_FOLDER / f"metadata_{number}.parquet")
    if encoder is not None:
        (root / SEG_INFO_FILE).write_text(json.dumps({"encoder": encoder}), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClipRetrievalShard:
    """One shard of an opened clip-retrieval folder.

    Attributes:
        number: ``N`` of ``img_emb_N.npy`` / ``metadata_N.parquet``.
        start: Row of the store where the shard begins.
        count: Rows in the shard.
        embeddings_path: The ``.npy`` file.
        metadata_path: The ``.parquet`` file.
        embeddings: ``[count, D]`` memory-mapped rows (read-only; float16 in LAION's shards).
    """

    number: int
    start: int
    count: int
    embeddings_path: Path
    metadata_path: Path
    embeddings: npt.NDArray[np.floating[Any]]


def _numbered_files(folder: Path, suffix: str, example: str) -> dict[int, Path]:
    """``{N: path}`` for the ``*.{suffix}`` files of ``folder``, ``N`` being the number their stem ends with."""
    pattern = re.compile(rf"^.*?(\d+)\.{suffix}$")
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix != f".{suffix}":
            continue
        match = pattern.match(path.name)
        if match is None:
            raise ConfigError(
                f"{path} has no shard number; clip-retrieval names these shards like {example}: rename or move it"
            )
        number = int(match[1])
        if number in found:
            raise ConfigError(f"{found[number].name} and {path.name} in {folder} are both shard {number}; keep one")
        found[number] = path
    return found


def _repeated(values: Sequence[str]) -> list[str]:
    """The values that occur more than once, sorted."""
    return sorted(value for value, times in Counter(values).items() if times > 1)


def _shard_list(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:10])
    return f"[{shown}{', ...' if len(numbers) > 10 else ''}]"


class ClipRetrievalStore:
    """A folder of image embeddings in clip-retrieval's layout, memory-mapped (see the module docstring).

    Open one with :meth:`open`. Row ``i`` is image ``ids[i]``; rows are read as float32 and L2-normalised. The store
    is not an :class:`~seg_retrieval.store.EmbeddingStore` (whose shards are of one size and carry a manifest); to
    index it, pass :meth:`as_array` with ``ids=`` to :func:`~seg_retrieval.index.build_index`, or convert it with
    :func:`import_clip_retrieval` when the collection does not fit in memory::

        store = ClipRetrievalStore.open("laion400m-embeddings")
        index = build_index(store.as_array(), IndexConfig(kind="ivf_pq"), ids=store.ids, encoder=store.encoder)

    Attributes:
        root: The folder.
        id_column: The metadata column that holds the image ids.
        columns: Metadata column names (of the first shard).
        shards: The non-empty shards, in row order.
    """

    def __init__(
        self,
        root: Path,
        shards: Sequence[ClipRetrievalShard],
        *,
        id_column: str,
        columns: Sequence[str],
        encoder: str,
    ) -> None:
        if not shards:
            raise ValueError("a ClipRetrievalStore needs at least one non-empty shard")
        self.root = root
        self.shards = tuple(shards)
        self.id_column = id_column
        self.columns = tuple(columns)
        self._encoder = encoder
        self._dim = int(self.shards[0].embeddings.shape[1])
        self._count = sum(shard.count for shard in self.shards)
        self._starts = np.array([shard.start for shard in self.shards], dtype=np.int64)
        self._ids: tuple[str, ...] | None = None

    @classmethod
    def open(cls, folder: str | Path, *, id_column: str | None = None) -> ClipRetrievalStore:
        """Open a clip-retrieval folder: pair its shards, memory-map the embeddings and check the metadata.

        Only the parquet footers are read here (row counts and columns); the ids are read on first use of
        :attr:`ids`.

        Args:
            folder: The folder holding ``img_emb/`` and ``metadata/``.
            id_column: Metadata column of the image ids; default the first of :data:`ID_COLUMNS` (``image_path``,
                ``url``, ``key``) that every shard has.

        Raises:
            ConfigError: A missing ``img_emb/`` or ``metadata/``, unnumbered or repeated shard files, shards with
                embeddings but no metadata or the reverse, an unreadable ``.npy``, embeddings that are not
                ``[n, D]`` floats of one ``D``, a metadata row count that differs from its embeddings, no rows,
                no id column (the message lists the columns found), or an invalid ``seg.json``.
            ImportError: pyarrow is not installed.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"{root} is not a folder; give the folder that holds {EMBEDDINGS_FOLDER}/ and metadata/")
        for sub in (EMBEDDINGS_FOLDER, METADATA_FOLDER):
            if not (root / sub).is_dir():
                raise ConfigError(
                    f"{root} is not a clip-retrieval folder: {sub}/ is missing (clip-retrieval inference writes "
                    f"{EMBEDDINGS_FOLDER}/img_emb_N.npy and {METADATA_FOLDER}/metadata_N.parquet)"
                )
        embedding_files = _numbered_files(root / EMBEDDINGS_FOLDER, "npy", "img_emb_0.npy")
        metadata_files = _numbered_files(root / METADATA_FOLDER, "parquet", "metadata_0.parquet")
        if not embedding_files:
            raise ConfigError(f"{root / EMBEDDINGS_FOLDER} holds no .npy shards; the collection is empty")
        if embedding_files.keys() != metadata_files.keys():
            lacking = sorted(embedding_files.keys() - metadata_files.keys())
            orphans = sorted(metadata_files.keys() - embedding_files.keys())
            problems = []
            if lacking:
                problems.append(f"embedding shards {_shard_list(lacking)} have no metadata_N.parquet")
            if orphans:
                problems.append(f"metadata shards {_shard_list(orphans)} have no img_emb_N.npy")
            raise ConfigError(
                f"{root} has {len(embedding_files)} embedding shards in {EMBEDDINGS_FOLDER}/ but {len(metadata_files)} "
                f"metadata shards in {METADATA_FOLDER}/: {'; '.join(problems)}; every img_emb_N.npy needs its "
                "metadata_N.parquet with the same rows (copy the missing files or remove the extra ones)"
            )
        parquet = _parquet()
        shards: list[ClipRetrievalShard] = []
        dim: int | None = None
        columns: list[str] | None = None
        common: set[str] | None = None
        start = 0
        for number in sorted(embedding_files):
            embeddings_path, metadata_path = embedding_files[number], metadata_files[number]
            try:
                array = np.load(embeddings_path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise ConfigError(f"{embeddings_path} is not a readable .npy file ({error})") from None
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
                raise ConfigError(
                    f"{embeddings_path} holds a {array.dtype} array of shape {array.shape}; clip-retrieval shards are "
                    "[n, D] float16 (or float32) arrays"
                )
            if dim is None:
                dim = int(array.shape[1])
            elif array.shape[1] != dim:
                raise ConfigError(
                    f"{embeddings_path} has dimension {array.shape[1]} but earlier shards have {dim}; all shards of "
                    "one collection come from one encoder"
                )
            try:
                info = parquet.read_metadata(metadata_path)
                names = [str(name) for name in parquet.read_schema(metadata_path).names]
            except Exception as error:  # pyarrow raises its own ArrowInvalid/OSError types
                raise ConfigError(f"{metadata_path} is not a readable parquet file ({error})") from None
            rows = int(info.num_rows)
            if rows != array.shape[0]:
                raise ConfigError(
                    f"shard {number}: {embeddings_path.name} has {array.shape[0]} rows but {metadata_path.name} has "
                    f"{rows}; the metadata rows must match the embedding rows one to one (re-export the shard)"
                )
            if columns is None:
                columns = names
            common = set(names) if common is None else common & set(names)
            if rows:
                shards.append(ClipRetrievalShard(number, start, rows, embeddings_path, metadata_path, array))
            start += rows
        assert columns is not None
        assert common is not None
        if not shards:
            raise ConfigError(f"every shard of {root} is empty; there are no embeddings to read")
        if id_column is not None:
            if id_column not in common:
                where = "some shards lack it" if id_column in columns else "no shard has it"
                raise ConfigError(
                    f"id_column={id_column!r} is not a metadata column of {root} ({where}); the metadata has columns "
                    f"{columns}: pass one of them"
                )
            chosen = id_column
        else:
            present = [name for name in ID_COLUMNS if name in common]
            if not present:
                raise ConfigError(
                    f"the metadata of {root} has none of the id columns {list(ID_COLUMNS)}; it has columns "
                    f"{columns}: pass id_column= naming the one that identifies each image"
                )
            chosen = present[0]
        return cls(root, shards, id_column=chosen, columns=columns, encoder=_read_encoder(root))

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (
            f"ClipRetrievalStore({str(self.root)!r}, encoder={self.encoder!r}, count={len(self)}, dim={self.dim}, "
            f"shards={len(self.shards)}, id_column={self.id_column!r})"
        )

    @property
    def encoder(self) -> str:
        """The encoder named in ``seg.json``, else ``"clip-retrieval:<folder name>"``."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return self._dim

    @property
    def fingerprint(self) -> str:
        """A digest of the shard files (names, row counts, sizes) and id column, recorded by imports."""
        parts = [
            [shard.embeddings_path.name, shard.metadata_path.name, shard.count, shard.embeddings_path.stat().st_size]
            for shard in self.shards
        ]
        digest = hashlib.sha256(json.dumps([self.id_column, parts]).encode()).hexdigest()[:16]
        return f"clip-retrieval:{digest}"

    @property
    def ids(self) -> tuple[str, ...]:
        """Image ids (the :attr:`id_column` values), one per row, in row order; read from the metadata once.

        Raises:
            ConfigError: A missing (null) id, or ids that repeat (LAION repeats some URLs: open with
                ``id_column="key"`` then).
        """
        if self._ids is None:
            ids = tuple(image_id for shard in self.shards for image_id in self._shard_ids(shard))
            if len(set(ids)) != len(ids):
                repeated = _repeated(ids)
                others = [name for name in self.columns if name != self.id_column]
                raise ConfigError(
                    f"the {self.id_column!r} column of {self.root} repeats {len(repeated)} ids, e.g. {repeated[:3]}; "
                    f"ids must be unique: open with another id_column (columns: {others})"
                )
            self._ids = ids
        return self._ids

    def _shard_ids(self, shard: ClipRetrievalShard) -> list[str]:
        if self._ids is not None:
            return list(self._ids[shard.start : shard.start + shard.count])
        values = _parquet().read_table(shard.metadata_path, columns=[self.id_column]).column(0).to_pylist()
        missing = [row for row, value in enumerate(values) if value is None or value == ""]
        if missing:
            raise ConfigError(
                f"{shard.metadata_path} has no {self.id_column!r} for row {missing[0]} (and {len(missing) - 1} more); "
                "every image needs an id: open with another id_column"
            )
        return [str(value) for value in values]

    def _rows(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Rows ``start .. stop - 1`` (``0 <= start <= stop <= len``) as normalised float32, across shards."""
        blocks: list[npt.NDArray[Any]] = []
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for shard in self.shards[max(first, 0) :]:
            if shard.start >= stop:
                break
            low, high = max(start - shard.start, 0), min(stop - shard.start, shard.count)
            if low < high:
                blocks.append(shard.embeddings[low:high])
        if not blocks:
            return np.empty((0, self.dim), dtype=np.float32)
        return _unit_rows(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))

    def embeddings(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]] | slice) -> Tensor:
        """Rows ``indices`` as ``[n, D]`` float32, L2-normalised, in the given order.

        Raises:
            ValueError: ``indices`` not one-dimensional.
            IndexError: An index outside ``[-len, len)``.
        """
        rows = _checked_rows(indices, len(self))
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for number in np.unique(shard_of):
            take = np.flatnonzero(shard_of == number)
            shard = self.shards[int(number)]
            local = rows[take] - shard.start
            order = np.argsort(local, kind="stable")  # sorted reads are sequential on disk
            out[take[order]] = shard.embeddings[local[order]]
        return torch.from_numpy(_unit_rows(out))

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """``(start_row, [n, D] float32 normalised rows)`` in row order, ``batch_size`` rows each (the last fewer).

        Batches cross shard boundaries; only one batch is in memory at a time.

        Raises:
            ValueError: ``batch_size < 1``.
        """
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of rows, got {batch_size!r}")
        for start in range(0, len(self), batch_size):
            yield start, self._rows(start, min(start + batch_size, len(self)))

    def as_array(self) -> npt.NDArray[np.floating[Any]]:
        """All rows as one ``[N, D]`` array of the stored dtype (float16 for LAION), not re-normalised.

        With one shard this is its read-only memory map (no copy); with several, a concatenation in memory
        (``N·D·2`` bytes in float16). Pass it to :func:`~seg_retrieval.index.build_index` with ``ids=self.ids``,
        which normalises rows block by block; convert collections larger than memory with
        :func:`import_clip_retrieval` instead.
        """
        if len(self.shards) == 1:
            return self.shards[0].embeddings
        return np.concatenate([shard.embeddings for shard in self.shards])


def _read_encoder(root: Path) -> str:
    path = root / SEG_INFO_FILE
    if not path.is_file():
        return f"clip-retrieval:{root.resolve().name}"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is not readable JSON ({error}); fix or delete it") from None
    encoder = info.get("encoder") if isinstance(info, dict) else None
    if not isinstance(encoder, str) or not encoder:
        raise ConfigError(
            f'{path} must be a JSON object with a non-empty "encoder" string, e.g. {{"encoder": '
            f'"open_clip:ViT-B-32/openai"}}, got {info!r}'
        )
    return encoder


# ---------------------------------------------------------------------------------------------------------------
# Converting to a seg store
# ---------------------------------------------------------------------------------------------------------------


def import_clip_retrieval(
    folder: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    id_column: str | None = None,
    progress: ProgressFn | None = None,
) -> EmbeddingStore:
    """Convert a clip-retrieval folder into a seg :class:`~seg_retrieval.store.EmbeddingStore`, shard by shard.

    Each seg shard (``shard_size`` rows) is read from the memory-mapped ``.npy`` files it spans, re-normalised in
    float32, stored as float16 and written atomically with its ids, so memory holds one shard and one metadata
    shard's ids. The plan records the clip-retrieval folder's :attr:`~ClipRetrievalStore.fingerprint`; re-running
    with the same arguments skips complete shards (a killed import resumes). The encoder name is the folder's
    :attr:`~ClipRetrievalStore.encoder`. The final check for repeated ids holds every id in memory once, as
    :func:`~seg_retrieval.store.embed_collection` does.

    Args:
        folder: The clip-retrieval folder (``img_emb/``, ``metadata/``).
        out_dir: The seg store folder: new, empty, or an import of the same folder and arguments (resumed).
        shard_size: Rows per seg shard.
        id_column: Metadata column of the ids (see :meth:`ClipRetrievalStore.open`).
        progress: Called as ``progress(done, total)`` in rows after each shard.

    Returns:
        The seg store, opened.

    Raises:
        ValueError: ``shard_size < 1`` or ids that repeat.
        ConfigError: A broken clip-retrieval folder (see :meth:`ClipRetrievalStore.open`), or an ``out_dir`` that
            holds a store of other arguments or is a non-empty folder that is not a store.
    """
    if isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of rows, got {shard_size!r}")
    source = ClipRetrievalStore.open(folder, id_column=id_column)
    root = Path(out_dir)
    plan = StorePlan(
        encoder=source.encoder,
        dim=source.dim,
        count=len(source),
        shard_size=shard_size,
        collection=source.fingerprint,
    )
    if _check_store_folder(root, plan) is None:
        root.mkdir(parents=True, exist_ok=True)
        _write_model(root / PLAN_FILE, plan)

    ids = _IdReader(source)
    done = 0
    for number in range(plan.num_shards):
        rows = plan.shard_rows(number)
        if not _shard_is_complete(root, plan, number):
            block = np.empty((len(rows), plan.dim), dtype=np.float16)
            for low in range(rows.start, rows.stop, _READ_ROWS):
                high = min(low + _READ_ROWS, rows.stop)
                block[low - rows.start : high - rows.start] = source._rows(low, high).astype(np.float16)
            embeddings_name, ids_name = _shard_names(number)
            # ids first, embeddings last: the store counts a shard as complete only when both exist.
            _write_json(root / ids_name, ids.between(rows.start, rows.stop))
            _atomic_write(root / embeddings_name, _npy_writer(block), binary=True)
        done += len(rows)
        if progress is not None:
            progress(done, plan.count)
    _finish(root, plan)
    return EmbeddingStore.open(root)


def _npy_writer(block: npt.NDArray[Any]) -> Callable[[Any], None]:
    """A writer of ``block`` as ``.npy`` into an open binary handle (for ``_atomic_write``)."""

    def write(handle: Any) -> None:
        np.save(handle, block)

    return write


class _IdReader:
    """Ids of row ranges, reading one metadata shard at a time (rows are asked for in increasing order)."""

    def __init__(self, store: ClipRetrievalStore) -> None:
        self._store = store
        self._cached: tuple[int, list[str]] | None = None  # (shard position, its ids)

    def between(self, start: int, stop: int) -> list[str]:
        out: list[str] = []
        for position, shard in enumerate(self._store.shards):
            if shard.start >= stop or shard.start + shard.count <= start:
                continue
            if self._cached is None or self._cached[0] != position:
                self._cached = (position, self._store._shard_ids(shard))
            low, high = max(start - shard.start, 0), min(stop - shard.start, shard.count)
            out.extend(self._cached[1][low:high])
        return out


# ---------------------------------------------------------------------------------------------------------------
# A published faiss index over the folder
# ---------------------------------------------------------------------------------------------------------------


def open_clip_retrieval_index(
    folder: str | Path,
    index_file: str | Path,
    *,
    id_column: str | None = None,
    nprobe: int | None = None,
) -> EmbeddingIndex:
    """Search a faiss index built over a clip-retrieval folder (LAION's published knn indexes) in place.

    The folder is opened with :meth:`ClipRetrievalStore.open` (its ids, in row order, and its encoder) and the index
    file wrapped with :meth:`~seg_retrieval.index.EmbeddingIndex.from_faiss`: IVF lists memory-mapped (a
    ``merged_index.ivfdata`` next to ``populated.index`` is found there), the config read off the index, row ``i``
    of the index taken as image ``ids[i]``. :meth:`~seg_retrieval.index.EmbeddingIndex.vectors` reads the folder's
    exact rows. The row counts are compared before the ids are read.

    Args:
        folder: The clip-retrieval folder (``img_emb/``, ``metadata/``) the index was built over.
        index_file: The faiss index file, e.g. ``knn.index`` or ``populated.index``.
        id_column: Metadata column of the ids (see :meth:`ClipRetrievalStore.open`).
        nprobe: IVF lists visited per query; default the index's own setting.

    Returns:
        The index, searchable by :func:`~seg_retrieval.curate.curate_archive` like one seg built.

    Raises:
        ConfigError: A broken folder (see :meth:`ClipRetrievalStore.open`), an index that does not hold one row per
            image of the folder (both counts and files named), or an index seg cannot search (see
            :meth:`~seg_retrieval.index.EmbeddingIndex.from_faiss`).
        ImportError: pyarrow is not installed.
    """
    from seg_retrieval.index import EmbeddingIndex, read_faiss_index

    source = ClipRetrievalStore.open(folder, id_column=id_column)
    index = read_faiss_index(index_file)
    if int(index.ntotal) != len(source):
        raise ConfigError(
            f"the faiss index {index_file} holds {int(index.ntotal)} vectors but the clip-retrieval folder {folder} "
            f"has {len(source)} rows in {len(source.shards)} shards; the index must be built over exactly these rows, "
            "in order (a missing or extra img_emb/metadata shard?)"
        )
    return EmbeddingIndex.from_faiss(index, source.ids, encoder=source.encoder, store=source, nprobe=nprobe)
