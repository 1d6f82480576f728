"""seg-models: Backbones, dense CLIP and method architectures for seg.

Status: skeleton. The modules below exist so the package map is complete and installable; each is empty until
the issue named beside it lands (see docs/architecture.md):

    seg_models.clip: CLIP from open_clip (name/tag, ``hf-hub:``, ``local-dir:``), prompt ensembling, text cache
        (CLIP/MaskCLIP issue).
    seg_models.dense_clip: Dense CLIP features (the MaskCLIP value path) for open_clip ViTs and ModifiedResNets at
        any input size (CLIP/MaskCLIP issue).
    seg_models.inference: Whole-image and sliding-window inference, resizing back to the original size
        (CLIP/MaskCLIP issue).
    seg_models.refiners: Mask refiners behind one interface: PAMR and dense CRF (CLIP/MaskCLIP issue).
    seg_models.maskclip: The MaskCLIP segmenter (baseline) (CLIP/MaskCLIP issue).
    seg_models.groupvit: GroupViT: grouping stages, text transformer, converters for official and transformers
        checkpoints (GroupViT/PGSeg issue).
    seg_models.pgseg: PGSeg: GroupViT with prototype guidance and momentum prototypes (GroupViT/PGSeg issue).
    seg_models.reco: ReCo inference: DenseCLIP refinement, language-guided co-segmentation, context elimination
        (ReCo issue).
    seg_models.zutis: ZUTIS: text-aligned image encoder and query-based instance decoder (ZUTIS issue).
    seg_models.reclip: ReCLIP++: reference prompt, positional projection, mask decoder; student segmenter (ReCLIP++
        issue).
"""

from seg_models.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = (
    "clip",
    "dense_clip",
    "inference",
    "refiners",
    "maskclip",
    "groupvit",
    "pgseg",
    "reco",
    "zutis",
    "reclip",
)

__all__ = ["SKELETON_MODULES", "__version__"]
