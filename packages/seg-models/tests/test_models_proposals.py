"""Connected components against a hand-drawn grid and a naive flood fill, and components as instance proposals."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from seg_core import ConceptSet, SegmentationOutput
from seg_models.proposals import ComponentInstances, connected_components, semantic_instances

GRID = torch.tensor(
    [
        [1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 1],
    ],
    dtype=torch.bool,
)


def test_hand_drawn_grid_4_vs_8_connectivity() -> None:
    labels8, count8 = connected_components(GRID, 8)
    assert count8 == 3  # (1, 3) and (2, 2) touch diagonally
    assert labels8.tolist() == [
        [1, 1, 0, 0, 0],
        [1, 0, 0, 2, 0],
        [0, 0, 2, 0, 0],
        [0, 0, 0, 0, 3],
    ]
    labels4, count4 = connected_components(GRID, 4)
    assert count4 == 4
    assert labels4.tolist() == [
        [1, 1, 0, 0, 0],
        [1, 0, 0, 2, 0],
        [0, 0, 3, 0, 0],
        [0, 0, 0, 0, 4],
    ]
    assert labels4.dtype == torch.long
    empty, none = connected_components(torch.zeros(3, 2, dtype=torch.bool))
    assert none == 0
    assert empty.tolist() == [[0, 0]] * 3
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(GRID, 6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool"):
        connected_components(GRID.long())


def _flood_fill(mask: list[list[bool]], connectivity: int) -> list[list[int]]:
    """Breadth-first labelling in raster order of first pixels (the reference)."""
    height, width = len(mask), len(mask[0])
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    labels = [[0] * width for _ in range(height)]
    current = 0
    for row in range(height):
        for col in range(width):
            if not mask[row][col] or labels[row][col]:
                continue
            current += 1
            labels[row][col] = current
            queue = deque([(row, col)])
            while queue:
                y, x = queue.popleft()
                for dy, dx in steps:
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny][nx] and not labels[ny][nx]:
                        labels[ny][nx] = current
                        queue.append((ny, nx))
    return labels


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_masks_and_a_spiral_match_a_flood_fill(connectivity: int) -> None:
    generator = torch.Generator().manual_seed(0)
    masks = [torch.rand(13, 17, generator=generator) < p for p in (0.3, 0.5, 0.65)]
    spiral = torch.zeros(11, 11, dtype=torch.bool)  # one long snake: many propagation rounds
    top, left, bottom, right = 0, 0, 10, 10
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = True
        spiral[top : bottom + 1, right] = True
        spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    masks.append(spiral)
    for mask in masks:
        labels, count = connected_components(mask, connectivity)  # type: ignore[arg-type]
        expected = _flood_fill(mask.tolist(), connectivity)
        assert labels.tolist() == expected
        assert count == max(max(row) for row in expected)


def test_semantic_instances_split_classes_into_components_with_mean_scores() -> None:
    labels = torch.tensor(
        [
            [1, 1, 0, 2],
            [0, 0, 0, 2],
            [1, 0, 0, 0],
        ]
    )
    probabilities = torch.full((3, 3, 4), 0.1)
    probabilities[1, 0, 0], probabilities[1, 0, 1] = 0.6, 0.8  # first class-1 blob: mean 0.7
    probabilities[1, 2, 0] = 0.9  # second class-1 blob (not connected: (1, 0) is background)
    probabilities[2, 0, 3], probabilities[2, 1, 3] = 0.5, 0.7  # class-2 blob: mean 0.6
    probabilities[0][labels == 0] = 0.8
    result = semantic_instances(probabilities)  # argmax gives the same map
    assert result.labels.tolist() == [1, 1, 2]
    torch.testing.assert_close(result.scores, torch.tensor([0.7, 0.9, 0.6]))
    assert result.masks.dtype == torch.bool
    assert result.masks.shape == (3, 3, 4)
    assert result.masks[0].nonzero().tolist() == [[0, 0], [0, 1]]
    assert result.masks[1].nonzero().tolist() == [[2, 0]]

    big_only = semantic_instances(probabilities, labels=labels, min_area=2)
    assert big_only.labels.tolist() == [1, 2]
    with_background = semantic_instances(probabilities, labels=labels, background_label=None)
    assert with_background.labels.tolist() == [0, 1, 1, 2]
    torch.testing.assert_close(with_background.scores[0], torch.tensor(0.8))
    nothing = semantic_instances(probabilities, labels=torch.zeros(3, 4, dtype=torch.long))
    assert len(nothing) == 0
    assert nothing.masks.shape == (0, 3, 4)
    with pytest.raises(ValueError, match="labels must be"):
        semantic_instances(probabilities, labels=labels[:2])


class _FixedSegmenter:
    """Returns the given logits whatever the images (a stand-in semantic method)."""

    def __init__(self, logits: torch.Tensor, names: tuple[str, ...]) -> None:
        self.logits, self.names = logits, names

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        return SegmentationOutput(logits=self.logits, label_names=self.names)


def test_component_instances_wraps_a_semantic_segmenter_and_skips_only_the_background_label() -> None:
    labels = torch.tensor([[1, 1, 0, 2], [0, 0, 0, 2], [1, 0, 0, 0]])
    logits = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float().mul(5.0)[None].repeat(2, 1, 1, 1)
    logits[1] = logits[1].roll(1, dims=0)  # image 1: the channels shifted, so background (channel 0) is now class 1
    concepts = ConceptSet(names=("cat", "dog"))
    # "background" last: its index comes from the label names, not a fixed 0.
    names = ("cat", "dog", "background")
    wrapped = ComponentInstances(_FixedSegmenter(logits.roll(-1, dims=1), names))
    output = wrapped.segment(torch.zeros(2, 3, 3, 4), concepts)
    torch.testing.assert_close(output.logits, logits.roll(-1, dims=1))  # the semantic output is unchanged
    assert output.instances is not None
    assert len(output.instances) == 2
    # image 0: labels 1 ("dog" after the roll -> index 0 "cat") blobs and label 2 -> index 1 "dog"; background skipped
    assert sorted(output.instances[0].labels.tolist()) == [0, 0, 1]
    expected = semantic_instances(output.probabilities[1], background_label=2)
    assert output.instances[1].labels.tolist() == expected.labels.tolist()
    assert 2 not in output.instances[1].labels.tolist()
    # Without a background label every class yields instances.
    plain = ComponentInstances(_FixedSegmenter(logits, ("a", "b", "c"))).segment(torch.zeros(2, 3, 3, 4), concepts)
    assert plain.instances is not None
    assert plain.instances[0].labels.tolist() == [0, 1, 1, 2]
    with pytest.raises(ValueError, match="min_area"):
        ComponentInstances(_FixedSegmenter(logits, names), min_area=0)
