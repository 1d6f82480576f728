"""Typed tensor bundles returned by segmenters (tensors never go inside pydantic models).

Frozen dataclasses in the spirit of transformers' ``ModelOutput``: named fields with documented shapes, checked
when built. torch is imported only for type checking, so seg-core stays importable without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["InstancePredictions", "SegmentationOutput"]


@dataclass(frozen=True, eq=False)
class InstancePredictions:
    """Instance masks of one image.

    Attributes:
        masks: ``[N, H, W]`` bool masks.
        scores: ``[N]`` confidences in [0, 1].
        labels: ``[N]`` int64 label ids into the segmentation's ``label_names``.
    """

    masks: Tensor
    scores: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {tuple(self.masks.shape)}")
        n = self.masks.shape[0]
        if tuple(self.scores.shape) != (n,) or tuple(self.labels.shape) != (n,):
            raise ValueError(
                f"scores and labels must be [N] with N={n} masks; got {tuple(self.scores.shape)} and "
                f"{tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True, eq=False)
class SegmentationOutput:
    """What a :class:`~seg_core.protocols.Segmenter` returns for a batch.

    Attributes:
        logits: ``[B, C, H, W]`` unnormalised class scores at the input resolution, one channel per label.
        label_names: The ``C`` label names in channel order (background first when the concept set has one).
        label_map: ``[B, H, W]`` int64 labels when the method decides them other than by argmax (e.g. a
            background threshold); ``None`` means argmax of ``logits``.
        instances: Per-image instance predictions, for instance-aware methods (ZUTIS).
    """

    logits: Tensor
    label_names: tuple[str, ...]
    label_map: Tensor | None = None
    instances: tuple[InstancePredictions, ...] | None = None

    def __post_init__(self) -> None:
        if self.logits.ndim != 4:
            raise ValueError(f"logits must be [B, C, H, W], got shape {tuple(self.logits.shape)}")
        batch, channels, height, width = (int(v) for v in self.logits.shape)
        if channels != len(self.label_names):
            raise ValueError(f"logits have {channels} channels but {len(self.label_names)} label names were given")
        if self.label_map is not None and tuple(self.label_map.shape) != (batch, height, width):
            raise ValueError(
                f"label_map must be [B, H, W] = {(batch, height, width)}, got {tuple(self.label_map.shape)}"
            )
        if self.instances is not None and len(self.instances) != batch:
            raise ValueError(f"instances must hold one entry per image ({batch}), got {len(self.instances)}")

    @property
    def probabilities(self) -> Tensor:
        """``[B, C, H, W]`` softmax of the logits over classes."""
        return self.logits.softmax(dim=1)

    @property
    def labels(self) -> Tensor:
        """``[B, H, W]`` int64 label map: :attr:`label_map` if given, else argmax of the logits."""
        if self.label_map is not None:
            return self.label_map
        return self.logits.argmax(dim=1)
