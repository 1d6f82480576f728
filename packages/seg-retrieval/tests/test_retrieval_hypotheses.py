"""ReCLIP++'s crop windows and multi-label hypotheses (Eq. 6), and ReCLIP's whole-image baseline, by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from seg_retrieval.hypotheses import (
    Hypotheses,
    WholeImageHypotheses,
    crop_windows,
    multi_label_hypotheses,
    whole_image_hypotheses,
)

RED, GREEN, BLUE = 0, 1, 2
TEXT = torch.eye(3)  # class k's text feature is colour channel k


def _mean_colour(crops: torch.Tensor) -> torch.Tensor:
    """Fake encoder: the crop's mean colour, so the top-1 class is its dominant channel."""
    return crops.mean(dim=(2, 3))


def _red_blue(height: int = 12, width: int = 12, red_columns: int = 7) -> torch.Tensor:
    """One image: red in columns [0, red_columns), blue in the rest."""
    image = torch.zeros(1, 3, height, width)
    image[0, RED, :, :red_columns] = 1.0
    image[0, BLUE, :, red_columns:] = 1.0
    return image


# --- crop_windows -----------------------------------------------------------------------------------------------


def test_hand_case_12x12_half() -> None:
    # window round(0.5 * 12) = 6, stride 3: tops/lefts 0, 3, 6 (6 + 6 = 12 is flush) -> 3 x 3 = 9 windows
    windows = crop_windows(12, 12, 0.5)
    assert len(windows) == 9
    assert windows[:3] == [(0, 0, 6, 6), (0, 3, 6, 6), (0, 6, 6, 6)]
    assert {(t, left) for t, left, _, _ in windows} == {(t, left) for t in (0, 3, 6) for left in (0, 3, 6)}
    # official loop: range(0, 12 - 6, 3) = [0, 3] (the flush start 6 is excluded) -> 2 x 2 = 4 windows, and the
    # last three rows/columns (9..11) are never covered
    official = crop_windows(12, 12, 0.5, include_last=False)
    assert official == [(0, 0, 6, 6), (0, 3, 6, 6), (3, 0, 6, 6), (3, 3, 6, 6)]


def test_last_window_is_added_when_the_stride_stops_short() -> None:
    # 13 px, window round(6.5) = 7 (half up), stride 3: 0, 3, 6 (6 + 7 = 13 flush) -> 3 starts
    assert sorted({t for t, _, _, _ in crop_windows(13, 13, 0.5)}) == [0, 3, 6]
    # 14 px, window 7, stride 3: 0, 3, 6 stop at 13 < 14 -> the flush start 7 is added
    assert sorted({t for t, _, _, _ in crop_windows(14, 10, 0.5)}) == [0, 3, 6, 7]
    # official on 14 px: range(0, 7, 3) = [0, 3, 6]
    assert sorted({t for t, _, _, _ in crop_windows(14, 10, 0.5, include_last=False)}) == [0, 3, 6]


@pytest.mark.parametrize(("height", "width", "ratio"), [(12, 12, 0.5), (13, 17, 1 / 6), (50, 7, 0.3), (5, 5, 1.0)])
def test_windows_cover_every_pixel_and_stay_inside(height: int, width: int, ratio: float) -> None:
    covered = torch.zeros(height, width, dtype=torch.bool)
    windows = crop_windows(height, width, ratio)
    for top, left, h, w in windows:
        assert top >= 0
        assert top + h <= height
        assert left >= 0
        assert left + w <= width
        covered[top : top + h, left : left + w] = True
    assert bool(covered.all())
    assert len(set(windows)) == len(windows)


def test_crop_windows_validates() -> None:
    for ratio in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            crop_windows(12, 12, ratio)
    with pytest.raises(ValueError, match="height"):
        crop_windows(0, 12, 0.5)
    with pytest.raises(ValueError, match="include_last=False leaves no window"):
        crop_windows(12, 12, 1.0, include_last=False)


# --- multi_label_hypotheses -------------------------------------------------------------------------------------


def test_red_left_blue_right_by_hand() -> None:
    # 12x12, red columns 0-6, blue 7-11; windows 6x6 at lefts 0 (7 red... all red), 3 (cols 3-8: 4 red, 2 blue)
    # and 6 (cols 6-11: 1 red, 5 blue): per row of windows 2 red + 1 blue, 3 rows -> f(red) = 6/9, f(blue) = 3/9
    result = multi_label_hypotheses(_red_blue(), _mean_colour, TEXT, ratio=0.5)
    assert isinstance(result, Hypotheses)
    assert result.num_crops == 9
    assert torch.allclose(result.frequencies, torch.tensor([[6 / 9, 0.0, 3 / 9]]))
    assert result.labels.tolist() == [[True, False, True]]
    # official windows (lefts 0 and 3 only) never see the blue half as dominant: f(red) = 4/4
    official = multi_label_hypotheses(_red_blue(), _mean_colour, TEXT, ratio=0.5, include_last=False)
    assert official.num_crops == 4
    assert official.labels.tolist() == [[True, False, False]]
    assert torch.allclose(official.frequencies, torch.tensor([[1.0, 0.0, 0.0]]))


