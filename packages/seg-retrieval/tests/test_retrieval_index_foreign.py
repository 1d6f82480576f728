"""faiss indexes built elsewhere (plain faiss here, as autofaiss / clip-retrieval build LAION's):
EmbeddingIndex.from_faiss against faiss searched directly, the config read off each index, search knobs, save/load
(on-disk lists under another name included), the refusals, and open_clip_retrieval_index + curate_archive on a
clip-retrieval folder."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import torch
from faiss.contrib.ondisk import merge_ondisk

from seg_core import ConfigError
from seg_retrieval.curate import curate_archive
from seg_retrieval.index import (
    INDEX_FILE,
    INDEX_IVFDATA_FILE,
    EmbeddingIndex,
    IndexConfig,
    build_index,
    read_faiss_index,
)

COUNT, DIM, QUERIES, K = 2000, 32, 6, 10
IP, L2 = faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2


def unit(rows: np.ndarray) -> np.ndarray:
    result: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(rows.dtype)
    return result


@dataclass(frozen=True)
class Data:
    base: np.ndarray  # [COUNT, DIM] float32 unit rows
    queries: np.ndarray  # [QUERIES, DIM] float32, not unit: from_faiss's search normalises them
    ids: list[str]


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((COUNT, DIM)).astype(np.float32))
    queries = rng.standard_normal((QUERIES, DIM)).astype(np.float32) * 3.0
    return Data(base, queries, [f"laion/{row:05d}" for row in range(COUNT)])


def plain_faiss(factory: str, metric: int, base: np.ndarray) -> Any:
    """An index made by plain faiss (not seg), with faster training knobs that leave its structure as the factory's."""
    index = faiss.index_factory(DIM, factory, metric)
    top: Any = faiss.downcast_index(index)
    if hasattr(top, "chain"):  # an IndexPreTransform: OPQ trains 50 iterations by default
        chain: Any = top.chain
        opq: Any = faiss.downcast_VectorTransform(chain.at(0))
        opq.niter = 4
    ivf: Any = None
    with contextlib.suppress(RuntimeError):
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if hasattr(ivf, "do_polysemous_training"):  # IVF-PQ: the factory's default only serves Hamming filtering
        ivf.do_polysemous_training = False
    index.train(base)
    index.add(base)
    return index


@dataclass(frozen=True)
class Case:
    path: Path  # the index file as written by "the other tool"
    kind: str
    nlist: int | None
    pq_m: int | None
    on_disk: bool
    metric: str
    hnsw_m: int | None = None
    flags: int = 0  # how plain faiss reads it back (the reference)


CASES = ("flat_ip", "ivf_flat", "opq_ivf_pq", "ivf_hnsw_pq", "hnsw", "flat_l2", "ondisk")


