"""seg-retrieval: Embedding stores, faiss indexes and archive curation for seg.

Status: skeleton. The modules below exist so the package map is complete and installable; each is empty until
the issue named beside it lands (see docs/architecture.md):

    seg_retrieval.store: Resumable, sharded float16 embedding stores (memory-mapped on read) (ReCo issue).
    seg_retrieval.index: faiss indexes (flat, IVF-Flat, IVF-PQ, HNSW), CPU or GPU, save/load (ReCo issue).
    seg_retrieval.curate: Archive curation per concept and archive purity (precision@k) (ReCo issue).
    seg_retrieval.hypotheses: Image-level multi-label hypotheses from sliding crops scored by CLIP (ReCLIP++ issue).
"""

from seg_retrieval.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = (
    "store",
    "index",
    "curate",
    "hypotheses",
)

__all__ = ["SKELETON_MODULES", "__version__"]
