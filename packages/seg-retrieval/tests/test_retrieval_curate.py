"""Archive curation (plain top-k and de-duplicated), batched and resumable curation against the one-shot archive,
purity against hand-counted labels, and archive files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from seg_core import Archive, ArchiveItem, ConceptArchive, ConfigError
from seg_retrieval.curate import (
    PARTS_PLAN_FILE,
    PURITY_MEAN,
    CurationPlan,
    archive_purity,
    concepts_fingerprint,
    curate_archive,
    curate_archive_batched,
    dedup_keep,
    load_archive,
    save_archive,
)
from seg_retrieval.index import IndexConfig, build_index


class ListRetriever:
    """Brute-force search over named vectors in plain Python (independent of faiss); records each k asked for."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.names = list(vectors)
        self.table = {name: torch.tensor(vector, dtype=torch.float64) for name, vector in vectors.items()}
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.names)

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, list[list[str]]]:
        self.asked.append(k)
        all_scores, all_ids = [], []
        for query in queries.double():
            scored = sorted(
                ((float(query @ vec / (query.norm() * vec.norm())), name) for name, vec in self.table.items()),
                key=lambda pair: -pair[0],
            )[:k]
            all_scores.append([score for score, _ in scored])
            all_ids.append([name for _, name in scored])
        return torch.tensor(all_scores), all_ids

    def vectors(self, ids: Sequence[str]) -> Tensor:
        return torch.stack([self.table[name] for name in ids]).float()


