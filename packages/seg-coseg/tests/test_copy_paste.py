"""Copy-paste synthesis: determinism, exact pixels, occlusion by hand, label consistency, sampling statistics, colour
helpers against colorsys and a naive blur, errors."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch

from seg_coseg.copy_paste import (
    AugmentedSource,
    CopyPasteConfig,
    PasteSource,
    _adjust_hue,
    _gaussian_blur,
    _grayscale,
    _hsv_to_rgb,
    _rgb_to_hsv,
    augment_source,
    compose,
    copy_paste,
    sample_sources,
)

# No augmentation: scale 1, crop = source size, no flip, jitter, grayscale or blur.
PLAIN = CopyPasteConfig(
    crop_size=24, scale_range=(1.0, 1.0), hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0
)


def _source(
    category: int, box: tuple[int, int, int, int], *, seed: int, size: tuple[int, int] = (24, 24)
) -> PasteSource:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, *size, generator=generator)
    mask = torch.zeros(size, dtype=torch.bool)
    top, left, height, width = box
    mask[top : top + height, left : left + width] = True
    mask[top, left] = False  # not a full rectangle, so "mask pixels only" differs from "the whole box"
    return PasteSource(image=image, mask=mask, category=category)


def _sources() -> list[PasteSource]:
    return [
        _source(1, (4, 4, 12, 10), seed=0),
        _source(2, (2, 6, 8, 8), seed=1),
        _source(3, (10, 0, 6, 14), seed=2),
        _source(2, (0, 0, 5, 5), seed=3),
    ]


def test_same_seed_same_sample_and_other_seeds_differ() -> None:
    config = CopyPasteConfig(crop_size=32)
    sources = _sources()
    first = copy_paste(sources, config, torch.Generator().manual_seed(5))
    second = copy_paste(sources, config, torch.Generator().manual_seed(5))
    for name in ("image", "semantic", "instances", "categories", "visible", "boxes"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    other = copy_paste(sources, config, torch.Generator().manual_seed(6))
    assert not torch.equal(first.image, other.image)


def test_pasted_pixels_are_source_pixels() -> None:
    sources = _sources()
    for seed in range(4):
        sample = copy_paste(sources, PLAIN, torch.Generator().manual_seed(seed))
        assert sample.image.shape == (3, 24, 24)
        assert sample.semantic.dtype == torch.int64
        assert sample.instances.shape == (4, 24, 24)
        assert sample.instances.dtype == torch.bool
        assert sample.categories.tolist() == [1, 2, 3, 2]
        for i, source in enumerate(sources):
            rows, cols = torch.nonzero(source.mask, as_tuple=True)
            y0, x0 = int(rows.min()), int(cols.min())
            top, left, bottom, right = sample.boxes[i].tolist()
            assert (bottom - top, right - left) == (int(rows.max()) + 1 - y0, int(cols.max()) + 1 - x0)
            for y, x in torch.nonzero(sample.instances[i]).tolist():
                source_y, source_x = y - top + y0, x - left + x0
                assert bool(source.mask[source_y, source_x])
                assert torch.equal(sample.image[:, y, x], source.image[:, source_y, source_x])
        # The canvas stays where it is, and pixels left uncovered keep the canvas's own values.
        assert sample.boxes[0].tolist() == [4, 4, 16, 14]
        uncovered = ~sample.instances[1:].any(dim=0)
        assert torch.equal(sample.image[:, uncovered], sources[0].image[:, uncovered])


def _piece(category: int, cells: list[tuple[int, int]], *, value: float, size: int = 6) -> AugmentedSource:
    mask = torch.zeros(size, size, dtype=torch.bool)
    for y, x in cells:
        mask[y, x] = True
    return AugmentedSource(
        image=torch.full((3, size, size), value),
        mask=mask,
        valid=torch.ones(size, size, dtype=torch.bool),
        category=category,
    )


def test_occlusion_by_hand() -> None:
    canvas = _piece(1, [(y, x) for y in range(1, 4) for x in range(1, 4)], value=0.1)  # 3x3 at (1, 1)
    second = _piece(2, [(0, 0), (0, 1), (1, 0), (1, 1)], value=0.5)  # 2x2 box, pasted at (2, 2)
    third = _piece(7, [(3, 3), (3, 4), (4, 3), (4, 4)], value=0.9)  # 2x2 box at (3, 3), pasted at (2, 2): hides it
    fourth = _piece(4, [(5, 5)], value=0.7)  # one pixel, pasted at (0, 5)
    sample = compose([canvas, second, third, fourth], [(2, 2), (2, 2), (0, 5)], ignore_index=255)

    expected_semantic = torch.tensor(
        [
            [0, 0, 0, 0, 0, 4],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 7, 7, 0, 0],
            [0, 1, 7, 7, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    assert torch.equal(sample.semantic, expected_semantic)
    assert torch.equal(sample.instances[0], expected_semantic == 1)
    assert not bool(sample.instances[1].any())  # fully occluded by the third paste
    assert torch.equal(sample.instances[2], expected_semantic == 7)
    assert torch.equal(sample.instances[3], expected_semantic == 4)
    assert sample.visible.tolist() == [True, False, True, True]
    assert sample.categories.tolist() == [1, 2, 7, 4]
    assert sample.boxes.tolist() == [[1, 1, 4, 4], [2, 2, 4, 4], [2, 2, 4, 4], [0, 5, 1, 6]]
    expected_image = torch.full((6, 6), 0.1)
    expected_image[2:4, 2:4] = 0.9
    expected_image[0, 5] = 0.7
    assert torch.equal(sample.image, expected_image.expand(3, 6, 6))

    partial = compose([canvas, second], [(3, 3)])  # covers canvas pixel (3, 3) only
    assert int(partial.instances[0].sum()) == 8
    assert not bool(partial.instances[0, 3, 3])
    assert int(partial.semantic[3, 3]) == 2
    assert partial.visible.tolist() == [True, True]


def _check_labels(sample: object, ignore_index: int) -> None:
    assert hasattr(sample, "instances")
    instances, semantic = sample.instances, sample.semantic  # type: ignore[attr-defined]
    categories, visible = sample.categories, sample.visible  # type: ignore[attr-defined]
    assert int(instances.sum(dim=0).max()) <= 1  # disjoint
    assert visible.tolist() == instances.flatten(1).any(dim=1).tolist()
    for mask, category in zip(instances, categories.tolist(), strict=True):
        assert bool((semantic[mask] == category).all())
    outside = ~instances.any(dim=0)
    assert set(semantic[outside].unique().tolist()) <= {0, ignore_index}
    image = sample.image  # type: ignore[attr-defined]
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0


def test_labels_are_consistent_with_full_augmentation() -> None:
    config = CopyPasteConfig(crop_size=32, ignore_index=99)
    sources = [*_sources(), _source(5, (3, 3, 30, 20), seed=4, size=(40, 28))]
    seen_padding = False
    for seed in range(6):
        sample = copy_paste(sources, config, torch.Generator().manual_seed(seed))
        assert sample.image.shape == (3, 32, 32)
        assert sample.semantic.shape == (32, 32)
        _check_labels(sample, 99)
        seen_padding |= bool((sample.semantic == 99).any())
    assert seen_padding  # 24x24 canvases scaled by <= 1 are always padded to 32


def test_canvas_padding_and_mean_colour_fill() -> None:
    config = PLAIN.model_copy(update={"crop_size": 32})
    source = _source(3, (4, 4, 12, 10), seed=0, size=(20, 20))
    corners = set()
    for seed in range(12):
        piece = augment_source(source, config, torch.Generator().manual_seed(seed))
        rows, cols = torch.nonzero(piece.valid, as_tuple=True)
        top, left = int(rows.min()), int(cols.min())
        assert int(piece.valid.sum()) == 400
        assert (int(rows.max()) - top, int(cols.max()) - left) == (19, 19)
        corners.add((top, left))
        assert torch.equal(piece.image[:, top : top + 20, left : left + 20], source.image)
        assert torch.equal(piece.mask[top : top + 20, left : left + 20], source.mask)
        fill = source.image.mean(dim=(1, 2))
        torch.testing.assert_close(piece.image[:, ~piece.valid], fill[:, None].expand(3, 1024 - 400))
        sample = compose([piece], [], ignore_index=255)
        assert int((sample.semantic == 255).sum()) == 1024 - 400
        assert int((sample.semantic == 0).sum()) == 400 - int(source.mask.sum())
        assert int((sample.semantic == 3).sum()) == int(source.mask.sum())
    assert corners == {(0, 0), (0, 12), (12, 0), (12, 12)}


def test_scale_and_flip() -> None:
    source = _source(2, (4, 4, 12, 10), seed=0)
    flipped = augment_source(source, PLAIN.model_copy(update={"hflip_prob": 1.0}), torch.Generator().manual_seed(0))
    assert torch.equal(flipped.image, source.image.flip(-1))
    assert torch.equal(flipped.mask, source.mask.flip(-1))
    half = PLAIN.model_copy(update={"scale_range": (0.5, 0.5)})
    piece = augment_source(source, half, torch.Generator().manual_seed(0))
    assert int(piece.valid.sum()) == 12 * 12
    # Nearest resizing of a mask by 1/2 keeps every other row and column.
    rows, cols = torch.nonzero(piece.valid, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    assert torch.equal(piece.mask[top : top + 12, left : left + 12], source.mask[::2, ::2])


def test_same_category_rule_statistics() -> None:
    archives = {1: list(range(5)), 2: list(range(5)), 3: list(range(5)), 4: list(range(5)), 9: []}
    config = CopyPasteConfig(max_sources=6)
    generator = torch.Generator().manual_seed(0)
    draws = [sample_sources(archives, config, generator) for _ in range(2000)]
    same = [draw for draw in draws if draw.same_category]
    assert 0.45 < len(same) / len(draws) < 0.55
    counts = {len(draw.picks) for draw in draws}
    assert counts == set(range(1, 7))
    for draw in draws:
        assert all(0 <= index < 5 and category in (1, 2, 3, 4) for category, index in draw.picks)
    assert all(len({category for category, _ in draw.picks}) == 1 for draw in same)
    # All picks share a category with probability 1/2 + 1/2 · E[(1/4)^(n-1)], n uniform on 1..6.
    expected = 0.5 + 0.5 * sum(0.25 ** (n - 1) for n in range(1, 7)) / 6
    observed = sum(len({category for category, _ in draw.picks}) == 1 for draw in draws) / len(draws)
    assert abs(observed - expected) < 0.04


def test_mixed_draws_are_uniform_over_archive_items() -> None:
    archives = {1: list(range(30)), 2: list(range(10))}
    config = CopyPasteConfig(max_sources=4, same_category_prob=0.0)
    generator = torch.Generator().manual_seed(1)
    picks = [pick for _ in range(1500) for pick in sample_sources(archives, config, generator).picks]
    share = sum(category == 1 for category, _ in picks) / len(picks)
    assert abs(share - 0.75) < 0.04
    assert {index for category, index in picks if category == 2} == set(range(10))


def test_rgb_hsv_against_colorsys() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 4, 5, generator=generator, dtype=torch.float64)
    image[:, 0, 0] = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)  # grey: hue 0, saturation 0
    image[:, 0, 1] = 0.0  # black
    hsv = _rgb_to_hsv(image)
    for y in range(4):
        for x in range(5):
            expected = colorsys.rgb_to_hsv(*image[:, y, x].tolist())
            assert hsv[:, y, x].tolist() == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(_hsv_to_rgb(hsv), image)
    shifted = _adjust_hue(image, 0.3)
    for y in range(4):
        for x in range(5):
            h, s, v = colorsys.rgb_to_hsv(*image[:, y, x].tolist())
            expected = colorsys.hsv_to_rgb((h + 0.3) % 1.0, s, v)
            assert shifted[:, y, x].tolist() == pytest.approx(expected, abs=1e-12)
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1)
    torch.testing.assert_close(_adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).reshape(3, 1, 1))
    torch.testing.assert_close(_grayscale(red), torch.tensor([[[0.299]]]))


def test_gaussian_blur_against_naive_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 7, generator=generator, dtype=torch.float64)
    sigma, radius = 0.8, 2

    def reflect(i: int, n: int) -> int:  # OpenCV BORDER_REFLECT_101: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    weights = [math.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)]
    weights = [w / sum(weights) for w in weights]
    expected = torch.zeros_like(image)
    for c in range(3):
        for y in range(6):
            for x in range(7):
                expected[c, y, x] = sum(
                    weights[i] * weights[j] * image[c, reflect(y + i - radius, 6), reflect(x + j - radius, 7)]
                    for i in range(5)
                    for j in range(5)
                )
    torch.testing.assert_close(_gaussian_blur(image, 2 * radius + 1, sigma), expected)
    constant = torch.full((3, 5, 5), 0.4, dtype=torch.float64)
    torch.testing.assert_close(_gaussian_blur(constant, 9, 2.0), constant)


def test_config_defaults_and_validation() -> None:
    config = CopyPasteConfig()
    assert (config.max_sources, config.same_category_prob, config.scale_range, config.crop_size) == (
        10,
        0.5,
        (0.1, 1.0),
        384,
    )
    assert (config.brightness, config.contrast, config.saturation, config.hue, config.jitter_prob) == (
        0.8,
        0.8,
        0.8,
        0.2,
        0.8,
    )
    assert (config.grayscale_prob, config.blur_prob, config.ignore_index) == (0.2, 0.5, 255)
    assert CopyPasteConfig.from_json(config.to_json()) == config
    for update, match in [
        ({"max_sources": 0}, "max_sources"),
        ({"same_category_prob": 1.5}, "same_category_prob"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"scale_range": (0.8, 0.2)}, "scale_range"),
        ({"hue": 0.7}, "hue"),
        ({"ignore_index": 0}, "ignore_index"),
        ({"crop_size": 0}, "crop_size"),
        ({"unknown": 1}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            CopyPasteConfig(**update)  # type: ignore[arg-type]


def test_errors_name_the_argument() -> None:
    image, mask = torch.rand(3, 4, 4), torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="category"):
        PasteSource(image, mask, 0)
    with pytest.raises(TypeError, match="mask"):
        PasteSource(image, mask.float(), 1)
    with pytest.raises(ValueError, match="mask"):
        PasteSource(image, mask[:3], 1)
    with pytest.raises(ValueError, match="image"):
        PasteSource(image[:2], mask, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PasteSource(image * 255, mask, 1)
    with pytest.raises(ValueError, match="sources"):
        copy_paste([], PLAIN, torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        copy_paste(_sources(), PLAIN, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ignore_index"):
        copy_paste([PasteSource(image, mask, 255)], PLAIN, torch.Generator())
    piece = _piece(1, [(0, 0), (1, 1)], value=0.5)
    with pytest.raises(ValueError, match="offsets"):
        compose([piece, piece], [])
    with pytest.raises(ValueError, match=r"offsets\[0\]"):
        compose([piece, piece], [(5, 0)])  # a 2x2 box at row 5 of a 6x6 canvas
    with pytest.raises(ValueError, match="crop_size"):
        compose([piece, _piece(1, [(0, 0)], value=0.5, size=5)], [(0, 0)])
    with pytest.raises(ValueError, match="archives"):
        sample_sources({1: []}, PLAIN, torch.Generator())
    with pytest.raises(ValueError, match="category ids"):
        sample_sources({0: [1]}, PLAIN, torch.Generator())
