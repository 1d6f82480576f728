"""ReCo seed pixels and reference embeddings: block-wise == full matrix == hand computation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from seg_coseg.seeds import (
    DEFAULT_BLOCK_COLUMNS,
    SeedPixels,
    default_block_size,
    naive_seed_pixels,
    reference_embedding,
    seed_pixels,
)


def _loop_support(features: torch.Tensor, weights: torch.Tensor | None, *, include_self: bool) -> torch.Tensor:
    """Support by explicit Python loops over images and pixels (the definition, written out), ``[K, h*w]``."""
    num_images, channels = features.shape[:2]
    flat = features.reshape(num_images, channels, -1).double()
    flat = flat / flat.norm(dim=1, keepdim=True)
    gate = (
        torch.ones(num_images, flat.shape[2], dtype=torch.float64)
        if weights is None
        else weights.reshape(num_images, -1).double()
    )
    pixels = flat.shape[2]
    support = torch.zeros(num_images, pixels, dtype=torch.float64)
    for j in range(num_images):
        for p in range(pixels):
            total, count = 0.0, 0
            for i in range(num_images):
                if i == j and not include_self:
                    continue
                best = max(float(gate[i, q] * flat[j, :, p].dot(flat[i, :, q])) for q in range(pixels))
                total, count = total + best, count + 1
            support[j, p] = total / count
    return support


def _two_images(scale_first: float = 1.0) -> torch.Tensor:
    """K=2, D=2, 1x2 grids: image 0 = [(1, 0), (0.6, 0.8)], image 1 = [(0.8, 0.6), (0, 1)] -> [2, 2, 1, 2]."""
    image0 = torch.tensor([[1.0 * scale_first, 0.6], [0.0, 0.8]])  # [D, pixels]
    image1 = torch.tensor([[0.8, 0.0], [0.6, 1.0]]) * 3.0  # any scale: features are L2-normalised inside
    return torch.stack([image0, image1]).reshape(2, 2, 1, 2)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("block_size", [1, 2, 3, 4, 5, 7, None])
def test_blockwise_equals_full_matrix(weighted: bool, include_self: bool, block_size: int | None) -> None:
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(5, 8, 3, 4, generator=generator)
    weights = torch.rand(5, 3, 4, generator=generator) if weighted else None
    got = seed_pixels(features, weights, include_self=include_self, block_size=block_size)
    expected = naive_seed_pixels(features, weights, include_self=include_self)
    assert torch.equal(got.indices, expected.indices)
    torch.testing.assert_close(got.support, expected.support, atol=1e-5, rtol=0)
    assert got.support.shape == (5, 12)
    assert got.grid == (3, 4)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("include_self", [True, False])
def test_both_match_the_definition_written_as_loops(weighted: bool, include_self: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(3, 4, 2, 3, generator=generator)
    weights = torch.rand(3, 2, 3, generator=generator) if weighted else None
    expected = _loop_support(features, weights, include_self=include_self)
    for result in (
        seed_pixels(features, weights, include_self=include_self, block_size=2),
        naive_seed_pixels(features, weights, include_self=include_self),
    ):
        torch.testing.assert_close(result.support.double(), expected, atol=1e-6, rtol=0)
        assert torch.equal(result.indices, expected.argmax(dim=1))


@pytest.mark.parametrize("run", [seed_pixels, naive_seed_pixels])
def test_hand_computed_two_images(run: Callable[..., SeedPixels]) -> None:
    # Dots: p0·q0 = 0.8, p0·q1 = 0, p1·q0 = 0.96, p1·q1 = 0.8, p0·p1 = q0·q1 = 0.6.
    features = _two_images(scale_first=3.0)
    with_self = run(features)
    torch.testing.assert_close(with_self.support, torch.tensor([[0.9, 0.98], [0.98, 0.9]]))
    assert with_self.indices.tolist() == [1, 0]
    others = run(features, include_self=False)
    torch.testing.assert_close(others.support, torch.tensor([[0.8, 0.96], [0.96, 0.8]]))
    assert others.indices.tolist() == [1, 0]
    # Column weights: image 0 pixels (1, 0.5), image 1 pixels (0.25, 0.9).
    weights = torch.tensor([[1.0, 0.5], [0.25, 0.9]]).reshape(2, 1, 2)
    gated = run(features, weights, include_self=False)
    # p0: max(0.25·0.8, 0.9·0) = 0.2; p1: max(0.25·0.96, 0.9·0.8) = 0.72; q0: max(1·0.8, 0.5·0.96) = 0.8;
    # q1: max(1·0, 0.5·0.8) = 0.4.
    torch.testing.assert_close(gated.support, torch.tensor([[0.2, 0.72], [0.8, 0.4]]))
    gated_self = run(features, weights)
    # Own-image terms: p0 max(1·1, 0.5·0.6) = 1; p1 max(1·0.6, 0.5·1) = 0.6; q0 max(0.25·1, 0.9·0.6) = 0.54;
    # q1 max(0.25·0.6, 0.9·1) = 0.9.
    torch.testing.assert_close(gated_self.support, torch.tensor([[0.6, 0.66], [0.67, 0.65]]))
    assert gated_self.indices.tolist() == [1, 0]


def test_reference_embedding_by_hand() -> None:
    # Seeds p1 = (0.6, 0.8) and q0 = (0.8, 0.6): mean (0.7, 0.7), normalised (1/sqrt 2, 1/sqrt 2).
    features = _two_images(scale_first=2.0)
    expected = torch.full((2,), 1 / math.sqrt(2))
    torch.testing.assert_close(reference_embedding(features), expected)
    torch.testing.assert_close(reference_embedding(features, seeds=naive_seed_pixels(features)), expected)
    # Given seeds p0 = (1, 0) and q0 = (0.8, 0.6): the mean points along (1.8, 0.6).
    forced = SeedPixels(indices=torch.tensor([0, 0]), support=torch.zeros(2, 2), grid=(1, 2))
    direction = torch.tensor([1.8, 0.6])  # (1, 0) + (0.8, 0.6)
    torch.testing.assert_close(reference_embedding(features, seeds=forced), direction / direction.norm())


def test_reference_embedding_gradient_reaches_only_seed_features() -> None:
    features = _two_images().requires_grad_(True)
    # (The sum of a unit vector along (1, 1) is at its maximum, so its gradient is 0: take one component.)
    reference_embedding(features)[0].backward()
    assert features.grad is not None
    grad = features.grad.reshape(2, 2, 2)  # [K, D, pixels]
    assert grad[0, :, 0].abs().sum() == 0  # not a seed
    assert grad[1, :, 1].abs().sum() == 0  # not a seed
    assert grad[0, :, 1].abs().sum() > 0  # seed of image 0
    assert grad[1, :, 0].abs().sum() > 0  # seed of image 1


def test_support_carries_no_gradient() -> None:
    features = torch.randn(3, 4, 2, 2, requires_grad=True)
    assert not seed_pixels(features).support.requires_grad


def test_official_column_slicing_bug_gives_a_different_answer() -> None:
    """The official code takes image i's columns as [i·hw, (2i+1)·hw) (ReCo Alg. 1); we must not."""
    generator = torch.Generator().manual_seed(0)
    num_images, pixels = 4, 6
    features = torch.randn(num_images, 5, 2, 3, generator=generator)
    rows = torch.nn.functional.normalize(features.reshape(num_images, 5, pixels).transpose(1, 2).reshape(-1, 5), dim=1)
    adjacency = rows @ rows.T
    buggy_grid = torch.stack(
        [adjacency[:, i * pixels : i * pixels + (i + 1) * pixels].amax(dim=1) for i in range(num_images)], dim=1
    )
    buggy = buggy_grid.mean(dim=1).reshape(num_images, pixels)
    correct = _loop_support(features, None, include_self=True).float()
    ours = seed_pixels(features, block_size=3)
    torch.testing.assert_close(ours.support, correct, atol=1e-5, rtol=0)
    assert float((buggy - correct).abs().max()) > 0.05
    assert not torch.equal(buggy.argmax(dim=1), ours.indices)


