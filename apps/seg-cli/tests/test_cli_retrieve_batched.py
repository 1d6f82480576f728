"""``seg retrieve curate`` for many concepts: a ``--concepts-file`` curated ``--batch-size`` at a time gives the
archive of one search over all concepts, an interrupted run resumes from ``OUT.parts/`` and embeds only the batches
it had not finished, and exactly one of ``--concepts`` / ``--concepts-file`` is accepted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from seg_core import Archive, ConceptSet

NAMES = tuple(f"thing {number}" for number in range(30))
ENCODER = "maskclip-vit-tiny-p8.synthetic"  # the bundled CLIP, loaded by `curate` from the index's record
TEMPLATES = "single"  # one prompt per concept keeps the text encoder fast; batching does not depend on it


@dataclass(frozen=True)
class World:
    index: Path
    concepts_file: Path
    expected: Archive  # curate_archive over all 30 concepts in one search


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A 12-image index whose image i is concept i's text embedding plus noise, and the one-shot archive of it."""
    import faiss

    from seg_cli.segmenters import load_clip_source
    from seg_retrieval.curate import curate_archive
    from seg_retrieval.index import EmbeddingIndex, IndexConfig, build_index

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    root = tmp_path_factory.mktemp("batched")
    clip = load_clip_source(None)[0]
    with torch.no_grad():
        text = clip.concept_embeddings(ConceptSet(names=NAMES, templates=TEMPLATES)).embeddings  # [30, 128]
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((12, text.shape[1])).astype(np.float32))
    images = text[:12] + 0.05 * noise
    ids = [f"img{number:02d}.png" for number in range(12)]
    build_index(images.numpy(), IndexConfig(), ids=ids, encoder=ENCODER).save(root / "index")
    lines = ["# thirty made-up concepts", "", *NAMES[:10], "   ", "# the rest", *(f"  {name}  " for name in NAMES[10:])]
    (root / "concepts.txt").write_text("\n".join(lines) + "\n")
    index = EmbeddingIndex.load(root / "index")
    expected = curate_archive(index, NAMES, text, 4, encoder=ENCODER, store=str(root / "index"), templates=TEMPLATES)
    yield World(root / "index", root / "concepts.txt", expected)
    faiss.omp_set_num_threads(threads)


def assert_same_archive(archive: Archive, expected: Archive) -> None:
    """Same concepts, ids and settings; scores equal up to the float rounding of another text batch size."""
    assert archive.concept_names == expected.concept_names
    assert (archive.k, archive.encoder, archive.store, archive.templates) == (
        expected.k, expected.encoder, expected.store, expected.templates,
    )  # fmt: skip
    for concept, reference in zip(archive.concepts, expected.concepts, strict=True):
        assert concept.image_ids == reference.image_ids
        np.testing.assert_allclose([i.score for i in concept.items], [i.score for i in reference.items], atol=1e-5)


