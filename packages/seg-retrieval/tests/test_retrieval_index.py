"""faiss indexes: results against a brute-force numpy search, save/load, store-backed vectors, devices, exact
re-ranking of IVF-PQ candidates from the store, and the errors for impossible settings."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from seg_core import ConfigError, Retriever
from seg_retrieval.index import (
    INDEX_MANIFEST_FILE,
    EmbeddingIndex,
    IndexConfig,
    build_index,
    default_nlist,
    gpu_available,
    resolve_device,
)
from seg_retrieval.store import EmbeddingStore, embed_collection


def unit(rows: np.ndarray) -> np.ndarray:
    result: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return result


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine in float64: (scores [Q, k], rows [Q, k])."""
    similarity = unit(queries.astype(np.float64)) @ unit(base.astype(np.float64)).T
    rows = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarity, rows, axis=1), rows


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)).astype(np.float32) * 2.5, rng.standard_normal((6, 16)).astype(np.float32)


def recall(found: Sequence[Sequence[str]], exact_rows: np.ndarray) -> float:
    hits = [len({int(i) for i in row} & set(exact.tolist())) for row, exact in zip(found, exact_rows, strict=True)]
    return sum(hits) / exact_rows.size


def test_flat_index_is_exact_and_a_retriever(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = build_index(base, IndexConfig(kind="flat"))
    assert isinstance(index, Retriever)
    scores, ids = index.search(torch.from_numpy(queries), 7)
    expected_scores, expected_rows = brute_force(base, queries, 7)
    assert ids == [[str(row) for row in rows] for rows in expected_rows.tolist()]
    assert scores.dtype == torch.float32
    assert scores.shape == (6, 7)
    np.testing.assert_allclose(scores.numpy(), expected_scores, atol=1e-5)


def test_ids_are_returned_for_rows(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    names = [f"img-{row}" for row in range(len(base))]
    index = build_index(torch.from_numpy(base), ids=names)
    _, ids = index.search(queries[:1], 3)
    assert ids[0] == [f"img-{row}" for row in brute_force(base, queries[:1], 3)[1][0]]


def test_ivf_flat_visiting_every_list_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = build_index(base, IndexConfig(kind="ivf_flat", nlist=8, nprobe=8))
    assert index.config.train_size == 300  # min(N, 64 * nlist)
    scores, ids = index.search(queries, 10)
    expected_scores, expected_rows = brute_force(base, queries, 10)
    assert ids == [[str(row) for row in rows] for rows in expected_rows.tolist()]
    np.testing.assert_allclose(scores.numpy(), expected_scores, atol=1e-5)


def test_ivf_nprobe_trades_recall(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = build_index(base, IndexConfig(kind="ivf_flat", nlist=16, nprobe=1))
    exact_rows = brute_force(base, queries, 5)[1]
    low = recall(index.search(queries, 5)[1], exact_rows)
    index.set_search_params(nprobe=16)
    assert index.config.nprobe == 16
    assert recall(index.search(queries, 5)[1], exact_rows) == 1.0
    assert low < 1.0  # one list of 16 misses some of the true neighbours


def test_hnsw_has_high_recall(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = build_index(base, IndexConfig(kind="hnsw", hnsw_m=8, ef_search=48, ef_construction=40))
    scores, ids = index.search(queries, 10)
    assert recall(ids, brute_force(base, queries, 10)[1]) >= 0.9
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    index.set_search_params(ef_search=64)
    assert index.faiss_index.hnsw.efSearch == 64


def test_ivf_pq_finds_each_vector_near_itself(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, _ = data
    index = build_index(base, IndexConfig(kind="ivf_pq", nlist=4, nprobe=4, pq_m=4, pq_bits=4))
    _, ids = index.search(base[:40], 5)
    assert sum(str(row) in ids[row] for row in range(40)) >= 36  # 16 bytes -> 2 bytes per vector, still close


def test_save_and_load_round_trip(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    base, queries = data
    index = build_index(base, IndexConfig(kind="ivf_flat", nlist=8, nprobe=3), ids=[f"i{r}" for r in range(300)])
    before = index.search(queries, 4)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["ids.json", "index.faiss", "index.json"]
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.config == index.config
    assert loaded.config.nlist == 8
    assert loaded.ids == index.ids
    after = loaded.search(queries, 4)
    assert after[1] == before[1]
    np.testing.assert_array_equal(after[0].numpy(), before[0].numpy())


def test_load_names_what_is_missing_or_broken(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match=r"index\.json is missing"):
        EmbeddingIndex.load(tmp_path)
    build_index(data[0][:20]).save(tmp_path / "idx")
    (tmp_path / "idx" / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ConfigError, match=r"inconsistent: 20 vectors in index\.json, 20 in index\.faiss, 2 ids"):
        EmbeddingIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / INDEX_MANIFEST_FILE).write_text('{"format": "seg-embedding-index", "dim": 16}')
    with pytest.raises(ConfigError, match="config: required field is missing"):
        EmbeddingIndex.load(tmp_path / "idx")


def test_nlist_larger_than_the_collection_is_a_config_error(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match=r"nlist=500 exceeds the 300 vectors .* use nlist <= 300 .* kind='flat'"):
        build_index(data[0], IndexConfig(kind="ivf_flat", nlist=500, nprobe=4))


def test_pq_m_must_divide_the_dimension(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match=r"pq_m=6 does not divide the dimension 16.* use one of \[4, 8, 16\]"):
        build_index(data[0], IndexConfig(kind="ivf_pq", nlist=4, nprobe=2, pq_m=6, pq_bits=4))
    with pytest.raises(ConfigError, match=r"pq_bits=12 needs 4096 training vectors"):
        build_index(data[0], IndexConfig(kind="ivf_pq", nlist=4, nprobe=2, pq_m=4, pq_bits=12))


def test_config_checks_its_own_fields() -> None:
    with pytest.raises(ValidationError, match="nprobe=9 exceeds nlist=8"):
        IndexConfig(kind="ivf_flat", nlist=8, nprobe=9)
    with pytest.raises(ConfigError, match="kind"):
        IndexConfig.parse({"kind": "lsh"})
    with pytest.raises(ConfigError, match="unknown field"):
        IndexConfig.parse({"nlists": 4})


def test_search_arguments_are_checked(data: tuple[np.ndarray, np.ndarray]) -> None:
    index = build_index(data[0][:50])
    with pytest.raises(ValueError, match="k=51 exceeds the 50 vectors in the index; use k <= 50"):
        index.search(data[1], 51)
    with pytest.raises(ValueError, match=r"queries must be \[Q, 16\], got shape \(6, 15\)"):
        index.search(data[1][:, :15], 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(data[1], 0)


def test_too_few_neighbours_in_the_visited_lists_is_reported(data: tuple[np.ndarray, np.ndarray]) -> None:
    index = build_index(data[0][:64], IndexConfig(kind="ivf_flat", nlist=8, nprobe=1))
    with pytest.raises(RuntimeError, match=r"found only \d+ < k=60 neighbours .* raise nprobe \(now 1\)"):
        index.search(data[1], 60)


def test_default_nlist_follows_four_root_n() -> None:
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(100) == 40
    assert default_nlist(3) == 3  # 4·√3 ≈ 6.9 is clamped to N
    assert default_nlist(1) == 1


def test_device_resolution() -> None:
    assert resolve_device("auto", "ivf_flat", has_gpu=True) == "gpu"
    assert resolve_device("auto", "hnsw", has_gpu=True) == "cpu"
    assert resolve_device("auto", "flat", has_gpu=False) == "cpu"
    assert resolve_device("cpu", "flat", has_gpu=True) == "cpu"
    assert resolve_device("gpu", "flat", has_gpu=True) == "gpu"
    with pytest.raises(ConfigError, match=r"device='gpu' but the installed faiss has no GPU support.*\[gpu\]"):
        resolve_device("gpu", "flat", has_gpu=False)
    with pytest.raises(ConfigError, match="HNSW on the CPU only"):
        resolve_device("gpu", "hnsw", has_gpu=True)


@pytest.mark.skipif(gpu_available(), reason="checks the error of a CPU-only faiss")
def test_asking_for_a_gpu_without_gpu_faiss_fails_and_auto_falls_back(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="device='gpu'"):
        build_index(data[0], IndexConfig(device="gpu"))
    assert build_index(data[0][:10], IndexConfig(device="auto")).device == "cpu"


class Identity:
    """Encoder of 1x1 'images' whose three pixels are the embedding."""

    name = "identity"
    embed_dim = 3

    def encode_image(self, images: Tensor) -> Tensor:
        return images.flatten(1)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def dense_features(self, images: Tensor) -> Tensor:
        raise NotImplementedError


class Points:
    """Rows of an array as ``[3, D/3, 1]`` images (an :class:`Identity` or :class:`Passthrough` embeds them back),
    with ids ``f"{prefix}{row}"``."""

    def __init__(self, rows: np.ndarray, prefix: str = "p") -> None:
        self.rows = torch.from_numpy(rows)
        self.prefix = prefix

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        return f"{self.prefix}{index}", self.rows[index].reshape(3, -1, 1)


def test_index_over_a_store_keeps_its_ids_encoder_and_vectors(tmp_path: Path) -> None:
    rows = np.random.default_rng(3).standard_normal((30, 3)).astype(np.float32)
    store = embed_collection(Identity(), Points(rows), tmp_path / "store", shard_size=8, progress=False)
    index = build_index(store, IndexConfig(kind="ivf_flat", nlist=4, nprobe=4))
    assert index.ids == store.ids
    assert index.encoder == "identity"
    assert index.store == str((tmp_path / "store").resolve())
    _, ids = index.search(rows[[7]], 1)
    assert ids == [["p7"]]
    np.testing.assert_allclose(index.vectors(["p9", "p2"]).numpy(), unit(rows[[9, 2]]), atol=2e-3)  # float16 store

    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.encoder == "identity"
    np.testing.assert_allclose(loaded.vectors(["p9"]).numpy(), unit(rows[[9]]), atol=2e-3)
    with pytest.raises(ValueError, match="ids must be None when indexing a store"):
        build_index(store, ids=["x"] * 30)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "hnsw"])
def test_vectors_are_reconstructed_without_a_store(kind: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    base = data[0][:40]
    index = build_index(base, IndexConfig.parse({"kind": kind, "nlist": 4, "nprobe": 2, "hnsw_m": 4}))
    np.testing.assert_allclose(index.vectors(["5", "0"]).numpy(), unit(base[[5, 0]]), atol=1e-6)
    with pytest.raises(KeyError, match="'nope' is not in the index"):
        index.vectors(["nope"])


def test_bad_sources_are_refused() -> None:
    with pytest.raises(ValueError, match=r"non-empty \[N, D\] array, got shape \(4,\)"):
        build_index(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="floating point"):
        build_index(np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="ids has 1 entries for 4 vectors"):
        build_index(np.ones((4, 2), dtype=np.float32), ids=["a"])
    with pytest.raises(ValueError, match="must be unique"):
        build_index(np.ones((2, 2), dtype=np.float32), ids=["a", "a"])


# ---------------------------------------------------------------------------------------------------------------
# Exact re-ranking of approximate candidates (IndexConfig.rerank)
# ---------------------------------------------------------------------------------------------------------------

PQ_RERANK = IndexConfig(kind="ivf_pq", nlist=4, nprobe=4, pq_m=6, pq_bits=4, device="cpu")  # 3 bytes per vector


class Passthrough(Identity):
    """Encoder of [3, D/3, 1] 'images' whose pixels are the embedding."""

    def __init__(self, dim: int) -> None:
        self.embed_dim = dim


@dataclass(frozen=True)
class Clustered:
    base: np.ndarray  # [640, 24] float32, 20 clusters
    queries: np.ndarray  # [20, 24] float32, drawn the same way
    store: EmbeddingStore  # the base as a float16 store, ids "0".."639"
    stored: np.ndarray  # the store's rows, float32 L2-normalised (what re-ranking reads)


def clustered_rows(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).standard_normal((20, 24))
    return (centres[rng.integers(0, 20, count)] + 0.5 * rng.standard_normal((count, 24))).astype(np.float32)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> Clustered:
    base = clustered_rows(640, seed=0)
    root = tmp_path_factory.mktemp("rerank") / "store"
    store = embed_collection(Passthrough(24), Points(base, prefix=""), root, shard_size=256, progress=False)
    assert store.ids == tuple(str(row) for row in range(640))
    stored = unit(store.embeddings(range(640)).numpy().astype(np.float64)).astype(np.float32)
    return Clustered(base, clustered_rows(20, seed=1), store, stored)


def exact_cosines(data: Clustered, ids: Sequence[Sequence[str]]) -> np.ndarray:
    """Cosine of each query with the stored vectors of its returned ids, in float64."""
    queries = unit(data.queries.astype(np.float64))
    rows = np.array([[int(image_id) for image_id in row] for row in ids])
    cosines: np.ndarray = np.einsum("qkd,qd->qk", data.stored[rows].astype(np.float64), queries)
    return cosines


def test_rerank_lifts_ivf_pq_recall_and_returns_exact_cosines(clustered: Clustered) -> None:
    index = build_index(clustered.store, PQ_RERANK)
    exact_rows = brute_force(clustered.base, clustered.queries, 10)[1]
    approximate_scores, approximate_ids = index.search(clustered.queries, 10)
    without = recall(approximate_ids, exact_rows)
    assert not np.allclose(approximate_scores.numpy(), exact_cosines(clustered, approximate_ids), atol=1e-2)

    index.set_search_params(rerank=80)
    assert index.config.rerank == 80
    scores, ids = index.search(clustered.queries, 10)
    assert scores.shape == (20, 10)
    assert without < 0.6  # 3-byte codes: PQ scores misorder the neighbours
    assert recall(ids, exact_rows) >= without + 0.3  # measured 0.44 -> 1.00
    np.testing.assert_allclose(scores.numpy(), exact_cosines(clustered, ids), atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), brute_force(clustered.base, clustered.queries, 10)[0], atol=2e-3)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())

    index.set_search_params(rerank=640)  # every list visited and every vector re-scored: exact over the store
    scores, ids = index.search(torch.from_numpy(clustered.queries), 10)
    store_scores, store_rows = brute_force(clustered.stored, clustered.queries, 10)
    assert ids == [[str(row) for row in rows] for rows in store_rows.tolist()]
    np.testing.assert_allclose(scores.numpy(), store_scores, atol=1e-5)

    index.set_search_params(rerank=0)
    off = index.config
    assert off.rerank is None
    assert index.search(clustered.queries, 10)[1] == approximate_ids


def test_rerank_smaller_than_k_or_larger_than_the_index_still_returns_k(clustered: Clustered) -> None:
    index = build_index(clustered.store, PQ_RERANK)
    _, approximate = index.search(clustered.queries, 30)
    index.set_search_params(rerank=5)  # fewer candidates than k: the k approximate ones, re-ordered exactly
    scores, ids = index.search(clustered.queries, 30)
    assert [len(row) for row in ids] == [30] * 20
    assert [sorted(row) for row in ids] == [sorted(row) for row in approximate]
    assert ids != approximate
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    np.testing.assert_allclose(scores.numpy(), exact_cosines(clustered, ids), atol=1e-5)
    index.set_search_params(rerank=10_000)  # capped at the 640 vectors indexed
    assert index.search(clustered.queries, 640)[0].shape == (20, 640)
    assert index.search(clustered.queries[:0], 3)[0].shape == (0, 3)


def test_rerank_on_an_imported_l2_index_scores_by_exact_cosine(clustered: Clustered) -> None:
    plain = faiss.index_factory(24, "IVF4,PQ6x4np", faiss.METRIC_L2)
    plain.train(clustered.stored)
    plain.add(clustered.stored)
    imported = EmbeddingIndex.from_faiss(plain, clustered.store.ids, store=clustered.store, nprobe=4, rerank=640)
    assert (imported.config.metric, imported.config.rerank) == ("l2", 640)
    scores, ids = imported.search(clustered.queries, 5)
    store_scores, store_rows = brute_force(clustered.stored, clustered.queries, 5)
    assert ids == [[str(row) for row in rows] for rows in store_rows.tolist()]
    np.testing.assert_allclose(scores.numpy(), store_scores, atol=1e-5)  # cosines, not 1 - d / 2 of PQ distances


def test_rerank_without_the_store_names_the_field_and_the_fix(
    tmp_path: Path, clustered: Clustered, data: tuple[np.ndarray, np.ndarray]
) -> None:
    from_array = build_index(data[0], IndexConfig(kind="ivf_flat", nlist=4, nprobe=2, rerank=40))
    with pytest.raises(ConfigError, match=r"IndexConfig\.rerank=40 .*\(it was built from an array.*\(rerank=0\)"):
        from_array.search(data[1], 5)
    from_array.set_search_params(rerank=0)
    assert len(from_array.search(data[1], 5)[1][0]) == 5

    store = clustered.store.root
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    build_index(EmbeddingStore.open(copy), PQ_RERANK.model_copy(update={"rerank": 40})).save(tmp_path / "idx")
    shutil.rmtree(copy)
    moved = EmbeddingIndex.load(tmp_path / "idx")
    with pytest.raises(ConfigError, match=rf"rerank=40 .*\({re.escape(str(copy.resolve()))} is missing"):
        moved.search(clustered.queries, 5)


def test_rerank_is_saved_and_loaded_with_the_index(tmp_path: Path, clustered: Clustered) -> None:
    index = build_index(clustered.store, PQ_RERANK.model_copy(update={"rerank": 40}))
    before = index.search(clustered.queries, 10)
    index.save(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / INDEX_MANIFEST_FILE).read_text())["config"]["rerank"] == 40
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.config.rerank == 40
    after = loaded.search(clustered.queries, 10)
    assert after[1] == before[1]
    np.testing.assert_array_equal(after[0].numpy(), before[0].numpy())
    loaded.set_search_params(rerank=0)
    loaded.save(tmp_path / "off")
    assert EmbeddingIndex.load(tmp_path / "off").config.rerank is None


def test_rerank_values_are_checked(clustered: Clustered) -> None:
    index = build_index(clustered.store, PQ_RERANK)
    with pytest.raises(ConfigError, match=r"rerank=-1 is not a number of candidates: use rerank >= 1 .* rerank=0"):
        index.set_search_params(rerank=-1)
    with pytest.raises(ConfigError, match="rerank=True"):
        index.set_search_params(rerank=True)
    assert index.config.rerank is None
    index.set_search_params(nprobe=2)  # None leaves rerank as it is
    index.set_search_params(rerank=50)
    index.set_search_params(nprobe=3)
    changed = index.config
    assert (changed.nprobe, changed.rerank) == (3, 50)
    with pytest.raises(ValidationError, match="rerank"):
        IndexConfig(kind="ivf_pq", rerank=0)
