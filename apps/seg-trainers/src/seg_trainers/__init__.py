"""seg-trainers: Per-method training recipes of seg.

Available: ``clip`` (the reference synthetic-world CLIP recipe), ``reco`` (ReCo: retrieval + co-segmentation into
reference embeddings; ReCo+: a DeepLabv3+ trained on ReCo's pseudo-labels), ``groupvit`` (GroupViT with InfoNCE and
PGSeg with its PG losses, trained from scratch on the world's image-text pairs), ``simcon`` (the same models with
SimCon or MV-SimCon), ``zutis`` (ZUTIS: archives, saliency pseudo-masks, copy-paste, the text-aligned encoder and
the instance decoder) and ``reclip`` (ReCLIP++: multi-label hypotheses, bias rectification of a frozen CLIP,
distillation into a DeepLab student). No module is a skeleton any more; each came with its issue
(see docs/architecture.md):

    seg_trainers.clip: Training the reference synthetic-world CLIP from scratch (CLIP/MaskCLIP issue).
    seg_trainers.reco: ReCo and ReCo+ recipes, model folders and their loaders (ReCo issue).
    seg_trainers.groupvit: GroupViT and PGSeg recipes (GroupViT/PGSeg issue).
    seg_trainers.simcon: GroupViT or PGSeg trained with InfoNCE, SimCon or MV-SimCon (MV-SimCon issue: recipe
        available; its CLI, bundled model and study to come).
    seg_trainers.zutis: ZUTIS recipe (ZUTIS issue).
    seg_trainers.reclip: ReCLIP++ rectification and distillation recipe (ReCLIP++ issue).
"""

from seg_trainers.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = ()

__all__ = ["SKELETON_MODULES", "__version__"]
