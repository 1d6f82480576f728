"""Indexes past memory: on-disk inverted lists (results, resume, moving the folder) and parameters chosen for a
memory budget (estimates against faiss's own serialised sizes, the order of the choices, the errors)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from pydantic import ValidationError

import seg_retrieval.index as index_module
from seg_core import ConfigError
from seg_retrieval.index import (
    INDEX_IVFDATA_FILE,
    EmbeddingIndex,
    IndexConfig,
    build_index,
    config_for_memory,
    estimate_index_bytes,
    parse_bytes,
)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 300 rows, so a 1,000-row source is added as 4 parts (3 x 300 + 100)."""
    monkeypatch.setattr(index_module, "_ADD_CHUNK", 300)


def clustered(count: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    rows = centres[rng.integers(0, 20, count)] + 0.3 * rng.standard_normal((count, dim))
    return rows.astype(np.float32)


PQ = IndexConfig(kind="ivf_pq", nlist=16, nprobe=16, pq_m=4, pq_bits=6, device="cpu")


def test_on_disk_index_equals_the_in_memory_one_and_survives_a_move(tmp_path: Path, small_blocks: None) -> None:
    rows = clustered(1000)
    ids = [f"img{row:04d}" for row in range(1000)]
    seen: list[tuple[int, int]] = []
    on_disk = build_index(
        rows,
        PQ.model_copy(update={"on_disk": True}),
        ids=ids,
        directory=tmp_path / "index",
        progress=lambda done, total: seen.append((done, total)),
    )
    in_memory = build_index(rows, PQ, ids=ids)
    assert seen == [(300, 1000), (600, 1000), (900, 1000), (1000, 1000)]
    assert sorted(path.name for path in (tmp_path / "index").iterdir()) == [
        "ids.json",
        "index.faiss",
        "index.ivfdata",
        "index.json",
    ]  # the parts are gone once merged
    assert on_disk.ivfdata == tmp_path / "index" / INDEX_IVFDATA_FILE
    queries = clustered(7, seed=1)
    disk_scores, disk_ids = on_disk.search(queries, 10)
    memory_scores, memory_ids = in_memory.search(queries, 10)
    assert disk_ids == memory_ids
    np.testing.assert_array_equal(disk_scores.numpy(), memory_scores.numpy())
    # the inverted lists really are the memory-mapped kind
    invlists = faiss.extract_index_ivf(on_disk.faiss_index).invlists
    assert invlists is not None
    assert isinstance(faiss.downcast_InvertedLists(invlists), faiss.OnDiskInvertedLists)

    shutil.move(tmp_path / "index", tmp_path / "moved")  # the lists file is found next to index.faiss
    moved = EmbeddingIndex.load(tmp_path / "moved")
    assert moved.config.on_disk
    assert moved.device == "cpu"
    assert moved.search(queries, 10)[1] == memory_ids
    copy = EmbeddingIndex.load(moved.save(tmp_path / "copy"))  # saving elsewhere copies the lists
    assert (tmp_path / "copy" / INDEX_IVFDATA_FILE).stat().st_size == (
        tmp_path / "moved" / INDEX_IVFDATA_FILE
    ).stat().st_size
    assert copy.search(queries, 10)[1] == memory_ids


def test_a_killed_on_disk_build_resumes_from_its_parts(
    tmp_path: Path, small_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = clustered(1000)
    config = PQ.model_copy(update={"on_disk": True})
    clones: list[int] = []
    real_clone = faiss.clone_index

    def counting_clone(index: faiss.Index) -> faiss.Index:
        clones.append(1)
        return real_clone(index)

    monkeypatch.setattr(faiss, "clone_index", counting_clone)

    def die_after_two(done: int, total: int) -> None:
        if done >= 600:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(rows, config, directory=tmp_path / "index", progress=die_after_two)
    parts = sorted(path.name for path in (tmp_path / "index" / ".parts").iterdir())
    assert parts == [
        "part-00000.digest",
        "part-00000.faiss",
        "part-00001.digest",
        "part-00001.faiss",
        "plan.json",
        "trained.faiss",
    ]
    assert len(clones) == 2
    resumed = build_index(rows, config, directory=tmp_path / "index")
    assert len(clones) == 4  # only the two missing parts were added
    assert not (tmp_path / "index" / ".parts").exists()
    queries = clustered(5, seed=2)
    assert resumed.search(queries, 8)[1] == build_index(rows, PQ).search(queries, 8)[1]

    # other rows under the same folder: the old parts are not reused
    with pytest.raises(KeyboardInterrupt):
        build_index(rows, config, directory=tmp_path / "other", progress=die_after_two)
    changed = rows[::-1].copy()
    rebuilt = build_index(changed, config, directory=tmp_path / "other")
    assert rebuilt.search(queries, 8)[1] == build_index(changed, PQ).search(queries, 8)[1]


def test_on_disk_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only IVF indexes"):
        IndexConfig(kind="flat", on_disk=True)
    with pytest.raises(ValidationError, match="CPU only"):
        IndexConfig(kind="ivf_pq", on_disk=True, device="gpu")
    with pytest.raises(ConfigError, match="directory=DIR"):
        build_index(clustered(400), PQ.model_copy(update={"on_disk": True}))
    build_index(clustered(400), PQ.model_copy(update={"on_disk": True}), directory=tmp_path / "index")
    with pytest.raises(ConfigError, match="CPU only"):
        EmbeddingIndex.load(tmp_path / "index", device="gpu")
    (tmp_path / "index" / INDEX_IVFDATA_FILE).unlink()
    with pytest.raises(ConfigError, match=r"lacks its inverted lists index\.ivfdata"):
        EmbeddingIndex.load(tmp_path / "index")


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(kind="flat", device="cpu"),
        IndexConfig(kind="ivf_flat", nlist=64, device="cpu"),
        IndexConfig(kind="ivf_pq", nlist=64, pq_m=8, pq_bits=8, device="cpu"),
        IndexConfig(kind="hnsw", hnsw_m=16, device="cpu"),
    ],
    ids=lambda config: config.kind,
)
def test_memory_estimates_match_faiss_serialised_sizes(config: IndexConfig) -> None:
    count, dim = 6000, 32
    built = build_index(clustered(count, dim), config)
    actual = faiss.serialize_index(built.faiss_index).size
    estimate = estimate_index_bytes(built.config, count, dim)
    assert abs(estimate - actual) <= 0.15 * actual, (estimate, actual)


