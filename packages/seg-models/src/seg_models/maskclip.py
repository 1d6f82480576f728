"""MaskCLIP: training-free dense prediction from a frozen CLIP (the baseline).

Zhou, Loy & Dai, "Extract Free Dense Labels from CLIP", ECCV 2022. Each location's dense CLIP feature (the value
path of the last layer, :mod:`seg_models.dense_clip`) is compared by cosine similarity with the prompt-ensembled
text embedding of every class (:mod:`seg_models.clip`); the per-pixel scores, upsampled to the image, are the
segmentation logits. No training, no key smoothing, no prompt denoising (both are off in the released configs).

Contents: the segmenter and its builder.
"""

from __future__ import annotations

import torch
from open_clip.modified_resnet import ModifiedResNet
from torch import Tensor

from seg_core import ConceptSet, MaskRefiner, ProtocolPreset, SegmentationOutput
from seg_models.clip import ClipModel, ConceptEmbeddings, load_clip
from seg_models.dense_clip import DENSE_VARIANTS, DenseVariant, dense_clip_features, feature_stride
from seg_models.inference import (
    check_pixel_images,
    infer,
    normalize_images,
    pad_to_multiple,
    refine_output,
    resize_logits,
    segmentation_from_similarities,
)
from seg_models.refiners import make_refiner

__all__ = ["MaskCLIPSegmenter", "build_maskclip"]


class MaskCLIPSegmenter:
    """MaskCLIP as a :class:`seg_core.Segmenter`.

    Args:
        clip: The CLIP model (:func:`seg_models.clip.load_clip`).
        preset: Resize rule, whole or sliding-window inference, pixel normalisation, optional logit scale and
            refinement. ``None``: whole-image inference at the input size with the model's own normalisation. The
            preset's ``class_names``, ``templates`` and ``background`` are not read here: they describe the concept
            set the evaluator builds and passes to :meth:`segment`.
        variant: Dense features: ``"maskclip"`` (value path with residual and MLP, the official code), ``"value"``
            (pure value embedding) or ``"naive"`` (unmodified last-block tokens; ViT only).
        refiner: A :class:`seg_core.MaskRefiner` applied to the probabilities; ``None`` takes the preset's
            ``refinement`` (``"none"``, ``"pamr"``, ``"crf"``).

    Attributes:
        clip, preset, variant, refiner: As given (``refiner`` resolved).
    """

    def __init__(
        self,
        clip: ClipModel,
        preset: ProtocolPreset | None = None,
        variant: DenseVariant = "maskclip",
        refiner: MaskRefiner | None = None,
    ) -> None:
        if variant not in DENSE_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(DENSE_VARIANTS)}, got {variant!r}")
        if variant == "naive" and isinstance(clip.visual, ModifiedResNet):
            raise ValueError("variant 'naive' needs a ViT CLIP; a ModifiedResNet has only the value path")
        self.clip = clip
        self.preset = (
            preset if preset is not None else ProtocolPreset(name="maskclip-whole", normalization=clip.normalization)
        )
        self.variant: DenseVariant = variant
        self.refiner = refiner if refiner is not None else make_refiner(self.preset.refinement)
        self._stride = feature_stride(clip.visual)

    def similarity_maps(self, images: Tensor, text: ConceptEmbeddings) -> Tensor:
        """Cosine similarity per text label of normalised images, at the images' resolution.

        The image is zero-padded to a multiple of the feature stride so feature cells line up with pixels, the
        similarities are bilinearly upsampled to the padded size and the padding is cut off.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            text: The concept set's text embeddings.

        Returns:
            ``[B, T, H, W]`` (``T = len(text.text_labels)``).
        """
        height, width = int(images.shape[-2]), int(images.shape[-1])
        padded = pad_to_multiple(images, self._stride)
        features = dense_clip_features(self.clip.visual, padded, variant=self.variant)
        similarities = text.similarities(features)
        upsampled = resize_logits(similarities.float(), (int(padded.shape[-2]), int(padded.shape[-1])))
        return upsampled[..., :height, :width]

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] into ``concepts.label_names``.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1], not normalised (normalised here with the preset's mean/std;
                refiners see the raw pixels).
            concepts: Classes, templates, synonyms and background policy.

        Returns:
            Logits ``[B, C, H, W]`` at the input resolution (with a centre-cropping preset: the
            :func:`seg_models.inference.center_crop_box` region), background first when the concept set has one.
        """
        check_pixel_images(images)
        device = self.clip.device
        images = images.to(device)
        text = self.clip.concept_embeddings(concepts)
        normalization = self.preset.normalization
        normalized = normalize_images(images.float(), normalization.mean, normalization.std)
        similarities = infer(lambda batch: self.similarity_maps(batch, text), normalized, self.preset)
        output = segmentation_from_similarities(similarities, concepts, logit_scale=self.preset.logit_scale)
        return refine_output(output, images, self.preset, self.refiner)


def build_maskclip(
    name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    *,
    preset: ProtocolPreset | None = None,
    variant: DenseVariant = "maskclip",
    device: str | torch.device = "cpu",
) -> MaskCLIPSegmenter:
    """Load a CLIP by name/tag, ``hf-hub:`` or ``local-dir:`` (see :func:`seg_models.clip.load_clip`) and wrap it.

    ``pretrained`` is ignored for ``hf-hub:``/``local-dir:`` names (their weights come from the source).
    """
    source_has_weights = name.startswith(("hf-hub:", "local-dir:"))
    clip = load_clip(name, None if source_has_weights else pretrained, device=device)
    return MaskCLIPSegmenter(clip, preset=preset, variant=variant)
