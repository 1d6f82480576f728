"""Hungarian matching against brute force over every one-to-one assignment."""

from __future__ import annotations

import itertools

import pytest
import torch

from seg_losses import batched_hungarian_match, hungarian_match


def brute_force(matrix: torch.Tensor, maximize: bool) -> tuple[list[int], list[int]]:
    """Best assignment by enumerating every injective map from the smaller side into the larger one."""
    num_rows, num_cols = matrix.shape
    values = matrix.tolist()
    best: tuple[float, list[tuple[int, int]]] | None = None
    if num_rows <= num_cols:
        candidates = [
            list(zip(range(num_rows), perm, strict=True)) for perm in itertools.permutations(range(num_cols), num_rows)
        ]
    else:
        candidates = [
            list(zip(perm, range(num_cols), strict=True)) for perm in itertools.permutations(range(num_rows), num_cols)
        ]
    for pairs in candidates:
        total = sum(values[r][c] for r, c in pairs)
        if best is None or (total > best[0] if maximize else total < best[0]):
            best = (total, pairs)
    assert best is not None
    pairs = sorted(best[1])
    return [r for r, _ in pairs], [c for _, c in pairs]


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3), (1, 4), (4, 1)])
@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(shape: tuple[int, int], maximize: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(shape, generator=generator)
    rows, cols = hungarian_match(matrix, maximize=maximize)
    expected_rows, expected_cols = brute_force(matrix, maximize)
    assert rows.dtype == torch.int64
    assert cols.dtype == torch.int64
    assert rows.tolist() == expected_rows
    assert cols.tolist() == expected_cols
    assert len(rows) == min(shape)


def test_hand_example_and_min_differs() -> None:
    similarity = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    # max: (0,0)+(1,1) = 1.6 beats (0,1)+(1,0) = 0.9; min picks the latter (the official PGSeg bug).
    rows, cols = hungarian_match(similarity)
    assert rows.tolist() == [0, 1]
    assert cols.tolist() == [0, 1]
    rows, cols = hungarian_match(similarity, maximize=False)
    assert cols.tolist() == [1, 0]


def test_rows_sorted_for_tall_matrix_and_grad_input_is_accepted() -> None:
    similarity = torch.tensor([[0.0], [0.2], [0.9], [0.1]], requires_grad=True)
    rows, cols = hungarian_match(similarity)
    assert rows.tolist() == [2]
    assert cols.tolist() == [0]
    similarity = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    rows, cols = hungarian_match(similarity)
    assert rows.tolist() == [0, 1]
    assert cols.tolist() == [1, 0]


def test_batched_equals_per_matrix() -> None:
    generator = torch.Generator().manual_seed(3)
    batch = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)
    rows, cols = batched_hungarian_match(batch)
    assert rows.shape == (4, 3)
    assert cols.shape == (4, 3)
    for index in range(4):
        single_rows, single_cols = hungarian_match(batch[index])
        assert torch.equal(rows[index], single_rows)
        assert torch.equal(cols[index], single_cols)
    rows, cols = batched_hungarian_match(batch.transpose(1, 2), maximize=False)
    assert rows.shape == (4, 3)
    for index in range(4):
        expected_rows, expected_cols = brute_force(batch[index].t(), maximize=False)
        assert rows[index].tolist() == expected_rows
        assert cols[index].tolist() == expected_cols


def test_empty_inputs_give_empty_matches() -> None:
    rows, cols = hungarian_match(torch.zeros(0, 3))
    assert rows.shape == (0,)
    assert cols.shape == (0,)
    rows, cols = batched_hungarian_match(torch.zeros(0, 2, 3))
    assert rows.shape == (0, 2)
    assert cols.shape == (0, 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_is_refused(bad: float) -> None:
    matrix = torch.zeros(3, 3)
    matrix[1, 2] = bad
    with pytest.raises(ValueError, match="similarity holds NaN or infinite"):
        hungarian_match(matrix)
    with pytest.raises(ValueError, match="similarity holds NaN or infinite"):
        batched_hungarian_match(matrix.unsqueeze(0))


def test_wrong_rank_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"similarity must be a \[R, C\]"):
        hungarian_match(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"similarity must be a \[B, R, C\]"):
        batched_hungarian_match(torch.zeros(3, 3))
