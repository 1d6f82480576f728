"""Retrieval assets (an embedding store and its faiss index) as a Hub dataset repository, and back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

import seg_zoo
from seg_core import ConfigError
from seg_retrieval.index import EmbeddingIndex, IndexConfig, build_index
from seg_retrieval.store import EmbeddingStore, embed_collection
from seg_zoo.testing import LocalHub

DIM = 32  # shards of 8 x 32 fp16 rows are 640 bytes: clear of olah's 121-149-byte blind spot


class _Encoder:
    """Flattened pixels through a fixed random matrix (only what embed_collection uses)."""

    name = "test-encoder"
    embed_dim = DIM

    def __init__(self) -> None:
        self.weight = torch.randn(3 * 4 * 4, DIM, generator=torch.Generator().manual_seed(1))

    def encode_image(self, images: Tensor) -> Tensor:
        return images.flatten(1) @ self.weight

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def dense_features(self, images: Tensor) -> Tensor:
        raise NotImplementedError


class _Pictures:
    def __init__(self, count: int) -> None:
        self.images = torch.randn(count, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        return f"pics/{index:03d}.png", self.images[index]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("assets")
    store = embed_collection(_Encoder(), _Pictures(20), root / "store", shard_size=8, progress=False)
    build_index(store, IndexConfig(kind="flat")).save(root / "index")
    return root / "store", root / "index"


def _queries() -> Tensor:
    return torch.nn.functional.normalize(torch.randn(3, DIM, generator=torch.Generator().manual_seed(5)), dim=-1)


def test_save_and_open_keep_the_store_and_a_working_index(built: tuple[Path, Path], tmp_path: Path) -> None:
    store, index = built
    folder = seg_zoo.save_retrieval_assets(store, tmp_path / "assets", index=index)
    record = json.loads((folder / "retrieval.json").read_text())
    assert (record["encoder"], record["count"], record["dim"], record["index_kind"]) == (
        "test-encoder",
        20,
        DIM,
        "flat",
    )
    assert "store/manifest.json" in record["files"]
    assert "index/index.faiss" in record["files"]
    opened = seg_zoo.pull_retrieval_assets(folder)
    again = EmbeddingStore.open(opened.store)
    assert again.ids == EmbeddingStore.open(store).ids
    assert torch.equal(again.embeddings(range(20)), EmbeddingStore.open(store).embeddings(range(20)))
    assert opened.index is not None
    moved = EmbeddingIndex.load(opened.index)
    original = EmbeddingIndex.load(index)
    (moved_scores, moved_ids), (scores, ids) = moved.search(_queries(), 5), original.search(_queries(), 5)
    assert moved_ids == ids
    assert torch.equal(moved_scores, scores)
    # The copy's index finds its store next to it (exact vectors), not at the builder's path.
    assert moved.store == str((opened.index / "../store").resolve())
    assert torch.equal(moved.vectors(["pics/003.png"]), original.vectors(["pics/003.png"]))


def test_tampered_files_and_foreign_indices_are_refused(built: tuple[Path, Path], tmp_path: Path) -> None:
    store, index = built
    folder = seg_zoo.save_retrieval_assets(store, tmp_path / "assets", index=index)
    shard = next((folder / "store").glob("shard-*.npy"))
    shard.write_bytes(shard.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ConfigError, match=r"shard-.*sha256/size differs"):
        seg_zoo.pull_retrieval_assets(folder)
    with pytest.raises(ConfigError, match="exists"):
        seg_zoo.save_retrieval_assets(store, folder)
    other = embed_collection(_Encoder(), _Pictures(12), tmp_path / "other", shard_size=8, progress=False)
    with pytest.raises(ConfigError, match=r"indexes 20 images.*holds 12"):
        seg_zoo.save_retrieval_assets(other.root, tmp_path / "x", index=index)


@pytest.mark.slow
def test_push_then_pull_by_tag_from_a_dataset_repo(built: tuple[Path, Path], hub: LocalHub, tmp_path: Path) -> None:
    store, index = built
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import seg_zoo
            commit = seg_zoo.push_retrieval_assets(sys.argv[1], "testorg/embeddings", index=sys.argv[2], tag="v1")
            pulled = seg_zoo.pull_retrieval_assets("hf-hub:testorg/embeddings@v1", sys.argv[3])
            print(json.dumps({"commit": commit, "store": str(pulled.store), "index": str(pulled.index)}))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script), str(store), str(index), str(tmp_path / "pulled")],
        env=hub.env(cache=tmp_path / "cache"),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    assert (hub.repo_path("testorg/embeddings", "dataset") / "retrieval.json").is_file()
    assert EmbeddingStore.open(paths["store"]).ids == EmbeddingStore.open(store).ids
    moved, original = EmbeddingIndex.load(paths["index"]), EmbeddingIndex.load(index)
    assert moved.search(_queries(), 5)[1] == original.search(_queries(), 5)[1]
