"""seg-zoo: the seg model zoo: a registry keyed ``method-arch.tag``, Hugging Face Hub I/O with safetensors, and
the synthetic-world checkpoints of every method bundled in the wheel.

    import seg_zoo
    seg_zoo.list_models("reco*")
    segmenter = seg_zoo.load("reclip-deeplab-r18-tiny.synthetic")      # or "hf-hub:org/name@rev", "local-dir:PATH"
    seg_zoo.save_pretrained(segmenter, "out/")                          # model.safetensors, config.json, README.md
    seg_zoo.push_to_hub("runs/my-reclip", "my-org/reclip-synthetic", tag="v1")
    seg_zoo.push_retrieval_assets("runs/store", "my-org/world-embeddings", index="runs/index")  # a dataset repo
"""

from seg_zoo.__about__ import __version__
from seg_zoo.assets import pull_retrieval_assets, push_retrieval_assets, save_retrieval_assets
from seg_zoo.hub import (
    ResolvedModel,
    build_resolved,
    load,
    load_clip_model,
    pull,
    push_to_hub,
    resolve,
    save_pretrained,
)
from seg_zoo.registry import default_entry, entries, get_entry, list_models, register

__all__ = [
    "ResolvedModel",
    "__version__",
    "build_resolved",
    "default_entry",
    "entries",
    "get_entry",
    "list_models",
    "load",
    "load_clip_model",
    "pull",
    "pull_retrieval_assets",
    "push_retrieval_assets",
    "push_to_hub",
    "register",
    "resolve",
    "save_pretrained",
    "save_retrieval_assets",
]
