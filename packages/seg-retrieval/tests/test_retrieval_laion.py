"""clip-retrieval (LAION) embedding folders: the written layout read back with plain numpy/pyarrow, ids and values
through ClipRetrievalStore, numeric shard order, a flat index and a curated archive against a numpy brute force,
conversion to a seg store (and its resume), and the errors for broken folders and bad arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from seg_core import ConfigError
from seg_retrieval.curate import curate_archive
from seg_retrieval.index import IndexConfig, build_index
from seg_retrieval.laion import (
    SEG_INFO_FILE,
    ClipRetrievalStore,
    import_clip_retrieval,
    write_clip_retrieval_store,
)
from seg_retrieval.store import EmbeddingStore

COUNT, DIM, SHARD = 30, 16, 10
FP16 = 2e-3  # float16 keeps 11 significant bits: unit-vector entries are off by at most ~5e-4


@pytest.fixture
def pq() -> Any:
    """``pyarrow.parquet``, or skip: reading parquet needs the ``seg-retrieval[laion]`` extra."""
    return pytest.importorskip("pyarrow.parquet", reason="needs pyarrow (pip install 'seg-retrieval[laion]')")


def unit(rows: np.ndarray) -> np.ndarray:
    result: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return result


@pytest.fixture
def data() -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((COUNT, DIM)).astype(np.float32) * 3.0  # not unit: the writer normalises
    ids = [f"images/{row:03d}.jpg" for row in range(COUNT)]
    captions = [f"a photo number {row}" for row in range(COUNT)]
    return vectors, ids, captions


@pytest.fixture
def folder(pq: Any, tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]) -> Path:
    vectors, ids, captions = data
    return write_clip_retrieval_store(
        vectors, ids, tmp_path / "laion-mini", shard_size=SHARD, extra_columns={"caption": captions}
    )


def test_written_layout_is_clip_retrievals(
    pq: Any, folder: Path, data: tuple[np.ndarray, list[str], list[str]]
) -> None:
    vectors, ids, captions = data
    assert sorted(path.name for path in (folder / "img_emb").iterdir()) == [f"img_emb_{n}.npy" for n in range(3)]
    assert sorted(path.name for path in (folder / "metadata").iterdir()) == [f"metadata_{n}.parquet" for n in range(3)]
    assert not (folder / SEG_INFO_FILE).exists()
    for number in range(3):
        rows = slice(number * SHARD, (number + 1) * SHARD)
        array = np.load(folder / "img_emb" / f"img_emb_{number}.npy")
        assert array.dtype == np.float16
        assert array.shape == (SHARD, DIM)
        np.testing.assert_allclose(array.astype(np.float64), unit(vectors[rows].astype(np.float64)), atol=FP16)
        table = pq.read_table(folder / "metadata" / f"metadata_{number}.parquet")
        assert table.column_names == ["image_path", "caption"]
        assert table.column("image_path").to_pylist() == ids[rows]
        assert table.column("caption").to_pylist() == captions[rows]


def test_open_reads_ids_rows_and_batches(folder: Path, data: tuple[np.ndarray, list[str], list[str]]) -> None:
    vectors, ids, _ = data
    expected = unit(vectors.astype(np.float64))
    store = ClipRetrievalStore.open(folder)
    assert store.id_column == "image_path"
    assert store.columns == ("image_path", "caption")
    assert store.ids == tuple(ids)
    assert len(store) == COUNT
    assert store.dim == DIM
    assert store.encoder == "clip-retrieval:laion-mini"
    assert [(shard.number, shard.start, shard.count) for shard in store.shards] == [
        (0, 0, 10),
        (1, 10, 10),
        (2, 20, 10),
    ]

    picked = [29, 3, 10, -1, 9, 3]  # unsorted, across shards, negative, repeated
    rows = store.embeddings(picked)
    assert rows.dtype == torch.float32
    assert rows.shape == (len(picked), DIM)
    np.testing.assert_allclose(rows.numpy(), expected[picked], atol=FP16)
    np.testing.assert_allclose(torch.linalg.vector_norm(rows, dim=1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(store.embeddings(slice(8, 12)).numpy(), expected[8:12], atol=FP16)
    with pytest.raises(IndexError, match="row 30 out of range"):
        store.embeddings([30])

    batches = list(store.iter_batches(7))
    assert [start for start, _ in batches] == [0, 7, 14, 21, 28]
    assert [len(block) for _, block in batches] == [7, 7, 7, 7, 2]
    assert all(block.dtype == np.float32 for _, block in batches)
    np.testing.assert_allclose(np.concatenate([block for _, block in batches]), expected, atol=FP16)
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        next(store.iter_batches(0))

    whole = store.as_array()
    assert whole.shape == (COUNT, DIM)
    assert whole.dtype == np.float16


def test_encoder_comes_from_seg_json(pq: Any, tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]) -> None:
    vectors, ids, _ = data
    folder = write_clip_retrieval_store(vectors, ids, tmp_path / "named", encoder="open_clip:ViT-B-32/laion400m_e32")
    assert json.loads((folder / SEG_INFO_FILE).read_text()) == {"encoder": "open_clip:ViT-B-32/laion400m_e32"}
    store = ClipRetrievalStore.open(folder)
    assert store.encoder == "open_clip:ViT-B-32/laion400m_e32"
    assert len(store.shards) == 1
    assert isinstance(store.as_array(), np.memmap)  # one shard: no copy
    (folder / SEG_INFO_FILE).write_text('{"model": "x"}')
    with pytest.raises(ConfigError, match='non-empty "encoder" string'):
        ClipRetrievalStore.open(folder)


def test_shards_are_ordered_by_number_not_name(pq: Any, tmp_path: Path) -> None:
    """img_emb_10 follows img_emb_9 (a string sort would put it after img_emb_1); zero-padded names too."""
    vectors = np.eye(12, dtype=np.float32)
    ids = [f"row-{row}" for row in range(12)]
    folder = write_clip_retrieval_store(vectors, ids, tmp_path / "many", shard_size=1)
    store = ClipRetrievalStore.open(folder)
    assert store.ids == tuple(ids)
    assert [shard.number for shard in store.shards] == list(range(12))
    np.testing.assert_allclose(store.embeddings(list(range(12))).numpy(), vectors, atol=FP16)
    for number in range(12):  # zero-padded names, as some LAION releases use
        (folder / "img_emb" / f"img_emb_{number}.npy").rename(folder / "img_emb" / f"img_emb_{number:04d}.npy")
        (folder / "metadata" / f"metadata_{number}.parquet").rename(
            folder / "metadata" / f"metadata_{number:04d}.parquet"
        )
    assert ClipRetrievalStore.open(folder).ids == tuple(ids)


def test_flat_index_and_archive_find_the_chosen_rows(
    folder: Path, data: tuple[np.ndarray, list[str], list[str]]
) -> None:
    vectors, ids, _ = data
    store = ClipRetrievalStore.open(folder)
    index = build_index(store.as_array(), IndexConfig(kind="flat", device="cpu"), ids=store.ids, encoder=store.encoder)
    assert index.encoder == "clip-retrieval:laion-mini"

    chosen = [4, 23]  # the "text embeddings" of two concepts are these rows (scaled: norms must not matter)
    text = torch.from_numpy(vectors[chosen] * 0.5)
    archive = curate_archive(index, ["cat", "dog"], text, 5, encoder=store.encoder, store=str(folder))
    assert archive.encoder == store.encoder
    similarity = unit(vectors[chosen].astype(np.float64)) @ unit(vectors.astype(np.float64)).T
    for concept, row, scores in zip(archive.concepts, chosen, similarity, strict=True):
        assert concept.image_ids[0] == ids[row]
        assert concept.items[0].score == pytest.approx(1.0, abs=FP16)
        brute = np.argsort(-scores, kind="stable")[:5]
        assert list(concept.image_ids) == [ids[int(r)] for r in brute]
        np.testing.assert_allclose([item.score for item in concept.items], scores[brute], atol=FP16)


def test_import_makes_a_seg_store_and_resumes(
    folder: Path, tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]
) -> None:
    vectors, ids, _ = data
    out = tmp_path / "seg-store"
    seen: list[tuple[int, int]] = []
    store = import_clip_retrieval(folder, out, shard_size=8, progress=lambda done, total: seen.append((done, total)))
    assert isinstance(store, EmbeddingStore)
    assert seen == [(8, 30), (16, 30), (24, 30), (30, 30)]
    assert store.ids == tuple(ids)
    assert store.encoder == "clip-retrieval:laion-mini"
    assert str(store.manifest.collection).startswith("clip-retrieval:")
    assert [shard.count for shard in store.manifest.shards] == [8, 8, 8, 6]  # seg shards cross clip shards
    np.testing.assert_allclose(store.embeddings(list(range(COUNT))).numpy(), unit(vectors), atol=FP16)
    index = build_index(store, IndexConfig(kind="flat", device="cpu"))
    _, found = index.search(torch.from_numpy(vectors[[17]]), 1)
    assert found == [[ids[17]]]

    # A killed import (a shard and the manifest lost) resumes with the same arguments; others are refused.
    (out / "shard-00002.npy").unlink()
    (out / "manifest.json").unlink()
    kept = (out / "shard-00001.npy").stat().st_mtime_ns
    again = import_clip_retrieval(folder, out, shard_size=8)
    assert (out / "shard-00001.npy").stat().st_mtime_ns == kept  # complete shards are not rewritten
    np.testing.assert_array_equal(again.embeddings(list(range(COUNT))).numpy(), store.embeddings(list(range(COUNT))))
    with pytest.raises(ConfigError, match="shard_size: 8 != 16"):
        import_clip_retrieval(folder, out, shard_size=16)
    with pytest.raises(ConfigError, match="not an embedding store"):
        import_clip_retrieval(folder, folder / "img_emb", shard_size=8)


def test_shard_count_mismatch_is_refused(folder: Path) -> None:
    (folder / "metadata" / "metadata_2.parquet").unlink()
    with pytest.raises(ConfigError, match=r"3 embedding shards .* but 2 metadata shards.*\[2\] have no metadata"):
        ClipRetrievalStore.open(folder)


def test_row_count_mismatch_is_refused(folder: Path) -> None:
    np.save(folder / "img_emb" / "img_emb_1.npy", np.ones((9, DIM), dtype=np.float16))
    with pytest.raises(ConfigError, match=r"img_emb_1\.npy has 9 rows but metadata_1\.parquet has 10"):
        ClipRetrievalStore.open(folder)


def test_id_columns_unknown_or_absent_are_refused(
    pq: Any, folder: Path, tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]
) -> None:
    with pytest.raises(ConfigError, match=r"id_column='name' is not a metadata column .*\['image_path', 'caption'\]"):
        ClipRetrievalStore.open(folder, id_column="name")
    assert ClipRetrievalStore.open(folder, id_column="caption").ids[2] == "a photo number 2"

    vectors, ids, _ = data
    other = write_clip_retrieval_store(vectors, ids, tmp_path / "named-ids", id_column="name")
    with pytest.raises(ConfigError, match=r"none of the id columns \['image_path', 'url', 'key'\].*\['name'\]"):
        ClipRetrievalStore.open(other)
    assert ClipRetrievalStore.open(other, id_column="name").ids == tuple(ids)


def test_url_before_key_and_repeated_ids(pq: Any, tmp_path: Path) -> None:
    """LAION metadata has url and key; url is tried first, and a repeated url asks for another column."""
    pa = pytest.importorskip("pyarrow")
    folder = tmp_path / "laion"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "img_emb" / "img_emb_0.npy", np.eye(3, dtype=np.float16))
    table = pa.table({"url": ["http://a", "http://b", "http://a"], "caption": ["x", "y", "z"], "key": ["0", "1", "2"]})
    pq.write_table(table, folder / "metadata" / "metadata_0.parquet")
    store = ClipRetrievalStore.open(folder)
    assert store.id_column == "url"
    with pytest.raises(ConfigError, match=r"repeats 1 ids, e\.g\. \['http://a'\].*another id_column"):
        _ = store.ids
    assert ClipRetrievalStore.open(folder, id_column="key").ids == ("0", "1", "2")


def test_bad_folders_are_refused(pq: Any, tmp_path: Path, folder: Path) -> None:
    with pytest.raises(ConfigError, match="img_emb/ is missing"):
        ClipRetrievalStore.open(folder / "img_emb")
    (folder / "img_emb" / "img_emb_01.npy").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"img_emb_01\.npy and img_emb_1\.npy .* both shard 1"):
        ClipRetrievalStore.open(folder)
    (folder / "img_emb" / "img_emb_01.npy").unlink()
    (folder / "img_emb" / "extra.npy").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"extra\.npy has no shard number"):
        ClipRetrievalStore.open(folder)


def test_write_arguments_are_checked(tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]) -> None:
    vectors, ids, captions = data
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"non-empty \[N, D\] array, got shape \(16,\)"):
        write_clip_retrieval_store(vectors[0], ids[:1], out)
    with pytest.raises(ValueError, match="ids has 29 entries for 30 embeddings"):
        write_clip_retrieval_store(vectors, ids[:-1], out)
    with pytest.raises(ValueError, match=r"ids repeat \['images/000.jpg'\]"):
        write_clip_retrieval_store(vectors, [ids[0], *ids[:-1]], out)
    with pytest.raises(ValueError, match="shard_size must be a positive"):
        write_clip_retrieval_store(vectors, ids, out, shard_size=0)
    with pytest.raises(ValueError, match=r"extra_columns\['caption'\] has 2 values for 30 rows"):
        write_clip_retrieval_store(vectors, ids, out, extra_columns={"caption": captions[:2]})
    with pytest.raises(ValueError, match="'image_path', which is id_column"):
        write_clip_retrieval_store(vectors, ids, out, extra_columns={"image_path": ids})
    broken = vectors.copy()
    broken[5] = 0.0
    with pytest.raises(ValueError, match=r"row 5 \('images/005.jpg'\) is all zeros or not finite"):
        write_clip_retrieval_store(broken, ids, out)
    assert not out.exists()  # nothing is written before the arguments are checked
    out.mkdir()
    (out / "other.txt").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        write_clip_retrieval_store(vectors, ids, out)


def test_missing_pyarrow_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: tuple[np.ndarray, list[str], list[str]]
) -> None:
    vectors, ids, _ = data
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'seg-retrieval\[laion\]'"):
        write_clip_retrieval_store(vectors, ids, tmp_path / "out")
