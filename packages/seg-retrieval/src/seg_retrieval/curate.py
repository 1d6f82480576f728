"""Per-concept archive curation by text-to-image retrieval, and archive purity (precision@k).

ReCo (Shin, Xie & Albanie, NeurIPS 2022), Sec. 3.1: for each concept ``c`` the archive is the ``k`` images of the
unlabelled collection whose CLIP image embeddings are nearest to the concept's text embedding ``ψ_T(c)`` (k = 50 in
the official configs, ``n_imgs``); the text embedding is prompt-ensembled over the 85 ImageNet + scene templates.
Archive purity (Sec. 4.1, Fig. 3 left) is the precision of the top-k retrieved images against image-level labels.

Prompt ensembling is not done here: it lives in one place, ``seg_models.clip.ensemble_text_embeddings`` (and
``ClipModel.concept_embeddings``), and callers pass its output. Optional de-duplication (not in ReCo; useful on web
collections full of near copies) drops an image whose embedding is too close to a better-ranked image already kept
for the same concept, and fetches more candidates so that ``k`` images survive when the collection allows.

Thousands of concepts: :func:`curate_archive_batched` embeds and curates the concepts a batch at a time, writing
each finished batch to a parts folder (with a :class:`CurationPlan`) so that an interrupted run resumes; its result
equals :func:`curate_archive` on all concepts at once (each concept's search is independent of the others).

Contents: :func:`curate_archive`, :func:`curate_archive_batched`, :func:`archive_purity`, :func:`save_archive` /
:func:`load_archive`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence, Sized
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
from pydantic import PositiveInt
from torch import Tensor

from seg_core import Archive, ArchiveItem, ConceptArchive, ConfigError, Retriever, SegModel

__all__ = [
    "PARTS_PLAN_FILE",
    "PART_FILE",
    "PURITY_MEAN",
    "CurationPlan",
    "VectorSource",
    "archive_purity",
    "concepts_fingerprint",
    "curate_archive",
    "curate_archive_batched",
    "dedup_keep",
    "load_archive",
    "save_archive",
]

PURITY_MEAN = "<mean>"
"""Key of the mean over concepts in :func:`archive_purity`'s result (no concept may be named so)."""

VectorLookup = Callable[[Sequence[str]], Tensor]


@runtime_checkable
class VectorSource(Protocol):
    """Anything that returns the stored vectors of image ids (e.g. :class:`seg_retrieval.index.EmbeddingIndex`)."""

    def vectors(self, ids: Sequence[str]) -> Tensor:
        """``[n, D]`` vectors of ``ids``, in order."""
        ...


def dedup_keep(vectors: Tensor, threshold: float, limit: int | None = None) -> list[int]:
    """Greedy de-duplication of a ranked list: which positions to keep.

    Position ``i`` is kept unless its cosine similarity with an already kept position ``j < i`` is ``>= threshold``;
    the scan stops once ``limit`` positions are kept.

    Args:
        vectors: ``[m, D]`` vectors in rank order (best first); normalised here.
        threshold: Cosine similarity at or above which two images count as duplicates.
        limit: Stop after keeping this many (``None``: scan all).

    Returns:
        Kept positions, increasing.
    """
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [m, D], got shape {tuple(vectors.shape)}")
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    similarity = unit @ unit.T  # [m, m]; m is a few hundred at most, so the full matrix is cheap
    kept: list[int] = []
    for position in range(unit.shape[0]):
        if limit is not None and len(kept) >= limit:
            break
        if kept and bool((similarity[position, kept] >= threshold).any()):
            continue
        kept.append(position)
    return kept


