"""Tensor bundles and Protocols (torch is an optional dependency of seg-core)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from seg_core import (
    ConceptSet,
    CoSegmenter,
    ImageTextEncoder,
    InstancePredictions,
    MaskRefiner,
    Retriever,
    SegmentationOutput,
    Segmenter,
)

torch = pytest.importorskip("torch")


def test_segmentation_output_argmax_and_probabilities() -> None:
    logits = torch.zeros(2, 3, 4, 5)
    logits[:, 2, :, :2] = 5.0
    out = SegmentationOutput(logits=logits, label_names=("a", "b", "c"))
    labels = out.labels
    assert labels.shape == (2, 4, 5)
    assert (labels[:, :, :2] == 2).all()
    assert (labels[:, :, 2:] == 0).all()
    assert torch.allclose(out.probabilities.sum(1), torch.ones(2, 4, 5))
    explicit = SegmentationOutput(logits=logits, label_names=("a", "b", "c"), label_map=torch.ones(2, 4, 5).long())
    assert (explicit.labels == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logits": torch.zeros(3, 4, 5), "label_names": ("a",)}, r"\[B, C, H, W\]"),
        ({"logits": torch.zeros(1, 2, 4, 5), "label_names": ("a",)}, "2 channels but 1 label"),
        ({"logits": torch.zeros(1, 1, 4, 5), "label_names": ("a",), "label_map": torch.zeros(1, 4, 4)}, "label_map"),
        ({"logits": torch.zeros(2, 1, 4, 5), "label_names": ("a",), "instances": ()}, "one entry per image"),
    ],
)
def test_segmentation_output_rejects_bad_shapes(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentationOutput(**kwargs)  # type: ignore[arg-type]


def test_instance_predictions() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    inst = InstancePredictions(masks=masks, scores=torch.ones(3), labels=torch.zeros(3))
    assert len(inst) == 3
    with pytest.raises(ValueError, match="N=3"):
        InstancePredictions(masks=torch.zeros(3, 4, 4), scores=torch.ones(2), labels=torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        InstancePredictions(masks=torch.zeros(4, 4), scores=torch.ones(4), labels=torch.zeros(4))


class _Encoder:
    embed_dim = 4

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :4]

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.ones(len(texts), 4)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :1].expand(-1, 4, -1, -1)


class _Segmenter:
    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        b, _, h, w = images.shape
        return SegmentationOutput(torch.zeros(b, concepts.num_labels, h, w), concepts.label_names)


def test_protocols_are_structural() -> None:
    assert isinstance(_Encoder(), ImageTextEncoder)
    assert isinstance(_Segmenter(), Segmenter)
    assert not isinstance(_Segmenter(), ImageTextEncoder)
    assert not isinstance(object(), Retriever)
    assert not isinstance(object(), CoSegmenter)
    assert not isinstance(object(), MaskRefiner)
    out = _Segmenter().segment(torch.zeros(1, 3, 8, 8), ConceptSet.from_names("cow, sky"))
    assert out.logits.shape == (1, 2, 8, 8)


def test_seg_core_does_not_import_torch() -> None:
    code = "import sys, seg_core; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
