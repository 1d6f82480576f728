"""Retrieval archives and pseudo-mask records: the artefacts ReCo and ZUTIS build before any training.

An :class:`Archive` is, per concept, the top-k images of an unlabelled collection retrieved with a CLIP text
embedding (ReCo Sec. 3.1, ZUTIS Sec. 3.1). A :class:`PseudoMaskRecord` is one mask produced without labels
(co-segmentation, saliency, copy-paste), with where it came from.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from seg_core.base import SegModel

__all__ = ["Archive", "ArchiveItem", "ConceptArchive", "PseudoMaskRecord", "PseudoMaskSet"]


class ArchiveItem(SegModel):
    """One retrieved image: its id in the embedding store and its similarity to the concept."""

    image_id: str = Field(min_length=1)
    score: float


class ConceptArchive(SegModel):
    """The images retrieved for one concept, best first."""

    concept: str = Field(min_length=1)
    items: tuple[ArchiveItem, ...]

    @model_validator(mode="after")
    def _sorted_unique(self) -> ConceptArchive:
        ids = [item.image_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"archive of {self.concept!r} lists an image twice; de-duplicate before saving")
        scores = [item.score for item in self.items]
        if any(a < b for a, b in itertools.pairwise(scores)):
            raise ValueError(f"archive of {self.concept!r} is not sorted by decreasing score")
        return self

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Image ids, best first."""
        return tuple(item.image_id for item in self.items)


class Archive(SegModel):
    """Per-concept image archives curated from one embedding store.

    Attributes:
        encoder: The image-text encoder used for retrieval (e.g. ``"open_clip:ViT-L-14-336/openai"``).
        store: Identifier or path of the embedding store searched.
        templates: The prompt templates the concept text embeddings were ensembled over.
        k: Images requested per concept.
        concepts: One archive per concept.
    """

    encoder: str
    store: str
    templates: str | tuple[str, ...] = "imagenet85"
    k: PositiveInt
    concepts: tuple[ConceptArchive, ...]

    @model_validator(mode="after")
    def _unique_concepts(self) -> Archive:
        names = [c.concept for c in self.concepts]
        if len(set(names)) != len(names):
            raise ValueError("each concept may have only one archive")
        too_long = [c.concept for c in self.concepts if len(c.items) > self.k]
        if too_long:
            raise ValueError(f"archives longer than k={self.k}: {too_long}")
        return self

    def __getitem__(self, concept: str) -> ConceptArchive:
        for archive in self.concepts:
            if archive.concept == concept:
                return archive
        raise KeyError(f"no archive for {concept!r}; concepts: {', '.join(c.concept for c in self.concepts)}")

    @property
    def concept_names(self) -> tuple[str, ...]:
        """Concept names in order."""
        return tuple(c.concept for c in self.concepts)


class PseudoMaskRecord(SegModel):
    """One mask made without pixel labels.

    Attributes:
        image_id: The image the mask belongs to.
        mask_path: PNG of the mask, relative to the record set's root (binary or a label map).
        concept: The concept the mask is for.
        category_id: Label id of the concept in the set's label order.
        instance_id: Instance id for instance-level masks (copy-paste), else ``None``.
        score: Confidence of the producer, if it has one.
        source: What produced the mask.
    """

    image_id: str = Field(min_length=1)
    mask_path: str = Field(min_length=1)
    concept: str = Field(min_length=1)
    category_id: NonNegativeInt
    instance_id: NonNegativeInt | None = None
    score: float | None = None
    source: Literal["coseg", "saliency", "copy_paste", "rectified", "teacher", "other"] = "other"


class PseudoMaskSet(SegModel):
    """A set of pseudo-mask records with the label names they index into."""

    label_names: tuple[str, ...] = Field(min_length=1)
    records: tuple[PseudoMaskRecord, ...]

    @model_validator(mode="after")
    def _ids_in_range(self) -> PseudoMaskSet:
        bad = [r.image_id for r in self.records if r.category_id >= len(self.label_names)]
        if bad:
            raise ValueError(
                f"category_id out of range for {len(self.label_names)} labels in records of images {bad[:5]}"
            )
        return self
