"""``seg retrieve embed | index | curate`` on a few tiny PNGs with the bundled synthetic CLIP: the store holds what
the CLIP computes for the hand-preprocessed images, the archive is what a brute-force search returns, and bad
input fails with a message that names it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from seg_cli.app import app

CONCEPTS = ("cow", "sky", "boat")


@dataclass(frozen=True)
class Pipeline:
    images: Path
    store: Path
    index: Path
    archive: Path
    outputs: tuple[str, str, str]


def _write_images(folder: Path) -> list[str]:
    """Seven small pictures of assorted sizes and modes, one in a sub-folder; returns their relative paths."""
    rng = np.random.default_rng(0)
    (folder / "more").mkdir(parents=True)
    written = []
    for number in range(6):
        height, width = 40 + 7 * number, 90 - 6 * number
        array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        array[: height // 2] = (60 + 30 * number, 120, 230 - 20 * number)  # a coloured top half
        Image.fromarray(array).save(folder / f"img{number}.png")
        written.append(f"img{number}.png")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8), mode="L").save(folder / "more" / "grey.png")
    rgba = rng.integers(0, 255, (30, 70, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "more" / "alpha.png")
    (folder / "notes.txt").write_text("not an image; ignored")
    return sorted([*written, "more/grey.png", "more/alpha.png"])


def _invoke(*args: str) -> Any:
    result = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, list(args), prog_name="seg")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Run the three commands once for the module (loading the CLIP dominates their time)."""
    root = tmp_path_factory.mktemp("retrieve")
    _write_images(root / "images")
    store, index, archive = root / "store", root / "index", root / "archive.json"
    embedded = _invoke("retrieve", "embed", str(root / "images"), "--out", str(store), "--shard-size", "3")
    assert embedded.exit_code == 0, embedded.output
    indexed = _invoke("retrieve", "index", str(store), "--out", str(index))
    assert indexed.exit_code == 0, indexed.output
    curated = _invoke(
        "retrieve", "curate", "--index", str(index), "--concepts", ",".join(CONCEPTS), "--out", str(archive), "-k", "4"
    )
    assert curated.exit_code == 0, curated.output
    return Pipeline(root / "images", store, index, archive, (embedded.stdout, indexed.stdout, curated.stdout))


@pytest.fixture(scope="module")
def clip() -> Any:
    from seg_cli.segmenters import load_clip_source

    return load_clip_source(None)[0]


def _by_hand(path: Path, clip: Any) -> torch.Tensor:
    """CLIP preprocessing written out: cover 64x64 by bicubic resize of the short side, centre crop, normalise."""
    with Image.open(path) as opened:
        picture = opened.convert("RGBA")
    flat = Image.new("RGBA", picture.size, (255, 255, 255, 255))
    picture = Image.alpha_composite(flat, picture).convert("RGB")
    short = min(picture.size)
    size = (round(picture.width * 64 / short), round(picture.height * 64 / short))
    picture = picture.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - 64) // 2, (size[1] - 64) // 2
    pixels = np.asarray(picture.crop((left, top, left + 64, top + 64)), dtype=np.float32) / 255.0
    mean, std = np.array(clip.normalization.mean), np.array(clip.normalization.std)
    return torch.from_numpy(((pixels - mean) / std).astype(np.float32)).permute(2, 0, 1)


def test_embed_writes_the_clip_embeddings_of_every_image(pipeline: Pipeline, clip: Any) -> None:
    from seg_retrieval.store import EmbeddingStore

    assert "embedded 8 images with maskclip-vit-tiny-p8.synthetic (128-d, 3 shards)" in " ".join(
        pipeline.outputs[0].split()
    )
    store = EmbeddingStore.open(pipeline.store)
    assert store.ids == tuple(sorted(["more/alpha.png", "more/grey.png", *(f"img{n}.png" for n in range(6))]))
    assert store.encoder == "maskclip-vit-tiny-p8.synthetic"
    paths = [pipeline.images / image_id for image_id in store.ids]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(clip.encode_image(torch.stack([_by_hand(p, clip) for p in paths])))
    np.testing.assert_allclose(store.embeddings(range(len(store))).numpy(), expected.numpy(), atol=3e-3)


