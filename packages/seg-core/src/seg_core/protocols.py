"""The seams between packages, as structural types (``typing.Protocol``).

seg-retrieval and seg-coseg take encoders and segmenters through these, so they never import seg-models; any
object with the right methods works (a user's own CLIP wrapper, a test double).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

    from seg_core.concepts import ConceptSet
    from seg_core.outputs import SegmentationOutput

__all__ = ["CoSegmenter", "ImageTextEncoder", "MaskRefiner", "Retriever", "Segmenter"]


@runtime_checkable
class ImageTextEncoder(Protocol):
    """A CLIP-like model: images and texts into one embedding space, plus dense (per-patch) image features."""

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint embedding space."""
        ...

    def encode_image(self, images: Tensor) -> Tensor:
        """Embed images ``[B, 3, H, W]`` (normalised pixels) into ``[B, D]`` (not necessarily L2-normalised)."""
        ...

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Embed ``N`` texts into ``[N, D]`` (not necessarily L2-normalised)."""
        ...

    def dense_features(self, images: Tensor) -> Tensor:
        """Per-location embeddings ``[B, D, h, w]`` in the joint space (e.g. the MaskCLIP value path)."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments images into the labels of a concept set."""

    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment ``[B, 3, H, W]`` images; the output logits are at the input resolution."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Nearest-neighbour search over an embedding collection (maximum inner product)."""

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Sequence[Sequence[str]]]:
        """For ``[Q, D]`` queries return scores ``[Q, k]`` (best first) and the ``k`` image ids of each query."""
        ...


@runtime_checkable
class CoSegmenter(Protocol):
    """Finds what a set of images has in common (ReCo's seed pixels and reference embedding)."""

    def reference_embedding(self, features: Tensor) -> Tensor:
        """From dense features ``[K, D, h, w]`` of ``K`` archive images, return one L2-normalised ``[D]`` vector."""
        ...


@runtime_checkable
class MaskRefiner(Protocol):
    """Post-processing of soft segmentations with the image (PAMR, dense CRF, a trained saliency model)."""

    def refine(self, images: Tensor, probabilities: Tensor) -> Tensor:
        """Refine ``[B, C, H, W]`` probabilities given ``[B, 3, H, W]`` images; returns the same shape."""
        ...
