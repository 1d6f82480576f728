"""seg-coseg: Co-segmentation, saliency pseudo-masks and copy-paste synthesis for seg.

Status: skeleton. The modules below exist so the package map is complete and installable; each is empty until
the issue named beside it lands (see docs/architecture.md):

    seg_coseg.seeds: Seed pixels and reference embeddings, computed block by block without the k·h·w square
        adjacency (ReCo issue).
    seg_coseg.context: Context elimination (ReCo) (ReCo issue).
    seg_coseg.saliency: Training-free saliency pseudo-masks (spectral bipartition of patch affinities) (ZUTIS
        issue).
    seg_coseg.copy_paste: Copy-paste synthesis of multi-object training images with instance ids (ZUTIS issue).
"""

from seg_coseg.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = (
    "seeds",
    "context",
    "saliency",
    "copy_paste",
)

__all__ = ["SKELETON_MODULES", "__version__"]