class CountingEmbeddings:
    """Wraps ``ClipModel.concept_embeddings``: records each batch's names; raises on call ``fail_on`` if given."""

    def __init__(self, fail_on: int | None = None) -> None:
        from seg_models.clip import ClipModel

        self.original = ClipModel.concept_embeddings
        self.batches: list[tuple[str, ...]] = []
        self.fail_on = fail_on

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace the method for the test (``monkeypatch`` restores it)."""
        from seg_models.clip import ClipModel

        def concept_embeddings(clip: Any, concepts: ConceptSet) -> Any:
            self.batches.append(concepts.names)
            if len(self.batches) == self.fail_on:
                raise RuntimeError("simulated crash of the text encoder")
            return self.original(clip, concepts)

        monkeypatch.setattr(ClipModel, "concept_embeddings", concept_embeddings)


def test_a_concepts_file_in_batches_of_7_equals_the_one_shot_archive(
    world: World, tmp_path: Path, run_seg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg_retrieval.curate import load_archive

    counting = CountingEmbeddings()
    counting.install(monkeypatch)
    out = tmp_path / "archive.json"
    result = run_seg("retrieve", "curate", "--index", str(world.index), "--concepts-file", str(world.concepts_file),
                     "--out", str(out), "-k", "4", "--templates", TEMPLATES, "--batch-size", "7")  # fmt: skip
    assert result.exit_code == 0, result.text
    assert counting.batches == [NAMES[0:7], NAMES[7:14], NAMES[14:21], NAMES[21:28], NAMES[28:30]]
    archive = load_archive(out)
    assert_same_archive(archive, world.expected)
    assert archive["thing 5"].image_ids[0] == "img05.png"  # the image made from its own text embedding
    assert not (tmp_path / "archive.json.parts").exists()  # removed once the archive is written
    last = [concept.items[-1].score for concept in archive.concepts]
    weakest = archive.concepts[int(np.argmin(last))].concept
    assert (
        f"curated 30 concepts: cosine of the k-th image mean {np.mean(last):.3f}, min {min(last):.3f} ({weakest})"
        in result.text
    )
    assert "images, cosine" not in result.text  # no line per concept beyond 20 concepts


def test_an_interrupted_run_resumes_from_its_parts(
    world: World, tmp_path: Path, run_seg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg_retrieval.curate import load_archive

    out, parts = tmp_path / "archive.json", tmp_path / "archive.json.parts"
    args = ["retrieve", "curate", "--index", str(world.index), "--concepts-file", str(world.concepts_file),
            "--out", str(out), "-k", "4", "--templates", TEMPLATES, "--batch-size", "7"]  # fmt: skip
    CountingEmbeddings(fail_on=3).install(monkeypatch)
    crashed = run_seg(*args)
    assert crashed.exit_code == 1
    assert "simulated crash of the text encoder" in crashed.text
    assert not out.exists()
    assert sorted(path.name for path in parts.iterdir()) == ["part-000000.json", "part-000001.json", "plan.json"]

    other = run_seg(*args[:-1], "8")
    assert other.exit_code == 1
    assert "batch_size: 7 != 8; stored != requested); delete" in other.text
    assert "archive.json.parts to start over" in other.text

    resumed = CountingEmbeddings()
    resumed.install(monkeypatch)
    result = run_seg(*args)
    assert result.exit_code == 0, result.text
    assert resumed.batches == [NAMES[14:21], NAMES[21:28], NAMES[28:30]]  # the two finished batches are not redone
    assert_same_archive(load_archive(out), world.expected)
    assert not parts.exists()


def test_exactly_one_of_concepts_and_concepts_file(world: World, tmp_path: Path, run_seg: Callable[..., Any]) -> None:
    base = ["retrieve", "curate", "--index", str(world.index), "--out", str(tmp_path / "a.json")]
    both = run_seg(*base, "--concepts", "cow", "--concepts-file", str(world.concepts_file))
    assert both.exit_code == 2
    assert "Invalid value for '--concepts' / '--concepts-file': both given; use only one of them" in both.text
    neither = run_seg(*base)
    assert neither.exit_code == 2
    assert "'--concepts-file': none given; use --concepts \"a,b,c\" or --concepts-file FILE" in neither.text
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cow\nsky\n# c\nCow\n", "concept 'Cow' on line 4 of"),
        ("cow\nhot dog, sausage\n", "line 2 of"),
        ("# only a comment\n\n", "lists no concepts"),
    ],
)
def test_bad_concepts_files_name_the_line(
    world: World, tmp_path: Path, run_seg: Callable[..., Any], text: str, message: str
) -> None:
    from seg_cli.retrieve import read_concepts_file

    path = tmp_path / "concepts.txt"
    path.write_text(text)
    result = run_seg("retrieve", "curate", "--index", str(world.index), "--concepts-file", str(path),
                     "--out", str(tmp_path / "a.json"))  # fmt: skip
    assert result.exit_code == 1
    assert message in result.text
    with pytest.raises(ValueError, match=message):
        read_concepts_file(path)


def test_read_concepts_file_keeps_order_and_strips(world: World) -> None:
    from seg_cli.retrieve import read_concepts_file

    assert read_concepts_file(world.concepts_file) == NAMES
