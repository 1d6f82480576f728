"""Embedding stores: layout, values against a naive computation, resume after a kill, refusal of mixed arguments,
two ranks, and clear errors for broken stores."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import ConfigError, ImageTextEncoder
from seg_retrieval.store import (
    MANIFEST_FILE,
    PLAN_FILE,
    EmbeddingStore,
    ImageCollection,
    StoreManifest,
    _embed_on_rank,
    embed_collection,
    shard_assignment,
)

DIM = 6


class LinearEncoder:
    """``encode_image`` = flattened pixels @ a fixed matrix; records the batches it saw."""

    def __init__(self, name: str = "linear-test", fail_after: int | None = None) -> None:
        self.name = name
        self.weight = torch.randn(3 * 4 * 4, DIM, generator=torch.Generator().manual_seed(1))
        self.batches: list[int] = []
        self.fail_after = fail_after

    @property
    def embed_dim(self) -> int:
        return DIM

    def encode_image(self, images: Tensor) -> Tensor:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("killed")
        self.batches.append(images.shape[0])
        return images.flatten(1) @ self.weight * 3.0  # not unit norm: the store must normalise

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def dense_features(self, images: Tensor) -> Tensor:
        raise NotImplementedError


class Pictures:
    """``count`` random 3x4x4 images with ids ``pics/007.png``."""

    def __init__(self, count: int, seed: int = 0) -> None:
        self.images = torch.randn(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        self.requested: list[int] = []

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        self.requested.append(index)
        return f"pics/{index:03d}.png", self.images[index]


def naive_rows(collection: Pictures, encoder: LinearEncoder) -> np.ndarray:
    """The expected stored rows: normalise every embedding in float64, round to float16."""
    raw = collection.images.double().flatten(1) @ encoder.weight.double() * 3.0
    return F.normalize(raw, dim=-1).numpy().astype(np.float16)


def test_protocols_are_satisfied_by_the_test_doubles() -> None:
    assert isinstance(LinearEncoder(), ImageTextEncoder)
    assert isinstance(Pictures(2), ImageCollection)


def test_store_layout_and_values(tmp_path: Path) -> None:
    pictures, encoder = Pictures(11), LinearEncoder()
    store = embed_collection(encoder, pictures, tmp_path / "store", batch_size=3, shard_size=4, progress=False)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        MANIFEST_FILE,
        PLAN_FILE,
        "shard-00000.ids.json",
        "shard-00000.npy",
        "shard-00001.ids.json",
        "shard-00001.npy",
        "shard-00002.ids.json",
        "shard-00002.npy",
    ]
    manifest = json.loads((tmp_path / "store" / MANIFEST_FILE).read_text())
    assert manifest["encoder"] == "linear-test"
    assert (manifest["dim"], manifest["count"], manifest["dtype"], manifest["version"]) == (DIM, 11, "float16", 1)
    assert [(s["start"], s["count"]) for s in manifest["shards"]] == [(0, 4), (4, 4), (8, 3)]
    last = np.load(tmp_path / "store" / "shard-00002.npy")
    assert last.dtype == np.float16
    assert last.shape == (3, DIM)
    assert encoder.batches == [3, 1, 3, 1, 3]  # batches never cross a shard boundary

    assert len(store) == 11
    assert store.dim == DIM
    assert store.encoder == "linear-test"
    assert store.ids == tuple(f"pics/{i:03d}.png" for i in range(11))
    expected = naive_rows(pictures, encoder)
    got = store.embeddings(list(range(11))).numpy()
    np.testing.assert_allclose(got, expected.astype(np.float32), atol=1e-3)  # float16 rounding of float32 vs float64
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=2e-3)


def test_embeddings_gathers_any_rows_in_the_given_order(tmp_path: Path) -> None:
    store = embed_collection(LinearEncoder(), Pictures(11), tmp_path / "s", shard_size=4, progress=False)
    rows = np.concatenate([shard.embeddings for shard in store.shards()]).astype(np.float32)
    np.testing.assert_array_equal(store.embeddings([9, 0, 5, 5, -1]).numpy(), rows[[9, 0, 5, 5, 10]])
    np.testing.assert_array_equal(store.embeddings(slice(3, 7)).numpy(), rows[3:7])
    assert store.embeddings([]).shape == (0, DIM)
    assert store.index_of("pics/006.png") == 6
    with pytest.raises(IndexError, match="row 11 out of range"):
        store.embeddings([1, 11])
    with pytest.raises(KeyError, match=r"pics/099\.png"):
        store.index_of("pics/099.png")
    assert [shard.start for shard in store.shards()] == [0, 4, 8]


def test_killed_run_resumes_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    pictures = Pictures(11)
    # 2 images per batch, 4 per shard: the kill after 3 batches leaves shard 0 written and shard 1 half done.
    killed = LinearEncoder(fail_after=3)
    with pytest.raises(RuntimeError, match="killed"):
        embed_collection(killed, pictures, tmp_path / "run", batch_size=2, shard_size=4, progress=False)
    assert (tmp_path / "run" / "shard-00000.npy").is_file()
    assert not (tmp_path / "run" / "shard-00001.npy").exists()
    assert not (tmp_path / "run" / MANIFEST_FILE).exists()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ConfigError, match="did not finish"):
        EmbeddingStore.open(tmp_path / "run")

    resumed_encoder = LinearEncoder()
    pictures.requested.clear()
    resumed = embed_collection(resumed_encoder, pictures, tmp_path / "run", batch_size=2, shard_size=4, progress=False)
    assert resumed_encoder.batches == [2, 2, 2, 1]  # shards 1 and 2 only
    assert sorted(pictures.requested) == list(range(4, 11))

    reference = embed_collection(
        LinearEncoder(), Pictures(11), tmp_path / "ref", batch_size=2, shard_size=4, progress=False
    )
    assert resumed.ids == reference.ids
    for ours, theirs in zip(resumed.shards(), reference.shards(), strict=True):
        np.testing.assert_array_equal(ours.embeddings, theirs.embeddings)

    # A third run over the finished store embeds nothing.
    again = LinearEncoder()
    embed_collection(again, pictures, tmp_path / "run", batch_size=2, shard_size=4, progress=False)
    assert again.batches == []


def test_a_deleted_shard_is_embedded_again(tmp_path: Path) -> None:
    pictures = Pictures(9)
    embed_collection(LinearEncoder(), pictures, tmp_path / "s", shard_size=4, progress=False)
    (tmp_path / "s" / "shard-00001.npy").unlink()
    with pytest.raises(ConfigError, match=r"shard 1 .* cannot be read"):
        EmbeddingStore.open(tmp_path / "s")
    encoder = LinearEncoder()
    store = embed_collection(encoder, pictures, tmp_path / "s", shard_size=4, progress=False)
    assert encoder.batches == [4]
    np.testing.assert_allclose(store.embeddings(range(9)).numpy(), naive_rows(pictures, encoder), atol=1e-3)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"encoder_name": "other-encoder"}, "encoder"),
        ({"shard_size": 5}, "shard_size"),
        ({"collection_id": "digest-2"}, "collection"),
    ],
)
def test_rerun_with_other_arguments_is_refused(tmp_path: Path, change: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"shard_size": 4, "collection_id": "digest-1", "progress": False}
    killed = LinearEncoder(fail_after=1)
    with pytest.raises(RuntimeError):
        embed_collection(killed, Pictures(9), tmp_path / "s", **arguments)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"different arguments \({field}: ") as raised:
        embed_collection(LinearEncoder(), Pictures(9), tmp_path / "s", **{**arguments, **change})  # type: ignore[arg-type]
    assert "write to a new folder" in str(raised.value)


def test_rerun_over_a_finished_store_of_another_size_is_refused(tmp_path: Path) -> None:
    embed_collection(LinearEncoder(), Pictures(9), tmp_path / "s", progress=False)
    with pytest.raises(ConfigError, match="count: 9 != 10"):
        embed_collection(LinearEncoder(), Pictures(10), tmp_path / "s", progress=False)


def test_a_folder_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an embedding store"):
        embed_collection(LinearEncoder(), Pictures(3), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_arguments_and_bad_items_are_named() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        embed_collection(LinearEncoder(), Pictures(3), "unused", batch_size=0, progress=False)
    with pytest.raises(ValueError, match="collection is empty"):
        embed_collection(LinearEncoder(), Pictures(0), "unused", progress=False)


def test_items_of_the_wrong_shape_and_encoders_of_the_wrong_size(tmp_path: Path) -> None:
    class Flat(Pictures):
        def __getitem__(self, index: int) -> tuple[str, Tensor]:
            return f"{index}", self.images[index].flatten()

    with pytest.raises(ValueError, match=r"image '0' must be a \[3, H, W\] tensor, got \(48,\)"):
        embed_collection(LinearEncoder(), Flat(2), tmp_path / "a", progress=False)

    class Wide(LinearEncoder):
        @property
        def embed_dim(self) -> int:
            return DIM + 1

    with pytest.raises(ValueError, match=r"expected \[2, 7\] \(embed_dim\)"):
        embed_collection(Wide(), Pictures(2), tmp_path / "b", progress=False)


def test_progress_reports_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    embed_collection(
        LinearEncoder(),
        Pictures(7),
        tmp_path / "s",
        batch_size=2,
        shard_size=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[0] == (0, 7)
    assert calls[-1] == (7, 7)
    assert {total for _, total in calls} == {7}
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_shard_assignment_is_round_robin() -> None:
    assert list(shard_assignment(5, 0, 2)) == [0, 2, 4]
    assert list(shard_assignment(5, 1, 2)) == [1, 3]
    assert list(shard_assignment(2, 2, 3)) == []
    assert list(shard_assignment(3, 0, 1)) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard_assignment(5, 2, 2)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        shard_assignment(5, 0, 0)


def test_two_ranks_split_the_shards_and_agree_with_one_process(tmp_path: Path) -> None:
    """Two ranks run concurrently (threads with a real barrier standing in for torch.distributed's)."""
    pictures = [Pictures(11), Pictures(11)]
    encoders = [LinearEncoder(), LinearEncoder()]
    barrier = threading.Barrier(2, timeout=30)
    stores: dict[int, EmbeddingStore] = {}
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            stores[rank] = _embed_on_rank(
                encoders[rank],
                pictures[rank],
                tmp_path / "ddp",
                encoder_name=None,
                batch_size=4,
                shard_size=4,
                num_workers=0,
                device=None,
                collection_id=None,
                progress=False,
                rank=rank,
                world_size=2,
                barrier=barrier.wait,
            )
        except BaseException as error:  # surfaced below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(pictures[0].requested) == [*range(4), *range(8, 11)]  # shards 0 and 2
    assert sorted(pictures[1].requested) == list(range(4, 8))  # shard 1
    single = embed_collection(
        LinearEncoder(), Pictures(11), tmp_path / "one", batch_size=4, shard_size=4, progress=False
    )
    for rank in (0, 1):
        assert stores[rank].ids == single.ids
        np.testing.assert_array_equal(stores[rank].embeddings(range(11)).numpy(), single.embeddings(range(11)).numpy())


def test_open_names_a_missing_or_corrupt_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"manifest\.json is missing"):
        EmbeddingStore.open(tmp_path)
    embed_collection(LinearEncoder(), Pictures(5), tmp_path / "s", shard_size=4, progress=False)
    manifest_path = tmp_path / "s" / MANIFEST_FILE
    good = manifest_path.read_text()
    manifest_path.write_text(good[:40])
    with pytest.raises(ConfigError, match="malformed JSON"):
        EmbeddingStore.open(tmp_path / "s")
    data = json.loads(good)
    data["shards"][1]["count"] = 2
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"shards.1 holds rows 4..5, expected 4..4"):
        EmbeddingStore.open(tmp_path / "s")
    data = json.loads(good)
    data["version"] = 7
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="version 7 is not readable"):
        EmbeddingStore.open(tmp_path / "s")
    manifest_path.write_text(good)
    np.save(tmp_path / "s" / "shard-00001.npy", np.zeros((1, DIM + 1), dtype=np.float16))
    with pytest.raises(ConfigError, match=r"shard 1 .* holds \(1, 7\) float16 rows"):
        EmbeddingStore.open(tmp_path / "s")
    assert StoreManifest.load(manifest_path).count == 5


def test_under_an_initialised_process_group_the_distributed_path_runs(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group of the test runner")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # type: ignore[attr-defined]
    try:
        store = embed_collection(LinearEncoder(), Pictures(5), tmp_path / "s", shard_size=2, progress=False)
    finally:
        dist.destroy_process_group()
    assert len(list(store.shards())) == 3
    assert store.ids[-1] == "pics/004.png"
