"""faiss indexes: results against a brute-force numpy search, save/load, store-backed vectors, devices, and the
errors for impossible settings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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
from seg_retrieval.store import embed_collection


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
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = torch.from_numpy(rows)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        return f"p{index}", self.rows[index].reshape(3, 1, 1)


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
