"""Concept sets: the class names a segmenter is asked for, how they are prompted, and what background means.

A :class:`ConceptSet` is what a user types ("cow, grass, sky") plus the choices the field leaves to each method:
the prompt templates the names are ensembled over, synonyms per class, and a background policy.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from seg_core.base import SegModel

__all__ = [
    "BackgroundClass",
    "BackgroundPolicy",
    "BackgroundThreshold",
    "ConceptSet",
    "NoBackground",
]


class NoBackground(SegModel):
    """Every pixel belongs to one of the concepts (ReCLIP++, MaskCLIP on VOC-20/Context-59, ReCo)."""

    kind: Literal["none"] = "none"


class BackgroundClass(SegModel):
    """Background is a concept of its own, prompted with ``names`` (synonyms all map to one label).

    ZUTIS prompts the literal word "background"; the SCLIP family prompts synonyms such as "sky, wall, tree".
    """

    kind: Literal["class"] = "class"
    names: tuple[str, ...] = ("background",)

    @field_validator("names")
    @classmethod
    def _non_empty(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names or any(not name.strip() for name in names):
            raise ValueError("background names must be a non-empty list of non-empty strings, e.g. ['background']")
        return names


class BackgroundThreshold(SegModel):
    """A pixel whose best concept score is below ``threshold`` is background (GroupViT, PGSeg, SimCon, TCL).

    ``score`` says what the threshold is applied to: the softmax probability of the best concept, or its raw
    cosine similarity.
    """

    kind: Literal["threshold"] = "threshold"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    score: Literal["probability", "similarity"] = "probability"


BackgroundPolicy = Annotated[NoBackground | BackgroundClass | BackgroundThreshold, Field(discriminator="kind")]


class ConceptSet(SegModel):
    """The classes to segment, how to prompt them, and the background policy.

    Label ids are positions: with a background (class or threshold) policy, background is label 0 and concept
    ``i`` is label ``i + 1``; without one, concept ``i`` is label ``i``.

    Attributes:
        names: Class names as shown to people, unique, e.g. ``("cow", "grass", "sky")``.
        templates: Prompt templates with one ``{}`` each, or the name of a template set (``"single"``,
            ``"imagenet80"``, ``"imagenet85"``) resolved by :func:`seg_core.templates.resolve_templates`.
        synonyms: Extra names per class, ensembled with the class name (e.g. ``{"person": ("man", "woman")}``).
        background: What background means.
    """

    names: tuple[str, ...] = Field(min_length=1)
    templates: str | tuple[str, ...] = "single"
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    background: BackgroundPolicy = NoBackground()

    @field_validator("names")
    @classmethod
    def _clean_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        stripped = tuple(name.strip() for name in names)
        if any(not name for name in stripped):
            raise ValueError("class names must be non-empty strings")
        duplicates = sorted(name for name, count in Counter(stripped).items() if count > 1)
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {', '.join(duplicates)}")
        return stripped

    @field_validator("templates")
    @classmethod
    def _check_templates(cls, templates: str | tuple[str, ...]) -> str | tuple[str, ...]:
        from seg_core.templates import TEMPLATE_SETS

        if isinstance(templates, str):
            if templates not in TEMPLATE_SETS:
                raise ValueError(
                    f"unknown template set {templates!r}; use one of {', '.join(sorted(TEMPLATE_SETS))} "
                    "or a list of templates with one '{}' each"
                )
            return templates
        if not templates:
            raise ValueError("templates must not be empty")
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' placeholder; bad: {bad[:3]}")
        return templates

    @model_validator(mode="after")
    def _synonyms_name_classes(self) -> ConceptSet:
        unknown = sorted(set(self.synonyms) - set(self.names))
        if unknown:
            raise ValueError(f"synonyms given for unknown classes {unknown}; known classes: {list(self.names)}")
        return self

    @classmethod
    def from_names(cls, names: str | list[str] | tuple[str, ...], **kwargs: object) -> ConceptSet:
        """Build from a comma-separated string (``"cow, grass, sky"``) or a sequence of names."""
        if isinstance(names, str):
            names = [part for part in (piece.strip() for piece in names.split(",")) if part]
        return cls.parse({"names": tuple(names), **kwargs})

    @property
    def has_background(self) -> bool:
        """Whether label 0 is background (a background class or a threshold policy)."""
        return self.background.kind != "none"

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the output labels in order: ``("background", *names)`` with a background policy."""
        return ("background", *self.names) if self.has_background else self.names

    @property
    def num_labels(self) -> int:
        """Number of output labels (concepts plus background when there is a background policy)."""
        return len(self.label_names)

    def prompts_for(self, name: str) -> tuple[str, ...]:
        """Every surface form to prompt for class ``name``: the name itself, then its synonyms."""
        if name not in self.names:
            raise KeyError(f"{name!r} is not in this concept set ({', '.join(self.names)})")
        return (name, *self.synonyms.get(name, ()))

    def template_list(self) -> tuple[str, ...]:
        """The templates as a tuple of strings, a named set resolved."""
        from seg_core.templates import resolve_templates

        return resolve_templates(self.templates)
