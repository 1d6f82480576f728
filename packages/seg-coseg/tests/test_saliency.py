"""Spectral saliency: synthetic blobs, the generalised eigenproblem by hand and with numpy, upsampling, IoU, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_coseg.saliency import (
    SaliencyDetector,
    SpectralSaliency,
    colour_features,
    concat_features,
    mask_iou,
    saliency_masks,
    spectral_bipartition,
)


def _blob_world(
    height: int, width: int, box: tuple[int, int, int, int], *, seed: int, channels: int = 16, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, h, w]`` features: one vector on the ``box`` (top, left, height, width), an orthogonal one elsewhere,
    plus Gaussian noise; and the ``[h, w]`` bool ground truth of the box."""
    generator = torch.Generator().manual_seed(seed)
    blob, background = torch.zeros(channels), torch.zeros(channels)
    blob[0], background[1] = 1.0, 1.0
    truth = torch.zeros(height, width, dtype=torch.bool)
    top, left, box_h, box_w = box
    truth[top : top + box_h, left : left + box_w] = True
    features = torch.where(truth[None], blob[:, None, None], background[:, None, None])
    return features + noise * torch.randn(channels, height, width, generator=generator), truth


def _naive_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    inter = sum(bool(p) and bool(t) for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True))
    union = sum(bool(p) or bool(t) for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True))
    return inter / union


BLOBS = {
    "centre": (16, 16, (5, 5, 6, 6)),
    "off-centre": (16, 16, (1, 8, 5, 6)),
    "corner": (16, 16, (0, 0, 5, 5)),
    "touching an edge": (16, 16, (4, 0, 6, 6)),
    "rectangular grid": (12, 20, (3, 4, 6, 10)),
}


@pytest.mark.parametrize("rule", ["less_border", "max_abs", "smaller"])
@pytest.mark.parametrize("case", list(BLOBS))
def test_small_blob_is_recovered_by_every_rule(case: str, rule: str) -> None:
    height, width, box = BLOBS[case]
    for seed in range(2):
        features, truth = _blob_world(height, width, box, seed=seed)
        result = spectral_bipartition(features, foreground_rule=rule)  # type: ignore[arg-type]
        assert result.mask.shape == (height, width)
        assert result.mask.dtype == torch.bool
        assert _naive_iou(result.mask, truth) > 0.9
        # The score is oriented so that the foreground lies above its mean.
        assert torch.equal(result.mask, result.score > result.score.mean())


def test_large_blob_needs_the_border_rule() -> None:
    """An object covering most of the grid (a close-up): only "less_border" (the default) picks it."""
    features, truth = _blob_world(16, 16, (2, 2, 12, 12), seed=0)
    assert _naive_iou(spectral_bipartition(features).mask, truth) > 0.9
    for rule in ("max_abs", "smaller"):
        mask = spectral_bipartition(features, foreground_rule=rule).mask
        assert _naive_iou(mask, ~truth) > 0.9  # the background, i.e. the smaller side