def test_zero_weights_on_a_whole_image() -> None:
    features = _two_images()
    weights = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(2, 1, 2)
    result = seed_pixels(features, weights, include_self=False)
    # Image 0's pixels see only zero-weighted columns in image 1: best 0. Image 1's see image 0 at full weight.
    torch.testing.assert_close(result.support, torch.tensor([[0.0, 0.0], [0.96, 0.8]]))


def test_positions_and_default_block_size() -> None:
    seeds = SeedPixels(indices=torch.tensor([0, 5, 7]), support=torch.zeros(3, 8), grid=(2, 4))
    assert seeds.positions.tolist() == [[0, 0], [1, 1], [1, 3]]
    assert default_block_size(DEFAULT_BLOCK_COLUMNS // 2) == 2
    assert default_block_size(10 * DEFAULT_BLOCK_COLUMNS) == 1
    with pytest.raises(ValueError, match="pixels_per_image"):
        default_block_size(0)


@pytest.mark.parametrize(
    ("features", "weights", "kwargs", "error", "match"),
    [
        (torch.randn(2, 3, 4), None, {}, ValueError, r"features must be \[K, D, h, w\].*got shape \(2, 3, 4\)"),
        (torch.ones(2, 3, 2, 2, dtype=torch.int64), None, {}, TypeError, "floating-point.*int64"),
        (torch.randn(1, 3, 2, 2), None, {"include_self": False}, ValueError, "K >= 2.*K=1"),
        (torch.randn(2, 3, 2, 2), torch.rand(2, 2, 3), {}, ValueError, r"column_weights must be \[K, h, w\]"),
        (torch.randn(2, 3, 2, 2), torch.rand(2, 2), {}, ValueError, r"column_weights must be \[K, h, w\]"),
        (torch.randn(2, 3, 2, 2), -torch.rand(2, 2, 2) - 0.1, {}, ValueError, "column_weights must be >= 0"),
        (torch.randn(2, 3, 2, 2), None, {"block_size": 0}, ValueError, "block_size must be a positive int.*0"),
        (torch.randn(2, 3, 2, 2), None, {"block_size": True}, ValueError, "block_size.*True"),
        (torch.full((2, 3, 2, 2), float("nan")), None, {}, ValueError, "NaN"),
    ],
)
def test_bad_input_is_named(
    features: torch.Tensor, weights: torch.Tensor | None, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        seed_pixels(features, weights, **kwargs)  # type: ignore[arg-type]


def test_naive_validates_like_blockwise() -> None:
    with pytest.raises(ValueError, match="column_weights must be >= 0"):
        naive_seed_pixels(torch.randn(2, 3, 2, 2), -torch.ones(2, 2, 2))


def test_reference_embedding_rejects_mismatched_seeds() -> None:
    features = torch.randn(3, 4, 2, 2)
    seeds = seed_pixels(torch.randn(3, 4, 2, 3))
    with pytest.raises(ValueError, match="seeds were computed for 3 images on a \\(2, 3\\) grid"):
        reference_embedding(features, seeds=seeds)
    with pytest.raises(ValueError, match="either seeds or column_weights"):
        reference_embedding(features, torch.ones(3, 2, 2), seeds=seed_pixels(features))