@pytest.fixture(scope="module")
def cases(data: Data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("foreign")
    specs = {
        "flat_ip": ("Flat", IP, "flat", None, None, None),
        "ivf_flat": ("IVF32,Flat", IP, "ivf_flat", 32, None, None),
        "opq_ivf_pq": ("OPQ8_32,IVF32,PQ8x4", IP, "ivf_pq", 32, 8, None),
        "ivf_hnsw_pq": ("IVF32_HNSW8,PQ8x4", IP, "ivf_pq", 32, 8, 8),
        "hnsw": ("HNSW8", IP, "hnsw", None, None, 8),
        "flat_l2": ("Flat", L2, "flat", None, None, None),
    }
    made: dict[str, Case] = {}
    for name, (factory, metric, kind, nlist, pq_m, hnsw_m) in specs.items():
        path = root / name / "knn.index"
        path.parent.mkdir()
        faiss.write_index(plain_faiss(factory, metric, data.base), str(path))
        on_disk = kind in {"ivf_flat", "ivf_pq"}  # in-RAM lists, memory-mapped from the file by from_faiss
        made[name] = Case(path, kind, nlist, pq_m, on_disk, "l2" if metric == L2 else "inner_product", hnsw_m)

    # faiss's on-disk recipe (what autofaiss does for LAION-5B): parts merged into merged_index.ivfdata next to
    # populated.index, then the folder moved, so only IO_FLAG_ONDISK_SAME_DIR finds the lists again.
    built = root / "built"
    built.mkdir()
    trained: Any = faiss.index_factory(DIM, "IVF32,PQ8x4", IP)
    trained.do_polysemous_training = False
    trained.train(data.base)
    parts = []
    for number, start in enumerate(range(0, COUNT, 800)):
        part = faiss.clone_index(trained)
        block = data.base[start : start + 800]
        part.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        parts.append(str(built / f"part{number}.index"))
        faiss.write_index(part, parts[-1])
    merge_ondisk(trained, parts, str(built / "merged_index.ivfdata"))
    faiss.write_index(trained, str(built / "populated.index"))
    moved = root / "ondisk"
    built.rename(moved)
    made["ondisk"] = Case(
        moved / "populated.index", "ivf_pq", 32, 8, True, "inner_product", flags=faiss.IO_FLAG_ONDISK_SAME_DIR
    )
    return made


def reference(case: Case, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """faiss itself on the same file: (distances, rows)."""
    index = faiss.read_index(str(case.path), case.flags)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    distances, rows = index.search(unit(queries), k)
    return distances, rows


def lists_file(index: Any) -> Path:
    """The file an IVF index's on-disk lists name."""
    invlists: Any = faiss.extract_index_ivf(index).invlists
    lists: Any = faiss.downcast_InvertedLists(invlists)
    return Path(lists.filename)


def scores_of(case: Case, distances: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 - distances / 2.0 if case.metric == "l2" else distances
    return result


@pytest.mark.parametrize("name", CASES)
def test_same_neighbours_and_scores_as_faiss(name: str, cases: dict[str, Case], data: Data) -> None:
    case = cases[name]
    index = EmbeddingIndex.from_faiss(case.path, data.ids, encoder="open_clip:ViT-B-32/laion2b")
    distances, rows = reference(case, data.queries, K)
    scores, found = index.search(torch.from_numpy(data.queries), K)
    assert found == [[data.ids[row] for row in query] for query in rows.tolist()]
    np.testing.assert_allclose(scores.numpy(), scores_of(case, distances), rtol=0, atol=1e-6)
    assert index.encoder == "open_clip:ViT-B-32/laion2b"
    assert index.device == "cpu"


@pytest.mark.parametrize("name", CASES)
def test_config_is_read_off_the_index(name: str, cases: dict[str, Case], data: Data) -> None:
    case = cases[name]
    config = EmbeddingIndex.from_faiss(case.path, data.ids).config
    assert (config.kind, config.nlist, config.on_disk, config.metric) == (
        case.kind,
        case.nlist,
        case.on_disk,
        case.metric,
    )
    if case.pq_m is not None:
        assert (config.pq_m, config.pq_bits) == (case.pq_m, 4)
    if case.hnsw_m is not None:
        assert config.hnsw_m == case.hnsw_m
    if case.nlist is not None:
        assert config.nprobe == 1  # faiss's default, as written
    assert config.factory is not None
    assert config.device == "cpu"


def test_factory_strings_and_lists_files(cases: dict[str, Case], data: Data) -> None:
    opq = EmbeddingIndex.from_faiss(cases["opq_ivf_pq"].path, data.ids)
    # a saved OPQ reads back as a plain LinearTransform: named by its dimensions
    assert opq.config.factory == "LinearTransform32_32,IVF32,PQ8x4"
    assert isinstance(faiss.downcast_index(opq.faiss_index), faiss.IndexPreTransform)
    assert EmbeddingIndex.from_faiss(cases["ivf_hnsw_pq"].path, data.ids).config.factory == "IVF32_HNSW8,PQ8x4"
    assert EmbeddingIndex.from_faiss(cases["flat_l2"].path, data.ids).config.factory == "Flat"
    ivf = EmbeddingIndex.from_faiss(cases["ivf_flat"].path, data.ids)
    assert ivf.ivfdata == cases["ivf_flat"].path.resolve()  # lists memory-mapped from the index file itself
    ondisk = EmbeddingIndex.from_faiss(cases["ondisk"].path, data.ids)
    assert ondisk.ivfdata == (cases["ondisk"].path.parent / "merged_index.ivfdata").resolve()
    in_ram = EmbeddingIndex.from_faiss(cases["ivf_flat"].path, data.ids, mmap=False)
    assert (in_ram.config.on_disk, in_ram.ivfdata) == (False, None)


def test_flat_scores_are_exact_cosines(cases: dict[str, Case], data: Data) -> None:
    cosines = unit(data.queries.astype(np.float64)) @ data.base.astype(np.float64).T
    exact = np.argsort(-cosines, axis=1, kind="stable")[:, :K]
    for name in ("flat_ip", "flat_l2"):
        scores, found = EmbeddingIndex.from_faiss(cases[name].path, data.ids).search(data.queries, K)
        assert found == [[data.ids[row] for row in query] for query in exact.tolist()]
        np.testing.assert_allclose(scores.numpy(), np.take_along_axis(cosines, exact, axis=1), atol=1e-5)


@pytest.mark.parametrize("name", ["ivf_flat", "opq_ivf_pq", "ivf_hnsw_pq", "ondisk"])
def test_nprobe_override_takes_effect(name: str, cases: dict[str, Case], data: Data) -> None:
    case = cases[name]
    index = EmbeddingIndex.from_faiss(case.path, data.ids, nprobe=5)
    assert faiss.extract_index_ivf(index.faiss_index).nprobe == 5
    assert index.config.nprobe == 5
    distances, rows = reference(case, data.queries, K, nprobe=5)
    narrow, _ = reference(case, data.queries, K, nprobe=1)
    assert not np.array_equal(distances, narrow)  # the knob changes faiss's answer here, so the check below bites
    scores, found = index.search(data.queries, K)
    assert found == [[data.ids[row] for row in query] for query in rows.tolist()]
    np.testing.assert_allclose(scores.numpy(), scores_of(case, distances), atol=1e-6)
    with pytest.raises(ConfigError, match=r"nprobe=33 must be in \[1, nlist=32\]"):
        EmbeddingIndex.from_faiss(case.path, data.ids, nprobe=33)


def test_ef_search_sets_the_graph_or_the_hnsw_quantiser(cases: dict[str, Case], data: Data) -> None:
    hnsw = EmbeddingIndex.from_faiss(cases["hnsw"].path, data.ids)
    written: Any = faiss.read_index(str(cases["hnsw"].path))
    assert hnsw.config.ef_search == written.hnsw.efSearch == 16
    hnsw = EmbeddingIndex.from_faiss(cases["hnsw"].path, data.ids, ef_search=40)
    assert hnsw.faiss_index.hnsw.efSearch == 40
    ivf = EmbeddingIndex.from_faiss(cases["ivf_hnsw_pq"].path, data.ids, ef_search=24)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(ivf.faiss_index).quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat)
    assert quantizer.hnsw.efSearch == 24
    assert ivf.config.ef_search == 24


@pytest.mark.parametrize("name", CASES)
def test_save_and_load_give_the_same_results(name: str, cases: dict[str, Case], data: Data, tmp_path: Path) -> None:
    case = cases[name]
    index = EmbeddingIndex.from_faiss(case.path, data.ids, nprobe=3 if case.nlist else None)
    scores, found = index.search(data.queries, K)
    index.save(tmp_path / "saved")
    if case.on_disk:  # the lists were copied under seg's name, and the saved index names that copy
        assert (tmp_path / "saved" / INDEX_IVFDATA_FILE).is_file()
    loaded = EmbeddingIndex.load(tmp_path / "saved")
    assert loaded.config == index.config
    assert loaded.ids == index.ids
    assert type(faiss.downcast_index(loaded.faiss_index)) is type(faiss.downcast_index(index.faiss_index))
    again, found_again = loaded.search(data.queries, K)
    assert found_again == found
    np.testing.assert_allclose(again.numpy(), scores.numpy(), atol=1e-6)


def test_saved_on_disk_index_no_longer_needs_the_original_lists(
    cases: dict[str, Case], data: Data, tmp_path: Path
) -> None:
    source = tmp_path / "published"
    shutil.copytree(cases["ondisk"].path.parent, source)
    index = EmbeddingIndex.from_faiss(source / "populated.index", data.ids, nprobe=4)
    scores, found = index.search(data.queries, K)
    index.save(tmp_path / "copy")
    shutil.rmtree(source)  # merged_index.ivfdata is gone: the copy must use its own index.ivfdata
    copy = tmp_path / "moved-copy"
    (tmp_path / "copy").rename(copy)
    raw = faiss.read_index(str(copy / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
    assert lists_file(raw).name == INDEX_IVFDATA_FILE
    loaded = EmbeddingIndex.load(copy)
    again, found_again = loaded.search(data.queries, K)
    assert found_again == found
    np.testing.assert_allclose(again.numpy(), scores.numpy(), atol=1e-6)
    # the imported index itself still names its own lists file after saving
    assert lists_file(index.faiss_index).name == "merged_index.ivfdata"


def test_vectors_by_reconstruction_or_from_the_store(cases: dict[str, Case], data: Data) -> None:
    flat = EmbeddingIndex.from_faiss(cases["flat_ip"].path, data.ids)
    np.testing.assert_allclose(flat.vectors(data.ids[5:8]).numpy(), data.base[5:8], atol=1e-6)
    opq = EmbeddingIndex.from_faiss(cases["opq_ivf_pq"].path, data.ids)  # through OPQ, the PQ approximation
    approx = opq.vectors(data.ids[:50]).numpy()
    assert np.mean(np.sum(approx * data.base[:50], axis=1)) > 0.5


def test_index_given_as_an_object(data: Data) -> None:
    raw = plain_faiss("IVF16,Flat", IP, data.base)
    raw.nprobe = 2
    index = EmbeddingIndex.from_faiss(raw, data.ids)
    assert (index.config.kind, index.config.nlist, index.config.nprobe, index.config.on_disk) == (
        "ivf_flat",
        16,
        2,
        False,
    )
    identity = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    identity.add_with_ids(data.base, np.arange(COUNT, dtype=np.int64))
    mapped = EmbeddingIndex.from_faiss(identity, data.ids)
    assert (mapped.config.kind, mapped.config.factory) == ("flat", "IDMap,Flat")
    assert mapped.search(data.base[7:8], 1)[1] == [[data.ids[7]]]


def test_refusals(cases: dict[str, Case], data: Data, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"1999 ids for {cases['flat_ip'].path}, which holds 2000 vectors"):
        EmbeddingIndex.from_faiss(cases["flat_ip"].path, data.ids[:-1])
    binary = faiss.IndexBinaryFlat(DIM)
    with pytest.raises(ConfigError, match="IndexBinaryFlat is a binary faiss index"):
        EmbeddingIndex.from_faiss(binary, [])  # type: ignore[arg-type]
    faiss.write_index_binary(binary, str(tmp_path / "binary.index"))
    with pytest.raises(ConfigError, match=r"binary\.index is a binary faiss index"):
        EmbeddingIndex.from_faiss(tmp_path / "binary.index", [])
    l1 = faiss.IndexFlat(DIM, faiss.METRIC_L1)
    l1.add(data.base[:10])
    with pytest.raises(ConfigError, match=r"uses metric L1; .* only inner product .* and L2"):
        EmbeddingIndex.from_faiss(l1, data.ids[:10])
    lsh = faiss.IndexLSH(DIM, 64)
    lsh.add(data.base[:10])
    with pytest.raises(ConfigError, match=r"\(IndexLSH\) is not a kind seg can search; supported: Flat"):
        EmbeddingIndex.from_faiss(lsh, data.ids[:10])
    scalar = faiss.index_factory(DIM, "IVF4,SQ8", IP)
    scalar.train(data.base[:200])
    scalar.add(data.base[:200])
    with pytest.raises(ConfigError, match=r"IVF4,SQ8 \(IndexIVFScalarQuantizer\) is not a kind"):
        EmbeddingIndex.from_faiss(scalar, data.ids[:200])
    shifted = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    shifted.add_with_ids(data.base[:10], np.arange(100, 110, dtype=np.int64))
    with pytest.raises(ConfigError, match="maps its rows to arbitrary ids"):
        EmbeddingIndex.from_faiss(shifted, data.ids[:10])
    raw = faiss.IndexFlatL2(DIM)
    raw.add(data.base[:10] * np.float32(2.0))
    with pytest.raises(ConfigError, match=r"has norm 2\.0000; .* L2-normalised"):
        EmbeddingIndex.from_faiss(raw, data.ids[:10])
    with pytest.raises(ConfigError, match="does not exist"):
        EmbeddingIndex.from_faiss(tmp_path / "missing.index", [])
    with pytest.raises(TypeError, match=r"faiss index file or a faiss\.Index"):
        EmbeddingIndex.from_faiss(np.zeros((3, DIM)), ["a", "b", "c"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"metric='l2'.* use metric='inner_product'"):
        build_index(data.base[:10], IndexConfig(metric="l2"))


def test_ivf_ids_that_are_not_row_numbers_fail_at_search(data: Data) -> None:
    raw = faiss.index_factory(DIM, "IVF4,Flat", IP)
    raw.train(data.base[:200])
    raw.add_with_ids(data.base[:200], np.arange(200, dtype=np.int64) * 3)
    index = EmbeddingIndex.from_faiss(raw, data.ids[:200], nprobe=4)
    with pytest.raises(RuntimeError, match="ids are not row numbers"):
        index.search(data.base[199:200], 5)


def test_missing_lists_file_is_a_clear_error(cases: dict[str, Case], tmp_path: Path) -> None:
    lonely = tmp_path / "populated.index"
    shutil.copyfile(cases["ondisk"].path, lonely)
    with pytest.raises(ConfigError, match=r"keeps its inverted lists in merged_index.ivfdata, which is not next to"):
        read_faiss_index(lonely)
    with pytest.raises(ConfigError, match=r"faiss cannot read .*populated.index .* needs its .ivfdata file"):
        read_faiss_index(lonely, mmap=False)


# ---------------------------------------------------------------------------------------------------------------
# clip-retrieval folder + its published index
# ---------------------------------------------------------------------------------------------------------------


def test_open_clip_retrieval_index_and_curate(data: Data, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.parquet", reason="needs pyarrow (pip install 'seg-retrieval[laion]')")
    from seg_retrieval.laion import ClipRetrievalStore, open_clip_retrieval_index, write_clip_retrieval_store

    count = 60
    rows, ids = data.base[:count], [f"https://example.org/{row}.jpg" for row in range(count)]
    folder = write_clip_retrieval_store(
        rows, ids, tmp_path / "laion-mini", shard_size=25, id_column="url", encoder="open_clip:ViT-B-32/openai"
    )
    stored = ClipRetrievalStore.open(folder).embeddings(list(range(count))).numpy()  # float16-rounded, renormalised
    knn = faiss.IndexFlatIP(DIM)
    knn.add(rows)  # built from the float32 embeddings, before the folder's float16 rounding
    faiss.write_index(knn, str(tmp_path / "knn.index"))

    index = open_clip_retrieval_index(folder, tmp_path / "knn.index")
    assert index.ids == tuple(ids)
    assert index.encoder == "open_clip:ViT-B-32/openai"
    assert index.config.kind == "flat"
    assert index.store == str(folder.resolve())
    vectors = index.vectors(ids[3:5]).numpy()  # read from the folder (float16-rounded), not reconstructed
    np.testing.assert_allclose(vectors, stored[3:5], rtol=0, atol=1e-7)
    assert np.abs(vectors - rows[3:5]).max() > 1e-5
    index.save(tmp_path / "saved-index")
    reloaded = EmbeddingIndex.load(tmp_path / "saved-index")  # reopens the folder named in index.json
    np.testing.assert_allclose(reloaded.vectors(ids[3:5]).numpy(), stored[3:5], rtol=0, atol=1e-7)

    rng = np.random.default_rng(1)
    chosen = [11, 42]
    text = torch.from_numpy(rows[chosen] + 0.05 * rng.standard_normal((2, DIM)).astype(np.float32))
    archive = curate_archive(index, ["cat", "dog"], text, 4, encoder=index.encoder or "", store=str(folder))
    similarity = unit(text.numpy().astype(np.float64)) @ rows.astype(np.float64).T
    for concept, scores in zip(archive.concepts, similarity, strict=True):
        brute = np.argsort(-scores, kind="stable")[:4]
        assert list(concept.image_ids) == [ids[int(row)] for row in brute]
        np.testing.assert_allclose([item.score for item in concept.items], scores[brute], atol=1e-5)
    assert [concept.image_ids[0] for concept in archive.concepts] == [ids[11], ids[42]]
    deduplicated = curate_archive(  # reads the candidates' vectors from the folder; random rows are no duplicates
        index, ["cat", "dog"], text, 4, encoder=index.encoder or "", store=str(folder), dedup_threshold=0.99
    )
    assert [c.image_ids for c in deduplicated.concepts] == [c.image_ids for c in archive.concepts]

    short = faiss.IndexFlatIP(DIM)
    short.add(stored[:-1])
    faiss.write_index(short, str(tmp_path / "short.index"))
    with pytest.raises(
        ConfigError, match=r"short.index holds 59 vectors but the clip-retrieval folder .*laion-mini has 60"
    ):
        open_clip_retrieval_index(folder, tmp_path / "short.index")
