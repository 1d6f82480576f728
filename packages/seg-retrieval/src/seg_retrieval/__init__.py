"""seg-retrieval: Embedding stores, faiss indexes and archive curation for seg.

Available modules:

    seg_retrieval.store: Resumable, sharded float16 embedding stores of an image collection, memory-mapped on read
        (``embed_collection``, ``EmbeddingStore``), split across ranks under ``torchrun``.
    seg_retrieval.index: faiss indexes (flat, IVF-Flat, IVF-PQ, HNSW) over stores or arrays, CPU or GPU, save/load
        (``IndexConfig``, ``build_index``, ``EmbeddingIndex``, a ``seg_core.Retriever``); faiss indexes built
        elsewhere, e.g. LAION's published knn indexes, used in place (``EmbeddingIndex.from_faiss``).
    seg_retrieval.curate: Per-concept archive curation with optional de-duplication (``curate_archive``), in
        resumable batches for thousands of concepts (``curate_archive_batched``), archive purity as precision@k
        (``archive_purity``), archive files (``save_archive``, ``load_archive``).
    seg_retrieval.laion: Embedding folders in clip-retrieval's layout (the published LAION-400M/5B CLIP embeddings:
        ``img_emb/*.npy`` + ``metadata/*.parquet``): write, read lazily (``ClipRetrievalStore``), import into a seg
        store (``import_clip_retrieval``), search a published faiss index over it (``open_clip_retrieval_index``);
        extra ``seg-retrieval[laion]`` (pyarrow).
    seg_retrieval.hypotheses: ReCLIP++'s image-level multi-label hypotheses from sliding crops scored by CLIP
        (Eq. 6; ``crop_windows``, ``multi_label_hypotheses``, ``Hypotheses``) and ReCLIP's whole-image baseline
        (``whole_image_hypotheses``, ``WholeImageHypotheses``).

No module is a skeleton any more (``SKELETON_MODULES`` is empty).

Submodules are not imported here, so ``import seg_retrieval`` stays light (no torch, no faiss).
"""

from seg_retrieval.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = ()

__all__ = ["SKELETON_MODULES", "__version__"]