def curate_archive(
    retriever: Retriever,
    concepts: Sequence[str],
    text_embeddings: Tensor,
    k: int,
    *,
    encoder: str,
    store: str,
    templates: str | tuple[str, ...] = "imagenet85",
    dedup_threshold: float | None = None,
    oversample: float = 2.0,
    vectors: VectorSource | VectorLookup | None = None,
) -> Archive:
    """The ``k`` best-matching images of each concept (ReCo's archive), optionally de-duplicated.

    Args:
        retriever: Nearest-neighbour search over the collection, e.g. an
            :class:`~seg_retrieval.index.EmbeddingIndex`.
        concepts: Concept names, unique, in the order of ``text_embeddings``' rows.
        text_embeddings: ``[C, D]`` prompt-ensembled text embeddings (from ``seg_models.clip``).
        k: Images per concept.
        encoder: The encoder of the embeddings, recorded in the archive.
        store: The embedding store searched (path or identifier), recorded in the archive.
        templates: The template set the text embeddings were ensembled over, recorded in the archive.
        dedup_threshold: ``None``: plain top-k as in ReCo. A cosine in ``(0, 1]``: drop an image whose embedding
            has cosine ``>=`` it with a better-ranked kept image of the same concept (0.95 catches re-encodes and
            resizes of one photo in CLIP space).
        oversample: With de-duplication, candidates fetched first per concept, as a multiple of ``k``; the fetch
            doubles while fewer than ``k`` images survive and the collection has more.
        vectors: Where de-duplication reads image vectors: an object with ``vectors(ids)`` or a function of the ids;
            default the retriever itself when it has ``vectors`` (an ``EmbeddingIndex`` does).

    Returns:
        The archive, concepts in the given order, items sorted by decreasing score. A concept has fewer than ``k``
        items only when de-duplication leaves fewer in the whole collection.

    Raises:
        ValueError: Mismatched concepts and embeddings, repeated concepts, ``k < 1``, a threshold outside
            ``(0, 1]``, ``oversample < 1``, or de-duplication without a vector source.
    """
    if isinstance(concepts, str):
        raise TypeError("concepts must be a sequence of names, not one string; wrap it in a list")
    names = list(concepts)
    if text_embeddings.ndim != 2 or text_embeddings.shape[0] != len(names):
        raise ValueError(
            f"text_embeddings must be [C, D] with C={len(names)} rows (one per concept), got "
            f"{tuple(text_embeddings.shape)}"
        )
    if not names:
        raise ValueError("concepts is empty; give at least one concept name")
    _check_names(names)
    _check_settings(k, dedup_threshold, oversample)
    queries = text_embeddings.detach().float()
    if dedup_threshold is None:
        scores, ids = retriever.search(queries, k)
        archives = [_concept_archive(name, scores[row].tolist(), list(ids[row])) for row, name in enumerate(names)]
    else:
        lookup = _vector_lookup(retriever, vectors)
        total = len(retriever) if isinstance(retriever, Sized) else None
        archives = _deduplicated(
            retriever,
            names,
            queries,
            k,
            threshold=dedup_threshold,
            oversample=oversample,
            total=total,
            lookup=lookup,
        )
    return Archive(encoder=encoder, store=store, templates=templates, k=k, concepts=tuple(archives))


def _check_names(names: list[str]) -> None:
    """Refuse repeated concept names (one counting pass: O(C), not O(C^2))."""
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"concepts {repeated} are listed twice; each concept gets one archive")


def _check_settings(k: int, dedup_threshold: float | None, oversample: float) -> None:
    if isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if dedup_threshold is not None:
        if not 0.0 < dedup_threshold <= 1.0:
            raise ValueError(
                f"dedup_threshold must be a cosine in (0, 1] (e.g. 0.95), got {dedup_threshold}; None disables it"
            )
        if oversample < 1.0:
            raise ValueError(f"oversample must be >= 1 (a multiple of k), got {oversample}")


def _vector_lookup(retriever: Retriever, vectors: VectorSource | VectorLookup | None) -> VectorLookup:
    if vectors is None:
        if isinstance(retriever, VectorSource):
            return retriever.vectors
        raise ValueError(
            "de-duplication needs image vectors: pass vectors= (an object with vectors(ids), e.g. the EmbeddingIndex, "
            f"or a function of the ids); {type(retriever).__name__} has no vectors method"
        )
    if isinstance(vectors, VectorSource):
        return vectors.vectors
    return vectors


def _concept_archive(name: str, scores: list[float], ids: list[str]) -> ConceptArchive:
    return ConceptArchive(
        concept=name,
        items=tuple(ArchiveItem(image_id=image_id, score=score) for image_id, score in zip(ids, scores, strict=True)),
    )


