"""Language-guided co-segmentation and context elimination (ReCo).

Shin, Albanie & Xie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022, Sec. 3.2. Co-segmenting
an archive can anchor on a distractor that co-occurs with the concept (cars with roads, aeroplanes with sky). Two
gates on the target pixels of the seed search (:func:`seg_coseg.seeds.seed_pixels`, ``column_weights``) steer it
away:

* **language guidance**: a DenseCLIP saliency map of the concept's text in each archive image,
  :func:`saliency_weights` ``= sigmoid(10 · cos(DenseCLIP feature, text))``. The paper says only "sigmoid"; the
  temperature 10 is the official code's (NoelShin/reco, networks/reco.py ``_get_text_attention``).
* **context elimination**: the reference embeddings of a few common background concepts (tree, sky, building,
  road, person) are computed first; each archive pixel is then down-weighted by :func:`context_weights`
  ``= Π_m (1 - sigmoid(cos(feature, context reference m)))``, with no temperature, as in the official code
  (``_get_context_weights``), so each factor lies in [0.27, 0.73].

:func:`reference_embeddings` runs the whole of Sec. 3.1-3.2 on feature tensors for a set of concepts; the
features and DenseCLIP saliency maps come from the caller (this package imports no encoder).
:class:`ReferenceCoSegmenter` is the plain (ungated) co-segmenter behind :class:`seg_core.CoSegmenter`.

Contents: :func:`saliency_weights`, :func:`context_weights`, :class:`CoSegConfig`, :func:`reference_embeddings`,
:class:`ReferenceCoSegmenter`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import SegModel
from seg_coseg.seeds import _check_block_size, reference_embedding

__all__ = [
    "DEFAULT_CONTEXT_CONCEPTS",
    "CoSegConfig",
    "ReferenceCoSegmenter",
    "context_weights",
    "reference_embeddings",
    "saliency_weights",
]

#: The common background concepts ReCo suppresses (paper Sec. 4.2 and Appendix C.1; configs/reco_*.yaml).
DEFAULT_CONTEXT_CONCEPTS: tuple[str, ...] = ("tree", "sky", "building", "road", "person")


def _check_maps_source(name: str, value: object, rank: int, layout: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(value).__name__}")
    if value.ndim != rank:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {value.dtype}; use .float()")
    return value


def saliency_weights(dense_features: Tensor, text_embedding: Tensor, *, temperature: float = 10.0) -> Tensor:
    """DenseCLIP saliency of one concept in each archive image: ``sigmoid(temperature · cos(feature, text))``.

    Args:
        dense_features: ``[K, E, h, w]`` DenseCLIP features in the joint image-text space (any scale; L2-normalised
            over ``E`` here).
        text_embedding: ``[E]`` the concept's CLIP text embedding (L2-normalised here).
        temperature: Scale of the cosine before the sigmoid. 10 is the official code's value; the paper writes a
            plain sigmoid (temperature 1), which keeps every weight in [0.27, 0.73] and so gates weakly.

    Returns:
        ``[K, h, w]`` weights in (0, 1).
    """
    _check_maps_source("dense_features", dense_features, 4, "[K, E, h, w]")
    _check_maps_source("text_embedding", text_embedding, 1, "[E]")
    if text_embedding.shape[0] != dense_features.shape[1]:
        raise ValueError(
            f"text_embedding has {text_embedding.shape[0]} channels but dense_features {tuple(dense_features.shape)} "
            f"have E={dense_features.shape[1]}; use the text encoder of the same CLIP"
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r} (ReCo's code uses 10)")
    features = F.normalize(dense_features, dim=1)
    text = F.normalize(text_embedding.to(features), dim=0)
    cosine = (features * text[None, :, None, None]).sum(dim=1)  # [K, h, w]
    return torch.sigmoid(temperature * cosine)


def context_weights(features: Tensor, context_references: Tensor) -> Tensor:
    """Context-elimination weights: ``Π_m (1 - sigmoid(cos(feature, r_m)))`` over ``M`` context references.

    ``sigmoid(cos(f, r_m))`` is ReCo's attention map of context concept ``m`` (Eq. 2, no temperature, as the
    official code); a pixel that looks like any context concept gets a smaller weight. ``M = 0`` gives all ones
    (the empty product).

    Args:
        features: ``[K, D, h, w]`` co-segmentation features of a concept's archive (L2-normalised over ``D`` here).
        context_references: ``[M, D]`` reference embeddings of the context concepts (L2-normalised here).

    Returns:
        ``[K, h, w]`` weights in (0, 1).
    """
    _check_maps_source("features", features, 4, "[K, D, h, w]")
    _check_maps_source("context_references", context_references, 2, "[M, D]")
    if context_references.shape[1] != features.shape[1]:
        raise ValueError(
            f"context_references are [M, D] with D={context_references.shape[1]} but features "
            f"{tuple(features.shape)} have D={features.shape[1]}; compute both with the same encoder"
        )
    normalised = F.normalize(features, dim=1)
    references = F.normalize(context_references.to(normalised), dim=1)
    num_images, channels, height, width = normalised.shape
    cosine = torch.matmul(references, normalised.reshape(num_images, channels, height * width))  # [K, M, h*w]
    # 1 - sigmoid(x) == sigmoid(-x), without the cancellation of 1 - (a number close to 1).
    return torch.sigmoid(-cosine).prod(dim=1).reshape(num_images, height, width)


class CoSegConfig(SegModel):
    """How ReCo builds reference embeddings from archives (Sec. 3.1-3.2).

    Attributes:
        language_guided: Gate the seed search with DenseCLIP saliency maps of each concept (needs ``saliency``).
        context_elimination: Down-weight pixels resembling the context concepts (needs their archives).
        context_concepts: The common background concepts to suppress; their own embeddings are language-guided
            (when that is on) but never context-eliminated.
        saliency_temperature: Temperature of :func:`saliency_weights` (10 in the official code; for callers that
            compute saliency maps from DenseCLIP features; :func:`reference_embeddings` takes finished maps).
        include_self: Whether a pixel's own image counts in its support (the official code: yes).
        block_size: Target images per block of the seed search; ``None``: the default of
            :func:`seg_coseg.seeds.default_block_size`.
    """

    language_guided: bool = True
    context_elimination: bool = True
    context_concepts: tuple[str, ...] = DEFAULT_CONTEXT_CONCEPTS
    saliency_temperature: float = 10.0
    include_self: bool = True
    block_size: int | None = None

    def model_post_init(self, context: Any, /) -> None:
        """Check the values pydantic's types do not: pydantic reports a ``ValueError`` here as a validation error.

        (seg-coseg declares only seg-core and torch, so the checks live here rather than in pydantic ``Field``
        constraints and validators.)
        """
        problems: list[str] = []
        if not math.isfinite(self.saliency_temperature) or self.saliency_temperature <= 0:
            problems.append(
                f"saliency_temperature must be a positive finite number, got {self.saliency_temperature!r} "
                "(ReCo's code uses 10)"
            )
        if self.block_size is not None and self.block_size < 1:
            problems.append(f"block_size must be >= 1 (target images per block) or null, got {self.block_size}")
        bad_names = [name for name in self.context_concepts if not name or name != name.strip()]
        if bad_names:
            problems.append(f"context_concepts must be non-empty names without surrounding spaces, got {bad_names!r}")
        repeated = sorted(name for name, count in Counter(self.context_concepts).items() if count > 1)
        if repeated:
            problems.append(f"context_concepts must be unique; repeated: {', '.join(repeated)}")
        if self.context_elimination and not self.context_concepts:
            problems.append(
                "context_elimination is on but context_concepts is empty; name the concepts to suppress "
                "(e.g. ['tree', 'sky']) or set context_elimination to false"
            )
        if problems:
            raise ValueError("; ".join(problems))


def _resize_saliency(name: str, maps: object, features: Tensor) -> Tensor:
    """Check one concept's ``[K, h', w']`` saliency maps and resize them bilinearly to the feature grid."""
    checked = _check_maps_source(f"saliency[{name!r}]", maps, 3, "[K, h, w]")
    num_images, _, height, width = features.shape
    if checked.shape[0] != num_images:
        raise ValueError(
            f"saliency[{name!r}] has {checked.shape[0]} maps but the archive of {name!r} has K={num_images} images; "
            "compute one saliency map per archive image, in the same order"
        )
    if not bool(torch.isfinite(checked).all()) or float(checked.min()) < 0:
        raise ValueError(
            f"saliency[{name!r}] must hold finite values >= 0 (they gate similarities), got a minimum of "
            f"{float(checked.min()):.6g}; pass sigmoid outputs such as saliency_weights(...)"
        )
    checked = checked.to(device=features.device, dtype=features.dtype)
    if tuple(checked.shape[1:]) == (height, width):
        return checked
    # DenseCLIP's grid (e.g. RN50x16, stride 32) usually differs from the co-segmentation encoder's (e.g. DeiT-S/16):
    # bilinear resizing (align_corners=False), as the official code resizes its maps. Bilinear weights are convex, so
    # maps in [0, 1] stay in [0, 1].
    resized = F.interpolate(checked[:, None], size=(height, width), mode="bilinear", align_corners=False)
    return resized[:, 0]