def test_curate_returns_the_brute_force_top_k_of_the_ensembled_text(pipeline: Pipeline, clip: Any) -> None:
    from seg_core import resolve_templates
    from seg_models.clip import ensemble_text_embeddings
    from seg_retrieval.curate import load_archive
    from seg_retrieval.store import EmbeddingStore

    archive = load_archive(pipeline.archive)
    assert archive.concept_names == CONCEPTS
    assert (archive.k, archive.encoder, archive.templates) == (4, "maskclip-vit-tiny-p8.synthetic", "imagenet85")
    assert archive.store == str(pipeline.store.resolve())
    store = EmbeddingStore.open(pipeline.store)
    with torch.no_grad():
        text = ensemble_text_embeddings(
            clip.encode_text, [[name] for name in CONCEPTS], resolve_templates("imagenet85")
        )
    similarity = text @ store.embeddings(range(len(store))).T  # [C, N] cosines (both unit norm)
    for row, name in enumerate(CONCEPTS):
        best = torch.argsort(similarity[row], descending=True)[:4].tolist()
        assert archive[name].image_ids == tuple(store.ids[i] for i in best)
        np.testing.assert_allclose([item.score for item in archive[name].items], similarity[row, best], atol=2e-3)
    assert "cow: 4 images, cosine" in pipeline.outputs[2]


def test_index_kinds_and_knobs(pipeline: Pipeline, tmp_path: Path) -> None:
    from seg_retrieval.index import EmbeddingIndex

    flat = EmbeddingIndex.load(pipeline.index)
    assert (flat.config.kind, len(flat), flat.encoder) == ("flat", 8, "maskclip-vit-tiny-p8.synthetic")
    result = _invoke(
        "retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "ivf"), "--kind", "IVF_FLAT", "--nlist", "2",
        "--nprobe", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ivf_flat, nlist=2, nprobe=2" in " ".join(result.stdout.split())
    ivf = EmbeddingIndex.load(tmp_path / "ivf")
    queries = flat.vectors(["img3.png", "more/grey.png"])
    assert ivf.search(queries, 5)[1] == flat.search(queries, 5)[1]  # nprobe = nlist is exhaustive


def test_on_disk_index_and_memory_budget(pipeline: Pipeline, tmp_path: Path, run_seg: Callable[..., Any]) -> None:
    from seg_retrieval.index import EmbeddingIndex, IndexConfig, build_index
    from seg_retrieval.store import EmbeddingStore

    knobs = ["--kind", "ivf_pq", "--nlist", "2", "--nprobe", "2", "--pq-m", "4", "--pq-bits", "2"]
    result = _invoke("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "disk"), *knobs, "--on-disk")
    assert result.exit_code == 0, result.output
    assert "pq_m=4x2, lists on disk" in " ".join(result.stdout.split())
    assert sorted(path.name for path in (tmp_path / "disk").iterdir()) == [
        "ids.json",
        "index.faiss",
        "index.ivfdata",
        "index.json",
    ]
    on_disk = EmbeddingIndex.load(tmp_path / "disk")
    assert on_disk.config.on_disk
    result = _invoke("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "hnsw"), *knobs, "--coarse",
                     "hnsw")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pq_m=4x2, HNSW coarse quantiser" in " ".join(result.stdout.split())
    coarse = EmbeddingIndex.load(tmp_path / "hnsw")
    assert coarse.config.coarse_quantizer == "hnsw"
    assert coarse.config.ef_search == 16  # no --ef-search: the coarse graph's default, not an HNSW index's 128
    config = IndexConfig(kind="ivf_pq", nlist=2, nprobe=2, pq_m=4, pq_bits=2, device="cpu")
    in_memory = build_index(EmbeddingStore.open(pipeline.store), config)
    queries = in_memory.vectors(["img1.png", "more/alpha.png"])
    assert on_disk.search(queries, 6)[1] == in_memory.search(queries, 6)[1]

    result = _invoke("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "budget"), "--memory-budget",
                     "1MB")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert EmbeddingIndex.load(tmp_path / "budget").config.kind == "flat"  # 8 x 128 floats fit: exact search
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "b2"), "--memory-budget", "1MB",
                     "--kind", "flat", "--on-disk")  # fmt: skip
    assert result.exit_code == 1
    assert "--memory-budget chooses --kind, --on-disk" in result.text
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "b3"), "--memory-budget", "100")
    assert result.exit_code == 1
    assert "no index over 8 vectors of dimension 128 fits in 100 bytes" in result.text
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "b4"), "--memory-budget", "lots")
    assert result.exit_code == 1
    assert "memory size 'lots' is not a positive size" in result.text