def _deduplicated(
    retriever: Retriever,
    names: list[str],
    queries: Tensor,
    k: int,
    *,
    threshold: float,
    oversample: float,
    total: int | None,
    lookup: VectorLookup,
) -> list[ConceptArchive]:
    fetch = math.ceil(k * oversample)
    if total is not None:
        fetch = min(fetch, total)
    kept: dict[int, tuple[list[float], list[str]]] = {}
    pending = list(range(len(names)))
    while pending:
        scores, ids = retriever.search(queries[pending], fetch)
        still: list[int] = []
        for row, concept in enumerate(pending):
            candidate_ids = list(ids[row])
            positions = dedup_keep(lookup(candidate_ids), threshold, limit=k)
            kept[concept] = ([float(scores[row, p]) for p in positions], [candidate_ids[p] for p in positions])
            # Too few survived: fetch more, unless this fetch already covered the whole collection. Without a
            # known collection size one oversampled fetch is all we can safely ask for.
            if len(positions) < k and total is not None and fetch < total:
                still.append(concept)
        if not still or total is None:
            break
        pending = still
        fetch = min(fetch * 2, total)
    return [_concept_archive(name, *kept[row]) for row, name in enumerate(names)]


PARTS_PLAN_FILE = "plan.json"
"""The plan file of a :func:`curate_archive_batched` parts folder (a :class:`CurationPlan`)."""

PART_FILE = "part-{:06d}.json"
"""File name of batch ``i``'s archive part in a parts folder (``PART_FILE.format(i)``)."""


def concepts_fingerprint(concepts: Sequence[str]) -> str:
    """``sha256:<hex>`` over the concept names in order: a resumed run must curate the same list.

    Args:
        concepts: Concept names.

    Returns:
        The digest of the JSON list of the names (so that no two different lists share an encoding).
    """
    digest = hashlib.sha256(json.dumps(list(concepts), ensure_ascii=False).encode("utf-8"))
    return f"sha256:{digest.hexdigest()}"


class CurationPlan(SegModel):
    """The settings a :func:`curate_archive_batched` parts folder was written with; a resumed run must match them.

    Attributes:
        format: Always ``"seg-curation-parts"``.
        version: Layout version of the parts folder.
        concepts: :func:`concepts_fingerprint` of the concept list (order included).
        count: Number of concepts.
        k: Images per concept.
        templates: The template set the text embeddings were ensembled over.
        encoder: The encoder recorded in the archive.
        store: The store recorded in the archive.
        dedup_threshold: The de-duplication threshold (``None``: plain top-k).
        oversample: The de-duplication oversampling (``None`` without de-duplication, where it does not matter).
        batch_size: Concepts per part.
    """

    format: Literal["seg-curation-parts"] = "seg-curation-parts"
    version: Literal[1] = 1
    concepts: str
    count: PositiveInt
    k: PositiveInt
    templates: str | tuple[str, ...]
    encoder: str
    store: str
    dedup_threshold: float | None
    oversample: float | None
    batch_size: PositiveInt

    def differences(self, other: CurationPlan) -> list[str]:
        """``field: theirs != ours`` for every field that differs (empty when the plans agree).

        Args:
            other: The plan found on disk.
        """
        found = []
        for name in CurationPlan.model_fields:
            theirs, ours = getattr(other, name), getattr(self, name)
            if theirs == ours:
                continue
            if name == "concepts":  # digests say nothing to a person; say what they mean
                found.append(f"concepts: another list of names ({theirs[:19]}... != {ours[:19]}...)")
            else:
                found.append(f"{name}: {theirs!r} != {ours!r}")
        return found