def test_threshold_is_strictly_greater() -> None:
    images = _red_blue()
    at = multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, threshold=3 / 9)
    assert at.labels.tolist() == [[True, False, False]]  # f(blue) = 3/9 is not > 3/9
    below = multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, threshold=3 / 9 - 1e-6)
    assert below.labels.tolist() == [[True, False, True]]
    none = multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, threshold=6 / 9)
    assert none.labels.tolist() == [[False, False, False]]


def test_batching_does_not_change_the_result_and_chunks_are_bounded() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.cat([_red_blue(), torch.rand(2, 3, 12, 12, generator=generator)])
    text = torch.randn(3, 3, generator=generator)
    calls: list[int] = []

    def encoder(crops: torch.Tensor) -> torch.Tensor:
        calls.append(crops.shape[0])
        return _mean_colour(crops)

    one = multi_label_hypotheses(images, encoder, text, ratio=0.5, batch_size=1)
    assert calls == [1] * 27
    calls.clear()
    many = multi_label_hypotheses(images, encoder, text, ratio=0.5, batch_size=256)
    assert calls == [27]
    calls.clear()
    four = multi_label_hypotheses(images, encoder, text, ratio=0.5, batch_size=4)
    assert calls == [4] * 6 + [3]
    for other in (many, four):
        assert torch.equal(one.labels, other.labels)
        assert torch.equal(one.frequencies, other.frequencies)
    assert torch.allclose(one.frequencies.sum(dim=1), torch.ones(3))


def test_input_size_resizes_crops_and_no_gradient() -> None:
    seen: list[tuple[int, ...]] = []
    images = _red_blue().requires_grad_(True)

    def encoder(crops: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(crops.shape))
        assert not torch.is_grad_enabled()
        return _mean_colour(crops)

    result = multi_label_hypotheses(images, encoder, TEXT, ratio=0.5, input_size=(8, 10))
    assert set(seen) == {(9, 3, 8, 10)}
    assert result.labels.tolist() == [[True, False, True]]


def test_multi_label_hypotheses_validates() -> None:
    images = _red_blue()
    with pytest.raises(ValueError, match="threshold"):
        multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, threshold=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, batch_size=0)
    with pytest.raises(ValueError, match="images"):
        multi_label_hypotheses(images[:, :2], _mean_colour, TEXT, ratio=0.5)
    with pytest.raises(ValueError, match="encode_image"):
        multi_label_hypotheses(images, _mean_colour, torch.eye(3, 4), ratio=0.5)
    with pytest.raises(ValueError, match="input_size"):
        multi_label_hypotheses(images, _mean_colour, TEXT, ratio=0.5, input_size=(0, 4))


# --- whole_image_hypotheses -------------------------------------------------------------------------------------


def test_whole_image_threshold_top_k_and_fallback() -> None:
    # image 0: mean colour (7/12, 0, 5/12) -> cosine with red 7/sqrt(74) = 0.814, blue 5/sqrt(74) = 0.581, green 0
    # image 1: all green -> cosine (0, 1, 0)
    green = torch.zeros(1, 3, 12, 12)
    green[0, GREEN] = 1.0
    images = torch.cat([_red_blue(), green])
    norm = 74**0.5
    expected_scores = torch.tensor([[7 / norm, 0.0, 5 / norm], [0.0, 1.0, 0.0]])

    thresholded = whole_image_hypotheses(images, _mean_colour, TEXT, threshold=0.7)
    assert isinstance(thresholded, WholeImageHypotheses)
    assert torch.allclose(thresholded.scores, expected_scores)
    assert thresholded.labels.tolist() == [[True, False, False], [False, True, False]]
    at = whole_image_hypotheses(images, _mean_colour, TEXT, threshold=5 / norm)  # >=: blue is in
    assert at.labels[0].tolist() == [True, False, True]

    top2 = whole_image_hypotheses(images, _mean_colour, TEXT, top_k=2)
    assert top2.labels[0].tolist() == [True, False, True]
    assert top2.labels[1].sum() == 2
    assert bool(top2.labels[1, GREEN])

    high = whole_image_hypotheses(images, _mean_colour, TEXT, threshold=0.9)
    assert high.labels.tolist() == [[False, False, False], [False, True, False]]
    fallback = whole_image_hypotheses(images, _mean_colour, TEXT, threshold=0.9, fallback_top_k=2)
    assert fallback.labels.tolist() == [[True, False, True], [False, True, False]]


def test_whole_image_needs_exactly_one_rule() -> None:
    images = _red_blue()
    with pytest.raises(ValueError, match="exactly one of top_k"):
        whole_image_hypotheses(images, _mean_colour, TEXT)
    with pytest.raises(ValueError, match="exactly one of top_k"):
        whole_image_hypotheses(images, _mean_colour, TEXT, top_k=1, threshold=0.2)
    with pytest.raises(ValueError, match="top_k"):
        whole_image_hypotheses(images, _mean_colour, TEXT, top_k=4)
    with pytest.raises(ValueError, match="fallback_top_k"):
        whole_image_hypotheses(images, _mean_colour, TEXT, top_k=1, fallback_top_k=1)


def test_module_imports_no_sibling_package_but_seg_core() -> None:
    code = (
        "import sys, seg_retrieval.hypotheses; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0].startswith('seg_') "
        "and m.split('.')[0] not in {'seg_core', 'seg_retrieval'}); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
