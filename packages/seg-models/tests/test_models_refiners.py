"""PAMR and the dense CRF: shapes, probabilities in, probabilities out, and sharper masks at image edges."""

from __future__ import annotations

import sys

import pytest
import torch

from seg_core import MaskRefiner
from seg_models.refiners import PAMR, DenseCRF, make_refiner, pamr, pamr_affinities

Scene = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _edge_scene(size: int = 32, edge: int = 16, blurred_edge: int = 21) -> Scene:
    """A dark left half and a bright right half; the mask of the right half is blurred and shifted right."""
    generator = torch.Generator().manual_seed(0)
    columns = torch.arange(size).float()
    image = torch.where(columns >= edge, 0.8, 0.2).expand(1, 3, size, size).clone()
    image = (image + 0.02 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    truth = (columns >= edge).expand(size, size)
    foreground = torch.sigmoid((columns - blurred_edge + 0.5) / 2.0).expand(1, 1, size, size)
    probabilities = torch.cat([1 - foreground, foreground], dim=1)
    return image, probabilities, truth


def _iou(probabilities: torch.Tensor, truth: torch.Tensor) -> float:
    predicted = probabilities.argmax(dim=1)[0] == 1
    return float((predicted & truth).sum() / (predicted | truth).sum())


def test_refiners_implement_the_protocol() -> None:
    assert isinstance(PAMR(), MaskRefiner)
    assert isinstance(DenseCRF(), MaskRefiner)
    assert isinstance(make_refiner("pamr"), PAMR)
    assert isinstance(make_refiner("crf"), DenseCRF)
    assert make_refiner("none") is None


def test_pamr_affinities_are_convex_weights() -> None:
    affinities = pamr_affinities(torch.rand(2, 3, 10, 12), (1, 2), 0.1)
    assert affinities.shape == (2, 16, 10, 12)
    torch.testing.assert_close(affinities.sum(dim=1), torch.ones(2, 10, 12))


def test_pamr_keeps_shape_sums_to_one_and_sharpens_a_blurred_edge() -> None:
    image, probabilities, truth = _edge_scene()
    refined = PAMR().refine(image, probabilities)
    assert refined.shape == probabilities.shape
    torch.testing.assert_close(refined.sum(dim=1), torch.ones(1, 32, 32))
    assert refined.min() >= 0
    before, after = _iou(probabilities, truth), _iou(refined, truth)
    assert before < 0.8
    assert after > before + 0.1


def test_pamr_on_a_flat_image_only_smooths() -> None:
    flat = torch.full((1, 3, 16, 16), 0.5)
    masks = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).softmax(dim=1)
    refined = pamr(flat, masks, iterations=20)
    # Uniform weights on a flat image: a local average, so the spread shrinks and values stay in range.
    assert refined.std(dim=(2, 3)).max() < 0.5 * masks.std(dim=(2, 3)).min()
    assert refined.amin(dim=(2, 3)).ge(masks.amin(dim=(2, 3))).all()
    assert refined.amax(dim=(2, 3)).le(masks.amax(dim=(2, 3))).all()


def test_pamr_resizes_the_image_to_the_masks() -> None:
    image, probabilities, _ = _edge_scene()
    low = torch.nn.functional.interpolate(probabilities, size=(16, 16), mode="bilinear")
    assert pamr(image, low).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="same B"):
        pamr(image.expand(2, -1, -1, -1), probabilities)


def test_dense_crf_keeps_shape_sums_to_one_and_sharpens_a_blurred_edge() -> None:
    image, probabilities, truth = _edge_scene(size=24, edge=12, blurred_edge=16)
    refined = DenseCRF().refine(image, probabilities)
    assert refined.shape == probabilities.shape
    assert refined.dtype == probabilities.dtype
    torch.testing.assert_close(refined.sum(dim=1), torch.ones(1, 24, 24), atol=1e-4, rtol=0)
    before, after = _iou(probabilities, truth), _iou(refined, truth)
    assert before < 0.8
    assert after > before + 0.1


def test_dense_crf_without_pydensecrf_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    image, probabilities, _ = _edge_scene(size=8, edge=4, blurred_edge=5)
    with pytest.raises(ImportError, match=r"pip install seg-models\[crf\]"):
        DenseCRF().refine(image, probabilities)
