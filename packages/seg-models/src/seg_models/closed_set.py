"""Trained segmenters over a fixed label set (ReCo+, the ReCLIP++ student, NamedMask-style models) as Segmenters.

A network trained on pseudo-labels (``images -> [B, L, h, w]`` logits over its ``L`` training labels) answers only
for those labels. :class:`ClosedSetSegmenter` makes it a :class:`seg_core.Segmenter`: it normalises the pixels, runs
whole or sliding-window inference under the preset, and returns the channels of the concepts asked for, in the
concept set's order. A concept the network was not trained on is a :class:`seg_core.ConfigError` naming it and the
labels the network knows; background follows the concept set's policy (a trained background label under
``BackgroundClass``; a threshold on the softmax over the asked concepts under ``BackgroundThreshold``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seg_core import ConceptSet, ConfigError, MaskRefiner, Normalization, ProtocolPreset, SegmentationOutput
from seg_models.inference import (
    check_pixel_images,
    infer,
    normalize_images,
    refine_output,
    segmentation_from_similarities,
)
from seg_models.refiners import make_refiner

__all__ = ["ClosedSetSegmenter"]


class ClosedSetSegmenter:
    """A network over fixed labels as a :class:`seg_core.Segmenter`.

    Args:
        network: ``[B, 3, H, W]`` normalised images -> ``[B, L, h, w]`` logits (any ``h, w``; upsampled here).
        label_names: The ``L`` labels, in the network's channel order.
        normalization: Pixel normalisation the network was trained with.
        preset: Resize rule, whole or sliding-window inference, refinement. ``None``: whole image at input size.
        refiner: A :class:`seg_core.MaskRefiner`; ``None`` takes the preset's ``refinement``.
    """

    def __init__(
        self,
        network: nn.Module,
        label_names: Sequence[str],
        normalization: Normalization,
        preset: ProtocolPreset | None = None,
        *,
        refiner: MaskRefiner | None = None,
    ) -> None:
        if len(set(label_names)) != len(label_names) or not label_names:
            raise ValueError(f"label_names must be unique and non-empty, got {list(label_names)}")
        self.network = network.eval()
        self.label_names = tuple(label_names)
        self.normalization = normalization
        self.preset = (
            preset if preset is not None else ProtocolPreset(name="closed-set-whole", normalization=normalization)
        )
        self.refiner = refiner if refiner is not None else make_refiner(self.preset.refinement)

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters."""
        return next(self.network.parameters()).device

    def channels_for(self, concepts: ConceptSet) -> list[int]:
        """Network channels of the concept set's text labels (background first under ``BackgroundClass``)."""
        background = concepts.background
        wanted = list(concepts.names)
        if background.kind == "class":
            wanted = [name for name in background.names if name in self.label_names][:1] + wanted
            if len(wanted) == len(concepts.names):
                raise ConfigError(
                    f"concepts.background: none of the background names {list(background.names)} is a label of this "
                    f"model ({', '.join(self.label_names)}); use a threshold background instead"
                )
        missing = [name for name in wanted if name not in self.label_names]
        if missing:
            raise ConfigError(
                f"concepts: this model was trained on a fixed label set and cannot segment {missing}; its labels are "
                f"{', '.join(self.label_names)}. Retrain it on pseudo-labels that include them, or use an "
                "open-vocabulary method (maskclip, reco)"
            )
        return [self.label_names.index(name) for name in wanted]

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1]; logits are the network's, restricted to the asked labels, at input size."""
        check_pixel_images(images)
        channels = self.channels_for(concepts)
        images = images.to(self.device).float()
        normalized = normalize_images(images, self.normalization.mean, self.normalization.std)
        index = torch.tensor(channels, device=images.device)

        def logits_fn(batch: Tensor) -> Tensor:
            logits: Tensor = self.network(batch)
            return logits.float().index_select(1, index)

        logits = infer(logits_fn, normalized, self.preset)
        if concepts.background.kind == "threshold":
            # Threshold the softmax over the asked concepts (the only score a closed-set network has).
            threshold = concepts.background.model_copy(update={"score": "probability"})
            concepts = concepts.model_copy(update={"background": threshold})
        output = segmentation_from_similarities(logits, concepts, logit_scale=None)
        return refine_output(output, images, self.preset, self.refiner)
