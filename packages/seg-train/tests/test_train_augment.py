"""Joint image/label augmentations: determinism, label integrity, geometry, padding, photometric values."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from seg_core import ConfigError
from seg_train.augment import (
    SegAugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_batch,
    augment_pair,
    blur_kernel_size,
    gaussian_blur,
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors on a busy shared 2-core machine: two intra-op threads spin against each other; one thread for
    these tests, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Geometry only: no flip, no jitter, no blur, fixed scale.
GEOMETRY: dict[str, Any] = {"hflip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pair(height: int = 16, width: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(1000 + seed)
    image = torch.rand(3, height, width, generator=g)
    label = torch.tensor([3, 7, 9])[torch.randint(0, 3, (height, width), generator=g)]
    return image, label


def test_defaults_are_the_reco_plus_recipe() -> None:
    config = SegAugmentConfig()
    assert config.crop_hw == (320, 320)
    assert config.scale_range == (0.5, 2.0)
    assert config.hflip_prob == 0.5
    assert (config.brightness, config.contrast, config.saturation, config.hue, config.jitter_prob) == (
        0.8,
        0.8,
        0.8,
        0.2,
        0.8,
    )
    assert config.blur_prob == 0.5
    assert config.blur_sigma == (0.1, 2.0)
    assert config.blur_kernel_fraction == 0.1
    assert config.ignore_index == 255
    assert config.pad_colour is None
    assert SegAugmentConfig(crop_size=(24, 40)).crop_hw == (24, 40)


def test_same_generator_seed_same_result() -> None:
    image, label = pair(20, 24)
    config = SegAugmentConfig(crop_size=16, blur_prob=1.0, jitter_prob=1.0)
    first = augment_pair(image, label, config, gen(5))
    second = augment_pair(image, label, config, gen(5))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    others = [augment_pair(image, label, config, gen(seed)) for seed in range(6, 10)]
    assert any(not torch.equal(first[0], other[0]) for other in others)
    # The generator advances: two calls in a row differ, and the input is left untouched.
    g = gen(5)
    a = augment_pair(image, label, config, g)
    b = augment_pair(image, label, config, g)
    assert not torch.equal(a[0], b[0])
    assert torch.equal(image, pair(20, 24)[0])


def test_labels_hold_only_input_values_or_ignore_index() -> None:
    image, label = pair(20, 20)
    for seed in range(30):
        config = SegAugmentConfig(crop_size=24, scale_range=(0.5, 2.0))
        _, out = augment_pair(image, label, config, gen(seed))
        assert out.dtype == torch.long
        assert set(out.unique().tolist()) <= {3, 7, 9, 255}


def test_label_nearest_resize_by_hand() -> None:
    image = torch.rand(3, 2, 2)
    label = torch.tensor([[1, 2], [3, 4]])
    config = SegAugmentConfig(crop_size=4, scale_range=(2.0, 2.0), **GEOMETRY)
    _, up = augment_pair(image, label, config, gen())
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # Halving 4 x 4 picks the source pixel whose centre is nearest: floor((i + 0.5) * 2) = rows/cols 1 and 3.
    label = torch.arange(16).view(4, 4)
    config = SegAugmentConfig(crop_size=2, scale_range=(0.5, 0.5), **GEOMETRY)
    _, down = augment_pair(torch.rand(3, 4, 4), label, config, gen())
    assert down.tolist() == [[5, 7], [13, 15]]


def test_flip_moves_image_and_label_together() -> None:
    image = torch.zeros(3, 5, 6)
    image[:, 2, 1] = torch.tensor([1.0, 0.5, 0.25])
    label = torch.zeros(5, 6, dtype=torch.long)
    label[2, 1] = 4
    config = SegAugmentConfig(crop_size=(5, 6), scale_range=(1.0, 1.0), **{**GEOMETRY, "hflip_prob": 1.0})
    out_image, out_label = augment_pair(image, label, config, gen())
    # Column 1 of 6 goes to column 6 - 1 - 1 = 4.
    assert out_image[:, 2, 4].tolist() == [1.0, 0.5, 0.25]
    assert out_image[:, 2, 1].abs().sum() == 0
    assert out_label[2, 4] == 4
    assert out_label[2, 1] == 0
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out_label, label.flip(-1))
    never = SegAugmentConfig(crop_size=(5, 6), scale_range=(1.0, 1.0), **GEOMETRY)
    same_image, same_label = augment_pair(image, label, never, gen())
    assert torch.equal(same_image, image)
    assert torch.equal(same_label, label)


@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.7, 0.9), (1.0, 1.0), (1.5, 2.0), (0.5, 2.0)])
@pytest.mark.parametrize("crop", [16, (12, 20)])
def test_crop_size_respected(scale: tuple[float, float], crop: int | tuple[int, int]) -> None:
    image, label = pair(16, 16)
    config = SegAugmentConfig(crop_size=crop, scale_range=scale)
    for seed in range(3):
        out_image, out_label = augment_pair(image, label, config, gen(seed))
        expected = (crop, crop) if isinstance(crop, int) else crop
        assert tuple(out_image.shape) == (3, *expected)
        assert tuple(out_label.shape) == expected


def test_upscaled_crop_is_a_window_of_the_scaled_image() -> None:
    # Scale 2 of a 4 x 4 label map (nearest: every value becomes a 2 x 2 block), crop 4 somewhere inside 8 x 8.
    label = torch.arange(16).view(4, 4)
    config = SegAugmentConfig(crop_size=4, scale_range=(2.0, 2.0), **GEOMETRY)
    scaled = label.repeat_interleave(2, 0).repeat_interleave(2, 1)
    windows = {tuple(scaled[t : t + 4, s : s + 4].flatten().tolist()) for t in range(5) for s in range(5)}
    offsets = set()
    for seed in range(20):
        _, out = augment_pair(torch.rand(3, 4, 4), label, config, gen(seed))
        assert tuple(out.flatten().tolist()) in windows
        offsets.add(tuple(out.flatten().tolist()))
    assert len(offsets) > 3  # the offset is random
    assert 255 not in torch.stack([augment_pair(torch.rand(3, 4, 4), label, config, gen(s))[1] for s in range(5)])


def test_padding_uses_the_image_mean_colour_and_ignore_index() -> None:
    # Left half 0, right half 1 in every channel: the halved 4 x 4 image is symmetric, so its mean is 0.5.
    image = torch.zeros(3, 8, 8)
    image[:, :, 4:] = 1.0
    label = torch.ones(8, 8, dtype=torch.long)
    config = SegAugmentConfig(crop_size=6, scale_range=(0.5, 0.5), **GEOMETRY)
    out_image, out_label = augment_pair(image, label, config, gen())
    # Scaled 8 -> 4 sits top-left (padding goes bottom/right and 6 - 6 leaves a single crop offset).
    assert out_label[:4, :4].eq(1).all()
    assert out_label[4:, :].eq(255).all()
    assert out_label[:, 4:].eq(255).all()
    assert out_image[:, 4:, :].sub(0.5).abs().max() < 1e-6
    assert out_image[:, :, 4:].sub(0.5).abs().max() < 1e-6
    assert out_image[:, :4, :4].mean().sub(0.5).abs() < 1e-6


def test_padding_with_a_fixed_colour() -> None:
    image, label = pair(4, 4)
    config = SegAugmentConfig(
        crop_size=6, scale_range=(1.0, 1.0), pad_colour=(0.1, 0.2, 0.3), ignore_index=99, **GEOMETRY
    )
    out_image, out_label = augment_pair(image, label, config, gen())
    assert torch.equal(out_image[:, :4, :4], image)
    assert torch.equal(out_label[:4, :4], label)
    assert torch.allclose(out_image[:, 5, 5], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out_image[:, 4:, :], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 2, 6))
    assert out_label[4:].eq(99).all()
    assert out_label[:, 4:].eq(99).all()


def test_jitter_keeps_image_in_unit_range() -> None:
    image, label = pair(12, 12)
    image[:, :3] = 1.0  # saturated and black regions: clamping matters there
    image[:, 3:6] = 0.0
    config = SegAugmentConfig(
        crop_size=12, scale_range=(1.0, 1.0), jitter_prob=1.0, brightness=3.0, contrast=3.0, saturation=3.0, hue=0.5
    )
    changed = 0
    for seed in range(20):
        out, _ = augment_pair(image, label, config, gen(seed))
        assert out.min() >= 0.0
        assert out.max() <= 1.0
        changed += int(not torch.allclose(out, image))
    assert changed >= 18


def test_photometric_operations_by_hand() -> None:
    image = torch.tensor([0.4, 0.8, 1.0]).view(3, 1, 1).expand(3, 2, 2).clone()
    image[:, 1, 1] = torch.tensor([0.0, 0.2, 0.0])
    assert torch.allclose(adjust_brightness(image, 0.5)[:, 0, 0], torch.tensor([0.2, 0.4, 0.5]))
    assert torch.allclose(adjust_brightness(image, 2.0)[:, 0, 0], torch.tensor([0.8, 1.0, 1.0]))  # clamped
    gray = 0.299 * 0.4 + 0.587 * 0.8 + 0.114 * 1.0  # 0.7022
    assert torch.allclose(adjust_saturation(image, 0.0)[:, 0, 0], torch.full((3,), gray))
    assert torch.allclose(adjust_saturation(image, 0.5)[:, 0, 0], 0.5 * image[:, 0, 0] + 0.5 * gray)
    mean_gray = (3 * gray + 0.587 * 0.2) / 4
    assert torch.allclose(adjust_contrast(image, 0.0), torch.full((3, 2, 2), mean_gray))
    assert torch.allclose(adjust_contrast(image, 1.0), image)


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (0.1, (1.0, 0.6, 0.0)),  # 36 degrees: sector 0, g = 1 - (1 - 0.6)
        (-0.1, (1.0, 0.0, 0.6)),  # 324 degrees: sector 5, b = 1 - 0.4
        (1 / 3, (0.0, 1.0, 0.0)),  # green
        (-1 / 3, (0.0, 0.0, 1.0)),  # blue
        (0.5, (0.0, 1.0, 1.0)),  # cyan
        (0.0, (1.0, 0.0, 0.0)),
    ],
)
def test_hue_rotation_of_pure_red(shift: float, expected: tuple[float, float, float]) -> None:
    red = torch.zeros(3, 2, 3)
    red[0] = 1.0
    out = adjust_hue(red, shift)
    assert torch.allclose(out, torch.tensor(expected).view(3, 1, 1).expand(3, 2, 3), atol=1e-6)


def test_hue_rotation_matches_colorsys() -> None:
    image = torch.rand(3, 6, 7, generator=gen(3))
    image[:, 0, 0] = 0.5  # grey: hue undefined, must stay grey
    shift = 0.23
    out = adjust_hue(image, shift)
    for i in range(6):
        for j in range(7):
            h, s, v = colorsys.rgb_to_hsv(*image[:, i, j].tolist())
            expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
            assert out[:, i, j].tolist() == pytest.approx(expected, abs=1e-5)


def test_hue_only_jitter_keeps_saturation_and_value() -> None:
    red = torch.zeros(3, 4, 4)
    red[0] = 1.0
    config = SegAugmentConfig(
        crop_size=4, scale_range=(1.0, 1.0), hflip_prob=0.0, blur_prob=0.0, jitter_prob=1.0, brightness=0.0,
        contrast=0.0, saturation=0.0, hue=0.2,
    )  # fmt: skip
    hues = set()
    for seed in range(10):
        out, _ = augment_pair(red, torch.zeros(4, 4, dtype=torch.long), config, gen(seed))
        h, s, v = colorsys.rgb_to_hsv(*out[:, 0, 0].tolist())
        assert s == pytest.approx(1.0, abs=1e-5)
        assert v == pytest.approx(1.0, abs=1e-5)
        assert min(h, 1.0 - h) <= 0.2 + 1e-5
        hues.add(round(h, 4))
    assert len(hues) > 5


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(320, 320, 33), (64, 64, 7), (100, 50, 5), (480, 640, 49), (19, 200, 1), (20, 20, 3)],
)
def test_blur_kernel_size_from_short_side(height: int, width: int, expected: int) -> None:
    # 10% of the short side, rounded down to even, plus one: 32 + 1, 6 + 1, 4 + 1, 48 + 1, 0 + 1, 2 + 1.
    assert blur_kernel_size(height, width) == expected


def test_gaussian_blur_against_a_naive_loop() -> None:
    image = torch.rand(3, 5, 6, generator=gen(4), dtype=torch.float64)
    sigma, kernel = 0.8, 3
    taps = [math.exp(-(d * d) / (2 * sigma * sigma)) for d in (-1, 0, 1)]
    taps = [t / sum(taps) for t in taps]

    def reflect(index: int, size: int) -> int:  # mirror without repeating the edge: -1 -> 1, size -> size - 2
        return -index if index < 0 else 2 * (size - 1) - index if index >= size else index

    expected = torch.zeros_like(image)
    for c in range(3):
        for i in range(5):
            for j in range(6):
                expected[c, i, j] = sum(
                    taps[a + 1] * taps[b + 1] * image[c, reflect(i + a, 5), reflect(j + b, 6)]
                    for a in (-1, 0, 1)
                    for b in (-1, 0, 1)
                )
    assert torch.allclose(gaussian_blur(image, kernel, sigma), expected)
    flat = torch.full((3, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, 5, 2.0), flat)
    assert torch.equal(gaussian_blur(image, 1, 1.0), image)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gaussian_blur(image, 4, 1.0)


def test_blur_in_the_recipe_uses_the_crop_short_side() -> None:
    # A single bright pixel at the centre of a 32 x 40 crop: kernel 10% of 32 -> 3, so the blur spreads it to the
    # 3 x 3 neighbourhood only.
    image = torch.zeros(3, 32, 40)
    image[:, 16, 20] = 1.0
    config = SegAugmentConfig(
        crop_size=(32, 40), scale_range=(1.0, 1.0), hflip_prob=0.0, jitter_prob=0.0, blur_prob=1.0
    )
    out, _ = augment_pair(image, torch.zeros(32, 40, dtype=torch.long), config, gen())
    nonzero = out[0].nonzero()
    assert nonzero[:, 0].tolist()
    assert set(nonzero[:, 0].tolist()) <= {15, 16, 17}
    assert set(nonzero[:, 1].tolist()) <= {19, 20, 21}
    assert len(nonzero) == 9
    assert out[0].sum() == pytest.approx(1.0, abs=1e-5)  # normalised kernel keeps the energy


def test_batch_matches_sequential_pairs() -> None:
    images = torch.rand(3, 3, 10, 10, generator=gen(7))
    labels = torch.randint(0, 4, (3, 10, 10), generator=gen(8))
    config = SegAugmentConfig(crop_size=8)
    batch_images, batch_labels = augment_batch(images, labels, config, gen(11))
    assert batch_images.shape == (3, 3, 8, 8)
    assert batch_labels.shape == (3, 8, 8)
    g = gen(11)
    for index in range(3):
        image, label = augment_pair(images[index], labels[index], config, g)
        assert torch.equal(batch_images[index], image)
        assert torch.equal(batch_labels[index], label)


def test_bad_inputs_are_named() -> None:
    image, label = pair(8, 8)
    config = SegAugmentConfig(crop_size=8)
    with pytest.raises(TypeError, match="image must be a float tensor"):
        augment_pair((image * 255).to(torch.uint8), label, config, gen())
    with pytest.raises(TypeError, match="label must hold integer class ids"):
        augment_pair(image, label.float(), config, gen())
    with pytest.raises(ValueError, match=r"label \(8, 7\) and image \(8, 8\) differ"):
        augment_pair(image, label[:, :7], config, gen())
    with pytest.raises(ValueError, match=r"image values must be in \[0, 1\]"):
        augment_pair(image * 2 - 1, label, config, gen())
    with pytest.raises(ValueError, match=r"image must be \[3, H, W\]"):
        augment_pair(image[:2], label, config, gen())
    with pytest.raises(ValueError, match="same B"):
        augment_batch(image[None], label[None].expand(2, 8, 8), config, gen())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"scale_range: needs 0 < low <= high.*got \(2.0, 1.0\)"):
        SegAugmentConfig.parse({"scale_range": [2.0, 1.0]})
    with pytest.raises(ConfigError, match="hflip_prob"):
        SegAugmentConfig.parse({"hflip_prob": 1.5})
    with pytest.raises(ConfigError, match=r"pad_colour: .*\[0, 1\]"):
        SegAugmentConfig.parse({"pad_colour": [124, 116, 104]})
    with pytest.raises(ConfigError, match="hue"):
        SegAugmentConfig.parse({"hue": 0.7})
    with pytest.raises(ConfigError, match=r"crop_size: sizes must be >= 1 \(got \(0, 4\)\)"):
        SegAugmentConfig.parse({"crop_size": [0, 4]})
    with pytest.raises(ConfigError, match=r"brightness: must be >= 0 \(got -0.1\)"):
        SegAugmentConfig.parse({"brightness": -0.1})
    with pytest.raises(ConfigError, match="crop_sise"):
        SegAugmentConfig.parse({"crop_sise": 64})
    config = SegAugmentConfig(crop_size=(24, 40), pad_colour=(0.5, 0.5, 0.5))
    assert SegAugmentConfig.from_json(config.to_json()) == config