def test_on_disk_estimate_counts_only_what_stays_in_memory(tmp_path: Path) -> None:
    count, dim = 6000, 32
    config = IndexConfig(kind="ivf_pq", nlist=64, pq_m=8, pq_bits=8, device="cpu")
    in_ram = estimate_index_bytes(config, count, dim)
    on_disk = estimate_index_bytes(config.model_copy(update={"on_disk": True}), count, dim)
    assert in_ram - on_disk == count * (8 + 8)  # per vector: its 8-byte code and its 8-byte id
    build_index(clustered(count, dim), config.model_copy(update={"on_disk": True}), directory=tmp_path / "i")
    assert (tmp_path / "i" / INDEX_IVFDATA_FILE).stat().st_size >= count * (8 + 8)


def test_the_budget_picks_the_most_accurate_index_that_fits() -> None:
    count, dim = 1_000_000, 512
    flat = 4 * count * dim
    assert config_for_memory(count, dim, flat).kind == "flat"
    ivf_flat = estimate_index_bytes(IndexConfig(kind="ivf_flat"), count, dim)
    assert ivf_flat > flat  # the same vectors, plus ids and centroids
    assert config_for_memory(count, dim, ivf_flat, flat_max=count - 1).kind == "ivf_flat"
    assert config_for_memory(count, dim, ivf_flat - 1, flat_max=count - 1).kind == "ivf_pq"
    assert config_for_memory(count, dim, flat - 1).kind == "ivf_pq"
    pq = config_for_memory(count, dim, "500MB")
    assert (pq.kind, pq.pq_m, pq.on_disk) == ("ivf_pq", 128, False)
    assert estimate_index_bytes(pq, count, dim) <= 500_000_000
    # a budget between the dim/8 code in RAM and the dim/8 code on disk: on disk, not a shorter code in RAM
    disk_m = 64
    ram_64 = estimate_index_bytes(IndexConfig(kind="ivf_pq", pq_m=disk_m), count, dim)
    tight = config_for_memory(count, dim, ram_64 - 1)
    assert (tight.kind, tight.pq_m, tight.on_disk) == ("ivf_pq", disk_m, True)
    # without disk, the shorter codes in RAM
    no_disk = config_for_memory(count, dim, ram_64 - 1, allow_on_disk=False)
    assert (no_disk.kind, no_disk.on_disk) == ("ivf_pq", False)
    assert no_disk.pq_m < disk_m
    assert estimate_index_bytes(no_disk, count, dim) < ram_64
    # settings that are not chosen here are kept
    kept = config_for_memory(count, dim, "16GB", base=IndexConfig(seed=7, device="cpu", nprobe=8))
    assert (kept.seed, kept.device, kept.nprobe) == (7, "cpu", 8)