def angle(degrees: float) -> list[float]:
    """A unit vector in the x-y plane at ``degrees`` from x (cosine with x = cos(degrees))."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees)), 0.0]


# x-axis query "cat"; z-axis query "sky". a, a2, a3 are near-copies (1° and 2° apart), b is 20° away.
WORLD = {"a": angle(5), "a2": angle(6), "a3": angle(7), "b": angle(25), "c": angle(60), "s": [0.1, 0.0, 1.0]}
QUERIES = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])


def test_plain_top_k_matches_brute_force() -> None:
    retriever = ListRetriever(WORLD)
    archive = curate_archive(retriever, ["cat", "sky"], QUERIES, 3, encoder="enc", store="st")
    assert archive["cat"].image_ids == ("a", "a2", "a3")
    assert archive["sky"].image_ids[0] == "s"
    assert archive["cat"].items[0].score == pytest.approx(math.cos(math.radians(5)), abs=1e-6)
    assert (archive.encoder, archive.store, archive.templates, archive.k) == ("enc", "st", "imagenet85", 3)
    assert archive.concept_names == ("cat", "sky")
    assert retriever.asked == [3]


def test_dedup_drops_near_copies_and_fetches_more_until_k_survive() -> None:
    retriever = ListRetriever(WORLD)
    # cos 1° = 0.99985 and cos 2° = 0.99939 are duplicates at 0.999; a -> b is 20° (0.94): kept.
    archive = curate_archive(
        retriever, ["cat"], QUERIES[:1], 2, encoder="e", store="s", dedup_threshold=0.999, oversample=1.0
    )
    assert archive["cat"].image_ids == ("a", "b")
    assert archive["cat"].items[1].score == pytest.approx(math.cos(math.radians(25)), abs=1e-6)
    assert retriever.asked == [2, 4]  # a, a2 left one image; the doubled fetch reached b


def test_dedup_stops_when_the_collection_runs_out() -> None:
    copies = {f"x{i}": angle(i * 0.1) for i in range(5)}
    retriever = ListRetriever(copies)
    archive = curate_archive(retriever, ["cat"], QUERIES[:1], 3, encoder="e", store="s", dedup_threshold=0.99)
    assert archive["cat"].image_ids == ("x0",)
    assert retriever.asked == [5]  # ceil(3 * 2) = 6 clamped to the 5 images, so no second fetch


def test_dedup_over_a_faiss_index_reads_its_vectors() -> None:
    names = list(WORLD)
    index = build_index(np.array([WORLD[name] for name in names], dtype=np.float32), IndexConfig(), ids=names)
    archive = curate_archive(index, ["cat"], QUERIES[:1], 3, encoder="e", store="s", dedup_threshold=0.999)
    assert archive["cat"].image_ids == ("a", "b", "c")


def test_dedup_keep_by_hand() -> None:
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    assert dedup_keep(vectors, 0.95) == [0, 2, 4]  # 4 is 45° (0.707) from both kept ones
    assert dedup_keep(vectors, 0.95, limit=2) == [0, 2]
    assert dedup_keep(vectors, 1.0) == [0, 1, 2, 4]  # exact copies only: 3 is 2 scaled; 0 and 1 differ by 0.57°


def test_curation_arguments_are_checked() -> None:
    retriever = ListRetriever(WORLD)
    with pytest.raises(ValueError, match=r"text_embeddings must be \[C, D\] with C=1 rows"):
        curate_archive(retriever, ["cat"], QUERIES, 2, encoder="e", store="s")
    with pytest.raises(ValueError, match=r"concepts \['cat'\] are listed twice"):
        curate_archive(retriever, ["cat", "cat"], QUERIES, 2, encoder="e", store="s")
    with pytest.raises(ValueError, match=r"dedup_threshold must be a cosine in \(0, 1\]"):
        curate_archive(retriever, ["cat"], QUERIES[:1], 2, encoder="e", store="s", dedup_threshold=1.5)
    with pytest.raises(TypeError, match="not one string"):
        curate_archive(retriever, "cat", QUERIES[:1], 2, encoder="e", store="s")

    class SearchOnly:
        def search(self, queries: Tensor, k: int) -> tuple[Tensor, list[list[str]]]:
            return retriever.search(queries, k)

    with pytest.raises(ValueError, match="de-duplication needs image vectors: pass vectors="):
        curate_archive(SearchOnly(), ["cat"], QUERIES[:1], 2, encoder="e", store="s", dedup_threshold=0.9)
    archive = curate_archive(
        SearchOnly(), ["cat"], QUERIES[:1], 2, encoder="e", store="s", dedup_threshold=0.999, vectors=retriever.vectors
    )
    assert archive["cat"].image_ids == ("a", "b")  # one oversampled fetch of 4 (no collection size known)


def make_archive(concepts: dict[str, list[str]], k: int) -> Archive:
    return Archive(
        encoder="e",
        store="s",
        k=k,
        concepts=tuple(
            ConceptArchive(
                concept=name, items=tuple(ArchiveItem(image_id=i, score=1.0 - n / 10) for n, i in enumerate(ids))
            )
            for name, ids in concepts.items()
        ),
    )


def test_purity_is_precision_at_k_counted_by_hand() -> None:
    archive = make_archive({"cat": ["a", "b", "c", "d"], "dog": ["b", "c", "e"]}, k=4)
    labels = {"a": {"cat"}, "b": {"dog"}, "c": {"cat", "dog"}, "d": set(), "e": {"cow"}}
    purity = archive_purity(archive, labels, [1, 2, 4])
    assert purity["cat"] == {1: 1.0, 2: 0.5, 4: 0.5}
    assert purity["dog"] == {1: 1.0, 2: 1.0, 4: 0.5}  # only 3 items: the 4th place counts as a miss
    assert purity[PURITY_MEAN] == {1: 1.0, 2: 0.75, 4: 0.5}


def test_purity_arguments_are_checked() -> None:
    archive = make_archive({"cat": ["a", "b"]}, k=2)
    with pytest.raises(ValueError, match=r"ks \[3\] out of range; each k must be in \[1, archive.k=2\]"):
        archive_purity(archive, {"a": ["cat"], "b": []}, [1, 3])
    with pytest.raises(ValueError, match=r"image_labels lacks 1 retrieved images, e.g. \['b'\]"):
        archive_purity(archive, {"a": ["cat"]}, [2])
    with pytest.raises(ValueError, match="key of the mean"):
        archive_purity(make_archive({PURITY_MEAN: ["a"]}, k=1), {"a": []}, [1])


def test_archive_files_round_trip(tmp_path: Path) -> None:
    archive = curate_archive(ListRetriever(WORLD), ["cat", "sky"], QUERIES, 2, encoder="enc", store="st")
    path = save_archive(archive, tmp_path / "out" / "archive.json")
    assert load_archive(path) == archive
    with pytest.raises(ConfigError, match=r"ending in \.json"):
        save_archive(archive, tmp_path / "archive.yaml")
    path.write_text(path.read_text().replace('"k": 2', '"k": 1'))
    with pytest.raises(ConfigError, match=r"archives longer than k=1"):
        load_archive(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_archive(tmp_path / "missing.json")


def batched_world() -> tuple[ListRetriever, list[str], Tensor]:
    """40 random 6-d images, 12 of them with a near copy (cosine > 0.999), and 23 random concept queries."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    copies = images[:12] + 0.005 * torch.randn(12, 6, generator=generator, dtype=torch.float64)
    table = {f"img{i:02d}": images[i].tolist() for i in range(40)}
    table.update({f"copy{i:02d}": copies[i].tolist() for i in range(12)})
    names = [f"concept{i:02d}" for i in range(23)]
    return ListRetriever(table), names, torch.randn(23, 6, generator=generator)


class TableEmbedder:
    """``embed_text`` over a fixed [C, D] table; records the names of each call and can fail on one call."""

    def __init__(self, names: list[str], table: Tensor, fail_on_call: int | None = None) -> None:
        self.rows = dict(zip(names, table, strict=True))
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, names: Sequence[str]) -> Tensor:
        self.calls.append(list(names))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash while embedding")
        return torch.stack([self.rows[name] for name in names])


def scored(archive: Archive) -> list[tuple[str, tuple[str, ...], list[float]]]:
    return [(c.concept, c.image_ids, [item.score for item in c.items]) for c in archive.concepts]