def curate_archive_batched(
    retriever: Retriever,
    concepts: Sequence[str],
    embed_text: Callable[[Sequence[str]], Tensor],
    k: int,
    *,
    encoder: str,
    store: str,
    templates: str | tuple[str, ...] = "imagenet85",
    batch_size: int = 256,
    dedup_threshold: float | None = None,
    oversample: float = 2.0,
    vectors: VectorSource | VectorLookup | None = None,
    parts_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Archive:
    """:func:`curate_archive` for thousands of concepts: embed and curate ``batch_size`` concepts at a time.

    Each batch's names go through ``embed_text`` (e.g. ``lambda names: clip.concept_embeddings(ConceptSet(
    names=names, templates=...)).embeddings``) and :func:`curate_archive`; the batch archives are concatenated in
    concept order. Every concept is searched on its own, so the result is the archive :func:`curate_archive` makes
    from all concepts at once (same ids and scores, up to the float rounding of the encoder and the index at another
    batch size).

    With ``parts_dir``, the folder first gets a :class:`CurationPlan` (``plan.json``) and then each finished batch
    as an archive part (``part-000000.json`` ...), each written atomically (temporary file, then rename). Running
    again with the same plan loads the finished parts instead of embedding and searching their concepts again
    (resume after a crash); the parts stay until the caller deletes the folder (after saving the merged archive).

    Args:
        retriever: Nearest-neighbour search over the collection (e.g. an ``EmbeddingIndex``).
        concepts: Concept names, unique.
        embed_text: Maps ``b`` concept names to their ``[b, D]`` prompt-ensembled text embeddings; called once per
            batch that is not already finished, under ``torch.no_grad()``.
        k: Images per concept.
        encoder: The encoder of the embeddings, recorded in the archive and the plan.
        store: The embedding store searched, recorded in the archive and the plan.
        templates: The template set ``embed_text`` ensembles over, recorded in the archive and the plan.
        batch_size: Concepts embedded and searched together (and per part file).
        dedup_threshold: As in :func:`curate_archive`.
        oversample: As in :func:`curate_archive`.
        vectors: As in :func:`curate_archive`.
        parts_dir: Folder for the plan and the finished parts (``None``: keep nothing, no resume).
        progress: Called as ``progress(done, total)`` in concepts, once before the first batch and after each.

    Returns:
        The archive of all concepts, in the given order.

    Raises:
        ValueError: Bad arguments (as :func:`curate_archive`; also ``batch_size < 1``), or ``embed_text`` returning
            something other than ``[b, D]`` for ``b`` names.
        ConfigError: ``parts_dir`` holds parts of another plan (the differing fields are named), is not a parts
            folder, or holds an unreadable part.
    """
    if isinstance(concepts, str):
        raise TypeError("concepts must be a sequence of names, not one string; wrap it in a list")
    names = list(concepts)
    if not names:
        raise ValueError("concepts is empty; give at least one concept name")
    _check_names(names)
    _check_settings(k, dedup_threshold, oversample)
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (concepts per batch, e.g. 256), got {batch_size!r}")
    if dedup_threshold is not None:
        _vector_lookup(retriever, vectors)  # no vector source: fail before embedding anything
    folder = Path(parts_dir) if parts_dir is not None else None
    if folder is not None:
        plan = CurationPlan(
            concepts=concepts_fingerprint(names),
            count=len(names),
            k=k,
            templates=templates,
            encoder=encoder,
            store=store,
            dedup_threshold=dedup_threshold,
            oversample=oversample if dedup_threshold is not None else None,
            batch_size=batch_size,
        )
        _open_parts(folder, plan)
    total = len(names)
    if progress is not None:
        progress(0, total)
    archives: list[ConceptArchive] = []
    for number, start in enumerate(range(0, total, batch_size)):
        batch = names[start : start + batch_size]
        part_path = folder / PART_FILE.format(number) if folder is not None else None
        if part_path is not None and part_path.is_file():
            part = _load_part(part_path, batch, k)
        else:
            with torch.no_grad():
                text: object = embed_text(batch)
            if not isinstance(text, Tensor) or text.ndim != 2 or text.shape[0] != len(batch):
                shape = tuple(text.shape) if isinstance(text, Tensor) else type(text).__name__
                raise ValueError(
                    f"embed_text returned {shape} for a batch of {len(batch)} concepts; it must return a "
                    f"[{len(batch)}, D] tensor, one row per name in order"
                )
            part = curate_archive(
                retriever,
                batch,
                text,
                k,
                encoder=encoder,
                store=store,
                templates=templates,
                dedup_threshold=dedup_threshold,
                oversample=oversample,
                vectors=vectors,
            )
            if part_path is not None:
                part.save(part_path)  # atomic: a part is there whole or not at all
        archives.extend(part.concepts)
        if progress is not None:
            progress(start + len(batch), total)
    return Archive(encoder=encoder, store=store, templates=templates, k=k, concepts=tuple(archives))


def _open_parts(folder: Path, plan: CurationPlan) -> None:
    """Check a parts folder against ``plan`` (resume) or start one by writing the plan."""
    plan_path = folder / PARTS_PLAN_FILE
    if plan_path.is_file():
        try:
            existing = CurationPlan.load(plan_path)
        except ConfigError as error:
            raise ConfigError(f"{error}; delete {folder} to start the curation over") from None
        differences = plan.differences(existing)
        if differences:
            raise ConfigError(
                f"{folder} holds the parts of a curation with other settings ({'; '.join(differences)}; stored != "
                f"requested); delete {folder} to start over, or rerun with the stored settings to resume it"
            )
        return
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(
            f"parts_dir {folder} exists and is not a curation parts folder (no {PARTS_PLAN_FILE}); delete it or "
            "choose a new or empty folder"
        )
    plan.save(plan_path)  # atomic; creates the folder


def _load_part(path: Path, batch: list[str], k: int) -> Archive:
    try:
        part = Archive.load(path)
    except ConfigError as error:
        raise ConfigError(f"{error}; delete {path} to curate its batch again") from None
    if part.concept_names != tuple(batch) or part.k != k:
        raise ConfigError(
            f"{path} holds other concepts or another k than its batch of the plan in {path.parent}; delete "
            f"{path.parent} to start over"
        )
    return part


def archive_purity(
    archive: Archive, image_labels: Mapping[str, Collection[str]], ks: Sequence[int]
) -> dict[str, dict[int, float]]:
    """Precision@k of each concept's archive against image-level labels (ReCo Fig. 3 left), and their mean.

    ``precision@k = |{first k images whose labels include the concept}| / k``. An archive shorter than ``k``
    (de-duplication ran out of images) counts its missing places as misses.

    Args:
        archive: The curated archive.
        image_labels: For each retrieved image id, the concept names present in it (exact, case-sensitive names).
        ks: The ``k`` values to report, each in ``[1, archive.k]``.

    Returns:
        ``{concept: {k: precision}}`` for every concept, plus ``{PURITY_MEAN: {k: mean over concepts}}``.

    Raises:
        ValueError: A ``k`` outside ``[1, archive.k]``, a concept named :data:`PURITY_MEAN`, or retrieved images
            missing from ``image_labels``.
    """
    if not ks:
        raise ValueError("ks is empty; give the archive sizes to evaluate, e.g. [5, 10, 20, 50]")
    bad = [value for value in ks if isinstance(value, bool) or not 1 <= value <= archive.k]
    if bad:
        raise ValueError(f"ks {bad} out of range; each k must be in [1, archive.k={archive.k}]")
    if PURITY_MEAN in archive.concept_names:
        raise ValueError(f"a concept is named {PURITY_MEAN!r}, the key of the mean; rename it")
    largest = max(ks)
    unknown = sorted(
        {image_id for concept in archive.concepts for image_id in concept.image_ids[:largest]} - set(image_labels)
    )
    if unknown:
        raise ValueError(f"image_labels lacks {len(unknown)} retrieved images, e.g. {unknown[:3]}; label every image")
    result: dict[str, dict[int, float]] = {}
    for concept in archive.concepts:
        result[concept.concept] = {
            value: sum(concept.concept in image_labels[image_id] for image_id in concept.image_ids[:value]) / value
            for value in ks
        }
    result[PURITY_MEAN] = {
        value: sum(result[concept.concept][value] for concept in archive.concepts) / len(archive.concepts)
        for value in ks
    }
    return result


def save_archive(archive: Archive, path: str | Path) -> Path:
    """Write ``archive`` as JSON (atomically); returns the path.

    Raises:
        ConfigError: ``path`` does not end in ``.json``.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ConfigError(f"archives are saved as JSON; give a path ending in .json, got {path}")
    return archive.save(path)


def load_archive(path: str | Path) -> Archive:
    """Read an archive written by :func:`save_archive`.

    Raises:
        ConfigError: The file is missing, not JSON, or not a valid archive (the message names the bad fields).
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ConfigError(f"archives are read from JSON; give a path ending in .json, got {path}")
    return Archive.load(path)