def test_index_rerank_is_saved_and_re_scores_exactly(
    pipeline: Pipeline, tmp_path: Path, run_seg: Callable[..., Any]
) -> None:
    from seg_retrieval.index import EmbeddingIndex

    knobs = ["--kind", "ivf_pq", "--nlist", "2", "--nprobe", "2", "--pq-m", "4", "--pq-bits", "2"]
    result = _invoke("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "pq"), *knobs, "--rerank", "8")
    assert result.exit_code == 0, result.output
    assert "pq_m=4x2, rerank=8" in " ".join(result.stdout.split())
    reranked = EmbeddingIndex.load(tmp_path / "pq")
    assert reranked.config.rerank == 8
    flat = EmbeddingIndex.load(pipeline.index)
    queries = flat.vectors(["img2.png", "more/alpha.png"])
    scores, ids = reranked.search(queries, 5)  # all 8 images re-scored from the store: the exact result
    expected_scores, expected_ids = flat.search(queries, 5)
    assert ids == expected_ids
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), atol=1e-5)
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "bad"), *knobs, "--rerank", "0")
    assert result.exit_code == 2
    assert "0 is too small; use an integer >= 1" in result.text
    assert not (tmp_path / "bad").exists()


def test_impossible_index_settings_fail_naming_the_field(
    pipeline: Pipeline, tmp_path: Path, run_seg: Callable[..., Any]
) -> None:
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "i"), "--kind", "ivf_flat",
                     "--nlist", "20", "--nprobe", "4")  # fmt: skip
    assert result.exit_code == 1
    assert "IndexConfig.nlist=20 exceeds the 8 vectors" in result.text
    assert not (tmp_path / "i").exists()
    result = run_seg("retrieve", "index", str(pipeline.store), "--out", str(tmp_path / "i"), "--kind", "ivf_pq",
                     "--nlist", "2", "--nprobe", "2", "--pq-m", "5")  # fmt: skip
    assert result.exit_code == 1
    assert "pq_m=5 does not divide the dimension 128" in result.text


def test_index_refuses_a_folder_that_is_not_a_store(tmp_path: Path, run_seg: Callable[..., Any]) -> None:
    result = run_seg("retrieve", "index", str(tmp_path), "--out", str(tmp_path / "i"))
    assert result.exit_code == 1
    assert "is not a complete embedding store: manifest.json is missing" in result.text


def test_curate_errors(pipeline: Pipeline, tmp_path: Path, run_seg: Callable[..., Any]) -> None:
    base = ["retrieve", "curate", "--index", str(pipeline.index), "--concepts", "cow"]
    result = run_seg(*base, "--out", str(tmp_path / "a.json"), "-k", "9")
    assert result.exit_code == 1
    assert "-k 9 exceeds the 8 images in the index; use -k <= 8" in result.text
    assert not (tmp_path / "a.json").exists()
    result = run_seg(*base, "--out", str(tmp_path / "a.yaml"))
    assert result.exit_code == 1
    assert "--out must be a .json file" in result.text
    result = run_seg(*base, "--out", str(tmp_path / "a.json"), "--templates", "imagenet99")
    assert result.exit_code == 2
    assert "'imagenet99' is not a template set" in result.text
    result = run_seg("retrieve", "curate", "--index", str(pipeline.store), "--concepts", "cow", "--out", "x.json")
    assert result.exit_code == 1
    assert "index.json is missing" in result.text


def test_curate_with_dedup_keeps_distinct_images(pipeline: Pipeline, tmp_path: Path) -> None:
    out = tmp_path / "dedup.json"
    result = _invoke("retrieve", "curate", "--index", str(pipeline.index), "--concepts", "sky", "--out", str(out),
                     "-k", "3", "--dedup", "0.9999")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["concepts"][0]["items"]) == 3  # no two pictures are copies


def test_embed_rerun_resumes_and_other_arguments_are_refused(pipeline: Pipeline, run_seg: Callable[..., Any]) -> None:
    again = run_seg("retrieve", "embed", str(pipeline.images), "--out", str(pipeline.store), "--shard-size", "3")
    assert again.exit_code == 0, again.text
    other = run_seg("retrieve", "embed", str(pipeline.images), "--out", str(pipeline.store), "--shard-size", "4")
    assert other.exit_code == 1
    assert "different arguments (shard_size: 3 != 4" in other.text


def test_embed_errors(tmp_path: Path, run_seg: Callable[..., Any]) -> None:
    (tmp_path / "empty").mkdir()
    result = run_seg("retrieve", "embed", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "no images (.png" in result.text
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_text("not a picture")
    result = run_seg("retrieve", "embed", str(tmp_path / "bad"), "--out", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "broken.png as an image" in result.text