def test_an_impossible_budget_names_the_least_that_works() -> None:
    with pytest.raises(ConfigError, match="raise the memory budget") as error:
        config_for_memory(1_000_000, 512, "1MB")
    least = int(str(error.value).split("needs ")[1].split(" bytes")[0].replace(",", ""))
    assert config_for_memory(1_000_000, 512, least).on_disk
    with pytest.raises(ConfigError, match="or allow an on-disk index"):
        config_for_memory(1_000_000, 512, least, allow_on_disk=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16GB", 16 * 10**9), ("512 MiB", 512 * 2**20), ("1.5g", 1_500_000_000), (4096, 4096), ("2_000 kb", 2 * 10**6)],
)
def test_sizes_are_parsed(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-3GB", "12 parsecs", 0, "1e3XB"])
def test_bad_sizes_are_refused_with_an_example(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. '16GB'"):
        parse_bytes(text)


DISTRIBUTED_BUILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    import seg_retrieval.index as index_module
    from seg_retrieval.index import IndexConfig, build_index

    index_module._ADD_CHUNK = 300
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = sys.argv[1]
    rows = np.load(f"{out}/rows.npy")
    added = []
    config = IndexConfig(kind="ivf_pq", nlist=16, nprobe=16, pq_m=4, pq_bits=6, device="cpu", on_disk=True)
    index = build_index(rows, config, directory=f"{out}/index", progress=lambda done, total: added.append(done))
    _, ids = index.search(np.load(f"{out}/queries.npy"), 10)
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({"ids": ids, "added": added}, handle)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_processes_split_the_parts_of_an_on_disk_build(tmp_path: Path) -> None:
    rows, queries = clustered(1000), clustered(6, seed=3)
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "queries.npy", queries)
    script = tmp_path / "build.py"
    script.write_text(DISTRIBUTED_BUILD)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(port), str(script), str(tmp_path),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, env=environment, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    expected = build_index(rows, PQ).search(queries, 10)[1]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [result["ids"] for result in results] == [expected, expected]  # every rank returns the whole index
    assert results[0]["added"] == [300, 900]  # blocks 0 and 2
    assert results[1]["added"] == [600, 1000]  # blocks 1 and 3
    assert not (tmp_path / "index" / ".parts").exists()
    assert EmbeddingIndex.load(tmp_path / "index").search(queries, 10)[1] == expected


def test_an_hnsw_coarse_quantizer_finds_the_same_lists(tmp_path: Path, small_blocks: None) -> None:
    rows, queries = clustered(1000), clustered(8, seed=4)
    hnsw = PQ.model_copy(update={"coarse_quantizer": "hnsw", "hnsw_m": 8})
    built = build_index(rows, hnsw)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(built.faiss_index).quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat)
    # ef_search left unset: the coarse graph gets 16, not the 128 of an HNSW index
    assert hnsw.ef_search is None
    assert quantizer.hnsw.efSearch == hnsw.search_breadth == 16
    assert built.config.ef_search == 16
    assert IndexConfig(kind="hnsw").search_breadth == 128
    assert hnsw.model_copy(update={"ef_search": 40}).search_breadth == 40
    # 16 centroids and ef_search 16: the graph search is exact, so the lists, and the results, are the flat ones
    expected = build_index(rows, PQ).search(queries, 10)
    assert built.search(queries, 10)[1] == expected[1]
    on_disk = build_index(rows, hnsw.model_copy(update={"on_disk": True}), directory=tmp_path / "disk")
    assert on_disk.search(queries, 10)[1] == expected[1]
    loaded = EmbeddingIndex.load(tmp_path / "disk")
    assert loaded.config.coarse_quantizer == "hnsw"
    assert loaded.search(queries, 10)[1] == expected[1]
    loaded.set_search_params(ef_search=7)
    assert faiss.downcast_index(faiss.extract_index_ivf(loaded.faiss_index).quantizer).hnsw.efSearch == 7
    with pytest.raises(ConfigError, match="HNSW coarse quantiser, which faiss runs on the CPU only"):
        EmbeddingIndex.load(built.save(tmp_path / "in-ram"), device="gpu")
    # the graph's links are counted in the estimate
    flat_coarse = estimate_index_bytes(PQ.model_copy(update={"nlist": 4096}), 10**6, 512)
    assert estimate_index_bytes(hnsw.model_copy(update={"nlist": 4096}), 10**6, 512) == flat_coarse + 4096 * 4 * 2 * 8


def test_hnsw_coarse_quantizer_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValidationError, match="only IVF indexes have a coarse quantiser"):
        IndexConfig(kind="flat", coarse_quantizer="hnsw")
    with pytest.raises(ValidationError, match="faiss runs HNSW on the CPU only"):
        IndexConfig(kind="ivf_pq", coarse_quantizer="hnsw", device="gpu")
    # a memory budget keeps the coarse quantiser of its base for IVF choices and drops it for flat
    base = IndexConfig(kind="ivf_pq", coarse_quantizer="hnsw")
    assert config_for_memory(1000, 64, "1GB", base=base).coarse_quantizer == "flat"
    assert config_for_memory(10**8, 512, "16GB", base=base).coarse_quantizer == "hnsw"


def test_an_imported_ivf_hnsw_index_reports_its_coarse_quantizer() -> None:
    rows = clustered(2000)
    index = faiss.index_factory(16, "IVF16_HNSW8,Flat", faiss.METRIC_INNER_PRODUCT)
    normalised = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    index.train(normalised)
    index.add(normalised)
    imported = EmbeddingIndex.from_faiss(index, [str(row) for row in range(2000)])
    assert (imported.config.kind, imported.config.coarse_quantizer, imported.config.hnsw_m) == ("ivf_flat", "hnsw", 8)
