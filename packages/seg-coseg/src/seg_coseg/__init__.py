"""seg-coseg: Co-segmentation, saliency pseudo-masks and copy-paste synthesis for seg.

Available modules:

    seg_coseg.seeds: ReCo's seed pixels and reference embeddings, computed block by block without the k·h·w square
        adjacency (``seed_pixels``, ``reference_embedding``; ``naive_seed_pixels`` for checking).
    seg_coseg.context: ReCo's language-guided co-segmentation and context elimination (``saliency_weights``,
        ``context_weights``, ``CoSegConfig``, ``reference_embeddings``) and the ``seg_core.CoSegmenter``
        ``ReferenceCoSegmenter``.
    seg_coseg.saliency: ZUTIS's pseudo-masks from a training-free saliency detector: the normalised-cut
        bipartition of dense patch features (TokenCut family; ``spectral_bipartition``, ``saliency_masks``), the
        ``SaliencyDetector`` protocol with ``SpectralSaliency`` on a caller's feature extractor, and ``mask_iou``.
    seg_coseg.copy_paste: ZUTIS's copy-paste synthesis of multi-object training images with semantic and instance
        labels (``CopyPasteConfig``, ``sample_sources``, ``augment_source``, ``compose``, ``copy_paste``).

Skeleton modules (they exist so the package map is complete and export nothing until the issue named beside
them lands; see docs/architecture.md): none at present.

Submodules are not imported here, so ``import seg_coseg`` stays light (no torch).
"""

from seg_coseg.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = ()

__all__ = ["SKELETON_MODULES", "__version__"]