@pytest.mark.parametrize("dedup", [None, 0.999])
def test_batched_equals_one_shot_with_a_batch_size_that_does_not_divide_c(dedup: float | None) -> None:
    retriever, names, text = batched_world()
    expected = curate_archive(retriever, names, text, 4, encoder="e", store="s", dedup_threshold=dedup, oversample=1.0)
    embed = TableEmbedder(names, text)
    seen: list[tuple[int, int]] = []
    archive = curate_archive_batched(
        retriever, names, embed, 4, encoder="e", store="s", batch_size=5, dedup_threshold=dedup, oversample=1.0,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert archive == expected
    assert scored(archive) == scored(expected)
    assert embed.calls == [names[0:5], names[5:10], names[10:15], names[15:20], names[20:23]]
    assert seen == [(0, 23), (5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    if dedup is not None:  # the near copies really were dropped somewhere, so the comparison covers de-duplication
        plain = curate_archive(retriever, names, text, 4, encoder="e", store="s")
        assert scored(plain) != scored(expected)
        for concept in archive.concepts:
            ids = concept.image_ids
            assert not any(f"copy{i[3:]}" in ids for i in ids if i.startswith("img"))


def test_batched_resumes_from_its_parts_after_a_crash(tmp_path: Path) -> None:
    retriever, names, text = batched_world()
    templates = ("a photo of a {}.", "a {}.")  # a tuple survives the plan's JSON round trip
    expected = curate_archive(retriever, names, text, 4, encoder="e", store="s", templates=templates,
                              dedup_threshold=0.999)  # fmt: skip
    parts = tmp_path / "archive.json.parts"

    def run(embed: TableEmbedder) -> Archive:
        return curate_archive_batched(retriever, names, embed, 4, encoder="e", store="s", templates=templates,
                                      batch_size=5, dedup_threshold=0.999, parts_dir=parts)  # fmt: skip

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(TableEmbedder(names, text, fail_on_call=3))
    assert sorted(path.name for path in parts.iterdir()) == ["part-000000.json", "part-000001.json", PARTS_PLAN_FILE]
    plan = CurationPlan.load(parts / PARTS_PLAN_FILE)
    assert (plan.concepts, plan.count, plan.k, plan.batch_size) == (concepts_fingerprint(names), 23, 4, 5)
    assert plan.templates == templates

    resumed = TableEmbedder(names, text)
    archive = run(resumed)
    assert resumed.calls == [names[10:15], names[15:20], names[20:23]]  # only the batches not yet written
    assert archive == expected
    assert len(list(parts.glob("part-*.json"))) == 5

    again = TableEmbedder(names, text)
    assert run(again) == expected
    assert again.calls == []


def test_batched_refuses_parts_of_other_settings(tmp_path: Path) -> None:
    retriever, names, text = batched_world()
    parts = tmp_path / "parts"
    curate_archive_batched(retriever, names, TableEmbedder(names, text), 4, encoder="e", store="s", batch_size=5,
                           parts_dir=parts)  # fmt: skip
    with pytest.raises(ConfigError, match=r"other settings \(k: 4 != 3; batch_size: 5 != 6; stored != requested\); "
                       r"delete .*parts to start over, or rerun with the stored settings"):  # fmt: skip
        curate_archive_batched(retriever, names, TableEmbedder(names, text), 3, encoder="e", store="s", batch_size=6,
                               parts_dir=parts)  # fmt: skip
    with pytest.raises(ConfigError, match=r"concepts: another list of names \(sha256:"):
        curate_archive_batched(retriever, names[::-1], TableEmbedder(names, text), 4, encoder="e", store="s",
                               batch_size=5, parts_dir=parts)  # fmt: skip
    with pytest.raises(ConfigError, match=r"dedup_threshold: None != 0.9; oversample: None != 2.0"):
        curate_archive_batched(retriever, names, TableEmbedder(names, text), 4, encoder="e", store="s", batch_size=5,
                               dedup_threshold=0.9, parts_dir=parts)  # fmt: skip
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a parts folder")
    with pytest.raises(ConfigError, match=r"other exists and is not a curation parts folder \(no plan.json\)"):
        curate_archive_batched(retriever, names, TableEmbedder(names, text), 4, encoder="e", store="s",
                               parts_dir=tmp_path / "other")  # fmt: skip


def test_batched_arguments_are_checked() -> None:
    retriever, names, text = batched_world()
    embed = TableEmbedder(names, text)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        curate_archive_batched(retriever, names, embed, 4, encoder="e", store="s", batch_size=0)
    with pytest.raises(ValueError, match=r"concepts \['a', 'b'\] are listed twice"):
        curate_archive_batched(retriever, ["b", "a", "c", "b", "a"], embed, 4, encoder="e", store="s")
    with pytest.raises(ValueError, match="concepts is empty"):
        curate_archive_batched(retriever, [], embed, 4, encoder="e", store="s")
    with pytest.raises(ValueError, match=r"embed_text returned \(2, 6\) for a batch of 3 concepts"):
        curate_archive_batched(retriever, names[:3], lambda batch: text[:2], 4, encoder="e", store="s")
    assert embed.calls == []
