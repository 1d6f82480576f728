"""seg-models: Backbones, dense CLIP and method architectures for seg.

Available modules:

    seg_models.clip: CLIP from open_clip (name/tag, ``hf-hub:``, ``local-dir:``) as a typed
        ``ImageTextEncoder`` (``ClipModel``, ``load_clip``), custom model configs (``register_model_config``,
        the synthetic CLIP's ``SYNTHETIC_CLIP_CONFIG``), prompt ensembling, the text-embedding cache and the
        text side of background policies (``ConceptEmbeddings``).
    seg_models.dense_clip: Dense CLIP features (the MaskCLIP value path; ``value`` and ``naive`` variants) for
        open_clip ViTs and ModifiedResNets at any input size, and image embeddings at any size.
    seg_models.inference: Resize rules, whole-image and sliding-window inference, resizing back to the original
        size (``infer``), and similarity maps -> ``SegmentationOutput`` under a background policy.
    seg_models.refiners: Mask refiners behind ``seg_core.MaskRefiner``: PAMR and the dense CRF (extra ``crf``).
    seg_models.maskclip: The MaskCLIP segmenter (baseline), ``MaskCLIPSegmenter`` and ``build_maskclip``.
    seg_models.reco: ReCo inference: the co-segmentation backbone (CLIP tower or timm), reference-embedding files,
        ``ReCoSegmenter`` (reference similarity x DenseCLIP saliency).
    seg_models.closed_set: A network trained over fixed labels (ReCo+, students) as a Segmenter
        (``ClosedSetSegmenter``).
    seg_models.deeplab: DeepLabv3+ on any timm CNN backbone (ASPP, stride-4 decoder, optional separable convs,
        OS 8/16): ``DeepLabConfig``, ``build_deeplab``, ``parameter_groups``, presets ``reco-plus-r101`` and
        ``synthetic-64``.
    seg_models.groupvit: GroupViT (model, the official inference rule, ``GroupViTSegmenter``), converters from the
        official ``.pth`` and transformers checkpoints, ``load_groupvit``/``save_groupvit``.
    seg_models.pgseg: PGSeg: GroupViT with PG units (I-NPR reconstruction, EM prototypes, T-NPR, momentum
        prototypes), ``PGSeg``, ``load_pgseg``/``save_pgseg``; segment with ``GroupViTSegmenter``.
    seg_models.zutis: ZUTIS: CLIP ViT fine-tuned into the text space plus a query decoder for instances
        (``ZUTIS``, ``ZUTISSegmenter``, ``predict_instances``, ``mask_nms``, ``save_zutis``/``load_zutis``).
    seg_models.proposals: Connected components per class as instance proposals (ZUTIS's MaskCLIP instance
        baseline): ``connected_components``, ``semantic_instances``, ``ComponentInstances``.
    seg_models.reclip: ReCLIP++: reference prompt, positional projection, rectified logits and mask decoder on a
        frozen CLIP (``ReCLIPRectifier``), the distillation student (``ReCLIPStudent``), ``ReCLIPSegmenter``,
        ``save_reclip``/``load_reclip``.
    seg_models.weights: ``export_state_dict``, the state dict every model folder stores (optionally fp16).

Submodules are not imported here, so ``import seg_models`` stays light (no torch, no open_clip).
"""

from seg_models.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = ()

__all__ = ["SKELETON_MODULES", "__version__"]