def test_background_touching_the_border_everywhere_is_background() -> None:
    """A large off-centre object touching the top edge: the border-wrapping background is still background."""
    features, truth = _blob_world(16, 16, (0, 1, 13, 12), seed=3)
    mask = spectral_bipartition(features).mask
    assert _naive_iou(mask, truth) > 0.9
    ring = torch.ones(16, 16, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert int((mask & ring).sum()) < int((~mask & ring).sum())


def test_batch_is_per_sample() -> None:
    first, truth_first = _blob_world(10, 10, (1, 1, 4, 4), seed=0)
    second, truth_second = _blob_world(10, 10, (5, 4, 4, 5), seed=1)
    batched = spectral_bipartition(torch.stack([first, second]))
    assert batched.mask.shape == (2, 10, 10)
    assert batched.score.shape == (2, 10, 10)
    assert batched.eigenvalue.shape == (2,)
    for i, (single, truth) in enumerate(((first, truth_first), (second, truth_second))):
        alone = spectral_bipartition(single)
        assert torch.equal(batched.mask[i], alone.mask)
        torch.testing.assert_close(batched.score[i], alone.score)
        torch.testing.assert_close(batched.eigenvalue[i], alone.eigenvalue)
        assert _naive_iou(batched.mask[i], truth) > 0.9


def test_two_cluster_graph_by_hand() -> None:
    """2x2 patches (1,0) (1,0) / (0,1) (0.6,0.8), tau 0.7: W = [[1,1,e,e],[1,1,e,e],[e,e,1,1],[e,e,1,1]].

    D = (2 + 2e) I. y = (1, 1, -1, -1): (D - W) y = 4e · y, so λ = 4e / (2 + 2e) = 2e / (1 + e); the other
    non-zero eigenvectors (1, -1, 0, 0), (0, 0, 1, -1) have λ = 1.
    """
    eps = 1e-3
    features = torch.tensor([[1.0, 1.0, 0.0, 0.6], [0.0, 0.0, 1.0, 0.8]]).reshape(2, 2, 2)
    result = spectral_bipartition(features.double(), tau=0.7, eps=eps, foreground_rule="max_abs")
    assert result.score.dtype == torch.float64
    assert math.isclose(float(result.eigenvalue), 2 * eps / (1 + eps), rel_tol=1e-9)
    direction = result.score.flatten() / result.score.flatten().norm()
    expected = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64) / 2
    assert math.isclose(abs(float(direction @ expected)), 1.0, rel_tol=1e-9)
    # Equal sizes and equal |y| everywhere: either side may be the foreground, but the cut is {0, 1} | {2, 3}.
    assert result.mask.flatten().tolist() in ([True, True, False, False], [False, False, True, True])
    assert torch.equal(result.mask, result.score > result.score.mean())
    weights = torch.tensor(
        [[1, 1, eps, eps], [1, 1, eps, eps], [eps, eps, 1, 1], [eps, eps, 1, 1]], dtype=torch.float64
    )
    degree = torch.diag(weights.sum(dim=1))
    y = result.score.flatten()
    torch.testing.assert_close((degree - weights) @ y, float(result.eigenvalue) * degree @ y)


def test_generalised_eigenproblem_against_numpy() -> None:
    """Random 3x4 features: the returned (λ, y) is the second smallest pair of D^{-1}(D - W) (numpy, unsymmetric)."""
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    tau, eps = 0.1, 0.05
    result = spectral_bipartition(features, tau=tau, eps=eps)

    flat = features.reshape(5, 12).numpy()
    flat = flat / np.linalg.norm(flat, axis=0, keepdims=True)
    cosine = flat.T @ flat
    weights = np.where(cosine >= tau, 1.0, eps)
    degree = np.diag(weights.sum(axis=1))
    values, vectors = np.linalg.eig(np.linalg.solve(degree, degree - weights))
    order = np.argsort(values.real)
    assert abs(values[order[0]].real) < 1e-10
    second, vector = values[order[1]].real, vectors[:, order[1]].real
    assert values[order[2]].real - second > 1e-3  # a simple eigenvalue, so the eigenvector is unique up to scale
    assert math.isclose(float(result.eigenvalue), second, rel_tol=1e-8)
    y = result.score.flatten().numpy()
    cos = abs(float(y @ vector)) / (np.linalg.norm(y) * np.linalg.norm(vector))
    assert math.isclose(cos, 1.0, rel_tol=1e-8)
    np.testing.assert_allclose((degree - weights) @ y, second * degree @ y, atol=1e-10)


def test_saliency_masks_upsampling() -> None:
    features, truth = _blob_world(6, 6, (1, 2, 3, 3), seed=0)
    patches = spectral_bipartition(features).mask
    assert torch.equal(patches, truth)
    nearest = saliency_masks(features, (18, 18), upsample="nearest")
    assert torch.equal(nearest, patches.repeat_interleave(3, 0).repeat_interleave(3, 1))
    bilinear = saliency_masks(features[None], (18, 18))
    assert bilinear.shape == (1, 18, 18)
    assert bilinear.dtype == torch.bool
    # align_corners=False with a factor of 3: pixel 3k + 1 sits on the centre of patch k.
    assert torch.equal(bilinear[0, 1::3, 1::3], patches)
    # Bilinear on the 0/1 mask keeps edges midway between patch centres: only the 4 corners of the block differ.
    assert int((bilinear[0] ^ nearest).sum()) == 4


