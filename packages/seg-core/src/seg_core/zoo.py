"""Zoo entries and checkpoint manifests: what a pretrained segmenter is and how to rebuild it.

A :class:`ZooEntry` is a row of the model zoo's table (timm's ``PretrainedCfg``, open_clip's ``_PRETRAINED``),
keyed ``method-arch.tag``. A :class:`CheckpointManifest` is the ``config.json`` written next to
``model.safetensors``: everything needed to rebuild the segmenter and check its files.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, JsonValue, NonNegativeInt, field_validator, model_validator

from seg_core.base import SegModel
from seg_core.concepts import ConceptSet
from seg_core.protocol import IMAGENET_MEAN_STD, Normalization, ProtocolPreset

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "ZOO_NAME_PATTERN",
    "CheckpointManifest",
    "FileDigest",
    "PaperRef",
    "Preprocessing",
    "UpstreamWeights",
    "ZooEntry",
    "ZooResult",
]

MANIFEST_FORMAT_VERSION = "1.0"
"""``MAJOR.MINOR`` of the checkpoint manifest layout this seg-core writes; readers refuse another major."""

ZOO_NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*\.[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class Preprocessing(SegModel):
    """How input images are prepared for the model."""

    image_size: int = Field(default=224, gt=0)
    normalization: Normalization = IMAGENET_MEAN_STD
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bicubic"


class PaperRef(SegModel):
    """The paper a method comes from."""

    title: str
    url: str | None = None
    arxiv: str | None = None


class UpstreamWeights(SegModel):
    """Weights an entry depends on, e.g. the CLIP it rectifies: ``open_clip:ViT-B-16/openai``."""

    name: str
    source: str
    license: str | None = None


class ZooResult(SegModel):
    """One evaluation number of a checkpoint (a ``model-index`` result on its model card).

    Attributes:
        dataset: What it was measured on (``synthetic-world``, ``pascal-voc``).
        split: The split and, for the synthetic world, the world seeds (``val, worlds 1000-1002``).
        metric: ``mean_iou``, ``mask_ap`` ... (the Hub's metric ids where one exists).
        value: The number, in [0, 1] for IoU and AP.
        preset: The protocol preset's name.
        signature: :meth:`ProtocolPreset.signature` of the preset and class names used (compare only equal ones).
    """

    dataset: str = Field(min_length=1)
    split: str = "val"
    metric: str = Field(min_length=1)
    value: float
    preset: str | None = None
    signature: str | None = None


class ZooEntry(SegModel):
    """One pretrained model of the zoo.

    Attributes:
        name: ``method-arch.tag``, e.g. ``reclip-vit-b16.voc`` (lower case, digits, ``-``/``_``).
        method: The method (its config discriminator, e.g. ``"reclip"``).
        hf_hub_id: Hub repository ``org/name`` holding the files, or ``None`` for weights shipped in a package or
            fetched by another library (``open_clip``).
        revision: Git revision on the Hub (branch, tag or commit).
        weights_format: How the files are laid out: ``seg`` (``model.safetensors`` + ``config.json`` manifest +
            model card, what :func:`seg_zoo.save_pretrained` writes), ``open_clip`` (weights ``open_clip`` loads by
            ``open_clip`` name or ``hf-hub:``), ``transformers`` (a ``save_pretrained`` folder of transformers).
        open_clip: ``NAME/TAG`` of open_clip's pretrained table, for ``weights_format="open_clip"`` entries that
            are not on the Hub under their own repository (e.g. ``ViT-B-16/openai``).
        bundled: Name of a model shipped inside the seg-zoo wheel (:mod:`seg_zoo.bundled`), loaded with no network.
        files: Files of the checkpoint.
        preprocessing: Input preparation.
        concepts: The concept set it was trained or evaluated with.
        preset: Name of the protocol preset its numbers were measured under.
        upstream: Weights it needs besides its own files.
        license: License of the weights (SPDX id).
        paper: Where the method is described.
        description: One line for ``seg zoo list``.
    """

    name: str
    method: str = Field(min_length=1)
    hf_hub_id: str | None = None
    revision: str = "main"
    weights_format: Literal["seg", "open_clip", "transformers"] = "seg"
    open_clip: str | None = None
    bundled: str | None = None
    files: tuple[str, ...] = ("model.safetensors", "config.json")
    preprocessing: Preprocessing = Preprocessing()
    concepts: ConceptSet | None = None
    preset: str | None = None
    upstream: tuple[UpstreamWeights, ...] = ()
    license: str = "apache-2.0"
    paper: PaperRef | None = None
    description: str = ""
    results: tuple[ZooResult, ...] = ()

    @model_validator(mode="after")
    def _has_a_source(self) -> ZooEntry:
        if self.hf_hub_id is None and self.open_clip is None and self.bundled is None:
            raise ValueError(
                f"zoo entry {self.name!r} names no weights: give hf_hub_id, open_clip (NAME/TAG) or bundled"
            )
        if self.open_clip is not None and self.weights_format != "open_clip":
            raise ValueError(f"zoo entry {self.name!r}: open_clip is set, so weights_format must be 'open_clip'")
        return self

    @field_validator("name")
    @classmethod
    def _name_shape(cls, name: str) -> str:
        if not ZOO_NAME_PATTERN.match(name):
            raise ValueError(
                f"zoo name {name!r} must look like 'method-arch.tag' (lower case, digits, '-', one '.'), "
                "e.g. 'reclip-vit-b16.voc'"
            )
        return name

    @field_validator("hf_hub_id")
    @classmethod
    def _hub_id_shape(cls, hub_id: str | None) -> str | None:
        if hub_id is not None and not _HUB_ID_PATTERN.match(hub_id):
            raise ValueError(f"hf_hub_id {hub_id!r} must look like 'org/name'")
        return hub_id

    @property
    def arch(self) -> str:
        """The ``method-arch`` part of the name."""
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        """The tag part of the name (which weights)."""
        return self.name.split(".", 1)[1]


class FileDigest(SegModel):
    """Size and sha256 of one checkpoint file."""

    sha256: str
    size: NonNegativeInt

    @field_validator("sha256")
    @classmethod
    def _hex(cls, digest: str) -> str:
        if not _SHA256_PATTERN.match(digest):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return digest


class CheckpointManifest(SegModel):
    """The ``config.json`` of a saved segmenter: enough to rebuild it and to verify its files.

    Attributes:
        format_version: ``MAJOR.MINOR`` of this manifest layout; a reader refuses another major version.
        name: Zoo name, if the checkpoint is a zoo entry.
        method: Method discriminator; ``method_config["method"]`` must equal it.
        method_config: The method config as JSON (parse with :func:`seg_core.parse_method_config`).
        architecture: Keyword arguments that rebuild the network.
        preprocessing: Input preparation.
        label_names: Output label names in order.
        concepts: The concept set, when the model has a fixed one.
        protocol: The protocol preset its reported numbers used.
        upstream: Weights it needs besides its own files, by role (``{"clip": "maskclip-vit-tiny.synthetic"}``):
            a zoo name, ``hf-hub:org/name[@rev]`` or an open_clip ``NAME/TAG``.
        training: What trained it (recipe, seeds, steps), as the trainer recorded it.
        results: Its evaluation numbers.
        files: Digest of every weight file (``model.safetensors``); the model card is not covered, so editing it on
            the Hub does not invalidate the checkpoint.
        versions: Versions of the seg distributions that wrote it.
    """

    format_version: str = MANIFEST_FORMAT_VERSION
    name: str | None = None
    method: str = Field(min_length=1)
    method_config: dict[str, JsonValue] = Field(default_factory=dict)
    architecture: dict[str, JsonValue] = Field(default_factory=dict)
    preprocessing: Preprocessing = Preprocessing()
    label_names: tuple[str, ...] = ()
    concepts: ConceptSet | None = None
    protocol: ProtocolPreset | None = None
    upstream: dict[str, str] = Field(default_factory=dict)
    training: dict[str, JsonValue] | None = None
    results: tuple[ZooResult, ...] = ()
    files: dict[str, FileDigest] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _same_major(cls, version: str) -> str:
        major, _, minor = version.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise ValueError(
                f"format_version {version!r} must look like 'MAJOR.MINOR', e.g. {MANIFEST_FORMAT_VERSION!r}"
            )
        ours = MANIFEST_FORMAT_VERSION.split(".", 1)[0]
        if major != ours:
            raise ValueError(
                f"format_version {version!r} has major version {major}, this seg-core reads {ours}.x; "
                + ("upgrade seg-core and seg-zoo" if int(major) > int(ours) else "re-save it with an older seg-zoo")
            )
        return version

    @field_validator("method_config")
    @classmethod
    def _config_names_method(cls, config: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if config and "method" not in config:
            raise ValueError("method_config must carry its 'method' discriminator")
        return config