def _check_archive(name: str, features: object) -> Tensor:
    return _check_maps_source(f"archive features of {name!r}", features, 4, "[K, D, h, w]")


def reference_embeddings(
    archive_features: Mapping[str, Tensor],
    *,
    saliency: Mapping[str, Tensor] | None,
    config: CoSegConfig,
    context_features: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Reference embeddings of a set of concepts with ReCo's language guidance and context elimination.

    1. With ``config.context_elimination``: each context concept's reference embedding from its own archive,
       language-guided when ``config.language_guided``, never context-eliminated.
    2. Each concept of ``archive_features``: seed search gated by the product of its saliency maps (if
       language-guided) and :func:`context_weights` of its own archive features against the context embeddings
       (if context elimination is on). A concept that is itself a context concept reuses that embedding (ReCo
       Sec. 3.2, last sentence).

    Args:
        archive_features: Concept name -> ``[K, D, h, w]`` co-segmentation features of its archive images.
        saliency: Concept name -> ``[K, h', w']`` DenseCLIP saliency maps of that concept in its archive images
            (e.g. from :func:`saliency_weights`), for every target and context concept; resized bilinearly to each
            archive's feature grid ``(h, w)`` here. Needed only when ``config.language_guided``.
        config: Which gates to apply, the context concepts, ``include_self`` and ``block_size``.
        context_features: Context concept name -> ``[K, D, h, w]`` features of its archive. A context concept
            that is also a target may instead take its archive from ``archive_features`` (not both).

    Returns:
        Concept name -> ``[D]`` unit-norm reference embedding, for the concepts of ``archive_features`` in their
        order (context-only concepts are not returned).

    Raises:
        ValueError: a needed saliency map or context archive is missing, shapes disagree, or maps are negative.
        TypeError: an entry is not a floating-point tensor.
    """
    if config.language_guided and saliency is None:
        raise ValueError(
            "config.language_guided is on but saliency is None; pass DenseCLIP saliency maps per concept "
            "(seg_coseg.context.saliency_weights) or set language_guided=False"
        )
    saliency_maps: Mapping[str, Tensor] = saliency if saliency is not None else {}
    contexts: Mapping[str, Tensor] = context_features if context_features is not None else {}

    def gate(name: str, features: Tensor) -> Tensor | None:
        if not config.language_guided:
            return None
        if name not in saliency_maps:
            raise ValueError(
                f"config.language_guided is on but saliency has no maps for {name!r} (has: {sorted(saliency_maps)}); "
                "add them or set language_guided=False"
            )
        return _resize_saliency(name, saliency_maps[name], features)

    def embed(features: Tensor, weights: Tensor | None) -> Tensor:
        return reference_embedding(features, weights, include_self=config.include_self, block_size=config.block_size)

    context_references: dict[str, Tensor] = {}
    if config.context_elimination:
        for name in config.context_concepts:
            in_targets, in_contexts = name in archive_features, name in contexts
            if in_targets and in_contexts and archive_features[name] is not contexts[name]:
                raise ValueError(
                    f"context concept {name!r} has an archive in both archive_features and context_features; "
                    "give it in one of them"
                )
            if not (in_targets or in_contexts):
                raise ValueError(
                    f"context elimination needs an archive for context concept {name!r}: pass "
                    f"context_features={{{name!r}: [K, D, h, w] features}}, remove it from "
                    "config.context_concepts, or set context_elimination=False"
                )
            features = _check_archive(name, archive_features[name] if in_targets else contexts[name])
            context_references[name] = embed(features, gate(name, features))
    stacked = torch.stack(list(context_references.values())) if context_references else None

    embeddings: dict[str, Tensor] = {}
    for name, raw in archive_features.items():
        if name in context_references:
            embeddings[name] = context_references[name]
            continue
        features = _check_archive(name, raw)
        weights = gate(name, features)
        if stacked is not None:
            eliminated = context_weights(features, stacked.to(features))
            weights = eliminated if weights is None else weights * eliminated
        embeddings[name] = embed(features, weights)
    return embeddings


class ReferenceCoSegmenter:
    """ReCo's plain co-segmenter (Sec. 3.1, no gating) as a :class:`seg_core.CoSegmenter`.

    Args:
        include_self: See :func:`seg_coseg.seeds.seed_pixels`.
        block_size: See :func:`seg_coseg.seeds.seed_pixels`.
    """

    def __init__(self, *, include_self: bool = True, block_size: int | None = None) -> None:
        _check_block_size(block_size)
        self.include_self = include_self
        self.block_size = block_size

    def reference_embedding(self, features: Tensor) -> Tensor:
        """From dense features ``[K, D, h, w]`` of ``K`` archive images, return the unit-norm ``[D]`` embedding."""
        return reference_embedding(features, include_self=self.include_self, block_size=self.block_size)