def _colour_square(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(batch, 3, 32, 32)
    truth = torch.zeros(batch, 32, 32, dtype=torch.bool)
    images[:, 2] = 1.0  # blue background
    for i in range(batch):
        top, left = 4 + 8 * i, 8
        truth[i, top : top + 12, left : left + 16] = True
    images[:, 0][truth] = 1.0  # red square
    images[:, 2][truth] = 0.0
    return images, truth


def test_spectral_saliency_detector() -> None:
    images, truth = _colour_square(2)
    detector = SpectralSaliency(lambda x: F.avg_pool2d(x, 4))
    assert isinstance(detector, SaliencyDetector)
    masks = detector.masks(images)
    assert masks.shape == (2, 32, 32)
    assert masks.dtype == torch.bool
    assert bool((mask_iou(masks, truth) > 0.9).all())


def test_mask_iou_by_hand() -> None:
    pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[1, 0, 1, 0]]], dtype=torch.bool)
    target = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 0, 0]], [[1, 1, 1, 1]]], dtype=torch.bool)
    # 1/3, empty union -> 1, 2/4.
    torch.testing.assert_close(mask_iou(pred, target), torch.tensor([1 / 3, 1.0, 0.5]))
    ignore = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 1, 1]], [[0, 1, 0, 1]]], dtype=torch.bool)
    # Without pixel 0 (in both masks): 0/2; all ignored -> 1; without pixels 1 and 3: 2/2.
    torch.testing.assert_close(mask_iou(pred, target, ignore), torch.tensor([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: spectral_bipartition(torch.randn(4, 4)), ValueError, "features must be"),
        (lambda: spectral_bipartition(torch.ones(1, 2, 3, 3, dtype=torch.int64)), TypeError, "features must be float"),
        (lambda: spectral_bipartition(torch.randn(3, 1, 1)), ValueError, "two patches"),
        (lambda: spectral_bipartition(torch.full((2, 3, 3), math.nan)), ValueError, "NaN"),
        (lambda: spectral_bipartition(torch.randn(2, 3, 3), tau=1.5), ValueError, "tau"),
        (lambda: spectral_bipartition(torch.randn(2, 3, 3), eps=0.0), ValueError, "eps"),
        (
            lambda: spectral_bipartition(torch.randn(2, 3, 3), foreground_rule="largest"),  # type: ignore[arg-type]
            ValueError,
            "foreground_rule",
        ),
        (lambda: saliency_masks(torch.randn(2, 3, 3), (0, 4)), ValueError, "image_size"),
        (
            lambda: saliency_masks(torch.randn(2, 3, 3), (4, 4), upsample="cubic"),  # type: ignore[arg-type]
            ValueError,
            "upsample",
        ),
        (lambda: SpectralSaliency(lambda x: x, tau=-2.0), ValueError, "tau"),
        (lambda: SpectralSaliency(lambda x: x).masks(torch.rand(1, 1, 8, 8)), ValueError, "images must be"),
        (lambda: SpectralSaliency(lambda x: x).masks(torch.rand(1, 3, 8, 8) * 255), ValueError, r"\[0, 1\]"),
        (lambda: SpectralSaliency(lambda x: x[0]).masks(torch.rand(1, 3, 8, 8)), ValueError, "feature_fn must"),
        (lambda: mask_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)), TypeError, "pred"),
        (
            lambda: mask_iou(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(1, 2, 3, dtype=torch.bool)),
            ValueError,
            "target",
        ),
    ],
)
def test_errors_name_the_argument(call: object, error: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()


def test_colour_features_are_centred_block_means() -> None:
    images = torch.zeros(1, 3, 4, 4)
    images[0, 0, :2, :2] = 1.0  # red top-left 2x2 block
    features = colour_features(images, cell=2)
    assert features.shape == (1, 3, 2, 2)
    # block means of channel 0: [[1, 0], [0, 0]], centred by their mean 0.25
    assert torch.allclose(features[0, 0], torch.tensor([[0.75, -0.25], [-0.25, -0.25]]))
    assert torch.allclose(features[0, 1:], torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="cell"):
        colour_features(images, cell=0)
    with pytest.raises(ValueError, match="smaller than one 8-pixel cell"):
        colour_features(images, cell=8)


def test_concat_features_weights_the_cosine_of_each_cue() -> None:
    first = torch.randn(2, 5, 3, 3)
    second = torch.randn(2, 2, 6, 6)
    weight = 2.0
    joint = concat_features([first, second], [1.0, weight])
    assert joint.shape == (2, 7, 3, 3)
    resized = torch.nn.functional.interpolate(second, size=(3, 3), mode="bilinear", align_corners=False)
    a = torch.nn.functional.normalize(first, dim=1)
    b = torch.nn.functional.normalize(resized, dim=1)
    # inner product of two locations of the concatenation = cos_1 + w^2 cos_2
    expected = (a[0, :, 0, 0] * a[0, :, 1, 2]).sum() + weight**2 * (b[0, :, 0, 0] * b[0, :, 1, 2]).sum()
    assert torch.allclose((joint[0, :, 0, 0] * joint[0, :, 1, 2]).sum(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        concat_features([first, second], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        concat_features([])
