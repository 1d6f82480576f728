"""A fixed-label network as a Segmenter: channel selection, background policies, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg_core import (
    IMAGENET_MEAN_STD,
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ConfigError,
    Normalization,
    Segmenter,
)
from seg_models.closed_set import ClosedSetSegmenter

IDENTITY = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class _ChannelNet(nn.Module):
    """Logits = the three colour channels, at half resolution (so upsampling is exercised)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.avg_pool2d(images, 2)


def _images() -> torch.Tensor:
    images = torch.zeros(1, 3, 8, 8)
    images[0, 0, :, :4] = 0.9  # left half red
    images[0, 2, :, 4:] = 0.6  # right half blue (weaker)
    return images


def test_channels_follow_the_concept_order() -> None:
    segmenter = ClosedSetSegmenter(_ChannelNet(), ("red", "green", "blue"), IDENTITY)
    assert isinstance(segmenter, Segmenter)
    output = segmenter.segment(_images(), ConceptSet.from_names("blue, red"))
    assert output.label_names == ("blue", "red")
    labels = output.labels[0]
    assert (labels[:, :4] == 1).all()
    assert (labels[:, 4:] == 0).all()


def test_normalisation_is_applied() -> None:
    segmenter = ClosedSetSegmenter(_ChannelNet(), ("red", "green", "blue"), IMAGENET_MEAN_STD)
    logits = segmenter.segment(_images(), ConceptSet.from_names("red")).logits
    expected_red_left = (0.9 - 0.485) / 0.229
    assert float(logits[0, 0, 3, 1]) == pytest.approx(expected_red_left, rel=1e-5)


def test_unknown_concept_names_the_known_labels() -> None:
    segmenter = ClosedSetSegmenter(_ChannelNet(), ("red", "green", "blue"), IDENTITY)
    with pytest.raises(ConfigError, match=r"cannot segment \['cow'\].*red, green, blue"):
        segmenter.segment(_images(), ConceptSet.from_names("red, cow"))
    with pytest.raises(ConfigError, match="background names"):
        segmenter.segment(_images(), ConceptSet.from_names("red", background=BackgroundClass()))
    with pytest.raises(ValueError, match="unique"):
        ClosedSetSegmenter(_ChannelNet(), ("red", "red"), IDENTITY)


def test_background_class_and_threshold() -> None:
    segmenter = ClosedSetSegmenter(_ChannelNet(), ("red", "green", "blue"), IDENTITY)
    with_class = segmenter.segment(
        _images(), ConceptSet.from_names("red, blue", background=BackgroundClass(names=("green",)))
    )
    assert with_class.label_names == ("background", "red", "blue")
    assert (with_class.labels[0, :, :4] == 1).all()
    # softmax over (red, blue): left [0.9, 0] -> 0.71, right [0, 0.6] -> 0.65; threshold 0.68 keeps only the left.
    thresholded = segmenter.segment(
        _images(), ConceptSet.from_names("red, blue", background=BackgroundThreshold(threshold=0.68))
    )
    # (Away from the border column, where bilinear upsampling mixes the two halves.)
    assert (thresholded.labels[0, :, :3] == 1).all()
    assert (thresholded.labels[0, :, 5:] == 0).all()
