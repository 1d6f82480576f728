"""seg-coseg: Co-segmentation, saliency pseudo-masks and copy-paste synthesis for seg.

Available modules:

    seg_coseg.seeds: ReCo's seed pixels and reference embeddings, computed block by block without the k·h·w square
        adjacency (``seed_pixels``, ``reference_embedding``; ``naive_seed_pixels`` for checking).
    seg_coseg.context: ReCo's language-guided co-segmentation and context elimination (``saliency_weights``,
        ``context_weights``, ``CoSegConfig``, ``reference_embeddings``) and the ``seg_core.CoSegmenter``
        ``ReferenceCoSegmenter``.

Skeleton modules (they exist so the package map is complete and export nothing until the issue named beside
them lands; see docs/architecture.md):

    seg_coseg.saliency: Training-free saliency pseudo-masks (spectral bipartition of patch affinities) (ZUTIS
        issue).
    seg_coseg.copy_paste: Copy-paste synthesis of multi-object training images with instance ids (ZUTIS issue).

Submodules are not imported here, so ``import seg_coseg`` stays light (no torch).
"""

from seg_coseg.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = (
    "saliency",
    "copy_paste",
)

__all__ = ["SKELETON_MODULES", "__version__"]
