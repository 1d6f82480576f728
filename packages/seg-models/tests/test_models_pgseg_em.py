"""PGSeg's prototype generation (EM, Eqs. 1-2), the prototype EMA and initialisation against hand computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seg_models.pgseg import EMResult, em_prototypes, init_prototypes, momentum_update


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------------------------------
# em_prototypes
# --------------------------------------------------------------------------------------------------------------------


def test_one_dot_iteration_1d_by_hand() -> None:
    values = [1.0, 2.0, -1.0]
    source = torch.tensor(values).reshape(1, 3, 1)
    init = torch.tensor([[1.0], [-1.0]])
    result = em_prototypes(source, init, iterations=1, normalize=False, eps=0.0)
    # E-step: logits p_i v_j, two prototypes -> y_0j = sigmoid(v_j (p_0 - p_1)) = sigmoid(2 v_j).
    y0 = [sigmoid(2 * v) for v in values]
    y1 = [1 - y for y in y0]
    p0 = sum(y * v for y, v in zip(y0, values, strict=True)) / sum(y0)
    p1 = sum(y * v for y, v in zip(y1, values, strict=True)) / sum(y1)
    assert result.prototypes.shape == (1, 2, 1)
    assert result.prototypes[0, :, 0].tolist() == pytest.approx([p0, p1], rel=1e-6)
    final_y0 = [sigmoid(v * (p0 - p1)) for v in values]
    assert result.responsibilities.shape == (1, 3, 2)
    assert result.responsibilities[0, :, 0].tolist() == pytest.approx(final_y0, rel=1e-6)
    assert result.responsibilities[0, :, 1].tolist() == pytest.approx([1 - y for y in final_y0], rel=1e-5)
    reconstruction = result.reconstruct()
    assert reconstruction.shape == (1, 3, 1)
    expected = [y * p0 + (1 - y) * p1 for y in final_y0]
    assert reconstruction[0, :, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_one_dot_iteration_2d_normalised_by_hand() -> None:
    source = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    init = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised first -> e_x, e_y
    result = em_prototypes(source, init, iterations=1)
    # E-step logits: v1=(2,0) -> [2, 0], v2=(0,1) -> [0, 1], v3=(1,1) -> [1, 1].
    # M-step then L2: the mass Σ_j y_ij cancels, p_i ∝ Σ_j y_ij v_j.
    raw0 = (2 * sigmoid(2) + 0.5, sigmoid(-1) + 0.5)
    raw1 = (2 * sigmoid(-2) + 0.5, sigmoid(1) + 0.5)
    p0 = [c / math.hypot(*raw0) for c in raw0]
    p1 = [c / math.hypot(*raw1) for c in raw1]
    assert result.prototypes[0].tolist()[0] == pytest.approx(p0, rel=1e-5)
    assert result.prototypes[0].tolist()[1] == pytest.approx(p1, rel=1e-5)
    for j, v in enumerate(source[0].tolist()):
        d0 = p0[0] * v[0] + p0[1] * v[1]
        d1 = p1[0] * v[0] + p1[1] * v[1]
        assert float(result.responsibilities[0, j, 0]) == pytest.approx(sigmoid(d0 - d1), rel=1e-5)


def test_one_gaussian_iteration_by_hand() -> None:
    source = torch.tensor([[[0.0], [4.0]]])
    init = torch.tensor([[1.0], [3.0]])
    result = em_prototypes(source, init, iterations=1, kernel="gaussian", sigma=2.0, normalize=False, eps=0.0)
    # logits -(v - p)²/8: v=0 -> [-1/8, -9/8] so y_00 = sigmoid(1); v=4 -> [-9/8, -1/8] so y_01 = sigmoid(-1).
    # p_0 = (sigmoid(1)·0 + sigmoid(-1)·4) / (sigmoid(1) + sigmoid(-1)) = 4 sigmoid(-1); p_1 = 4 sigmoid(1).
    assert result.prototypes[0, :, 0].tolist() == pytest.approx([4 * sigmoid(-1), 4 * sigmoid(1)], rel=1e-6)


def test_gaussian_em_converges_to_cluster_means() -> None:
    generator = torch.Generator().manual_seed(0)
    left = torch.tensor([-4.0, 1.0]) + 0.3 * torch.randn(20, 2, generator=generator)
    right = torch.tensor([5.0, -2.0]) + 0.3 * torch.randn(30, 2, generator=generator)
    source = torch.cat([left, right])[torch.randperm(50, generator=generator)].unsqueeze(0)
    init = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    result = em_prototypes(source, init, iterations=20, kernel="gaussian", normalize=False)
    assert result.prototypes[0, 0].tolist() == pytest.approx(left.mean(0).tolist(), abs=1e-4)
    assert result.prototypes[0, 1].tolist() == pytest.approx(right.mean(0).tolist(), abs=1e-4)
    hard = result.responsibilities[0].argmax(-1)
    assert int((hard == 0).sum()) == 20


def test_responsibilities_sum_to_one_and_reconstruct_is_y_times_p() -> None:
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(2, 7, 5, generator=generator)
    result = em_prototypes(source, torch.randn(3, 5, generator=generator))
    assert result.prototypes.shape == (2, 3, 5)
    assert result.responsibilities.shape == (2, 7, 3)
    assert torch.allclose(result.responsibilities.sum(-1), torch.ones(2, 7))
    assert torch.allclose(result.prototypes.norm(dim=-1), torch.ones(2, 3))
    expected = torch.zeros(2, 7, 5)
    for b, j, i in itertools.product(range(2), range(7), range(3)):
        expected[b, j] += result.responsibilities[b, j, i] * result.prototypes[b, i]
    assert torch.allclose(result.reconstruct(), expected, atol=1e-6)


@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_batch_equals_per_sample(kernel: str) -> None:
    generator = torch.Generator().manual_seed(2)
    source = torch.randn(3, 6, 4, generator=generator)
    per_image_init = torch.randn(3, 2, 4, generator=generator)
    shared_init = torch.randn(2, 4, generator=generator)
    batched = em_prototypes(source, per_image_init, kernel=kernel)  # type: ignore[arg-type]
    shared = em_prototypes(source, shared_init, kernel=kernel)  # type: ignore[arg-type]
    for b in range(3):
        alone = em_prototypes(source[b : b + 1], per_image_init[b], kernel=kernel)  # type: ignore[arg-type]
        assert torch.allclose(batched.prototypes[b], alone.prototypes[0], atol=1e-6)
        assert torch.allclose(batched.responsibilities[b], alone.responsibilities[0], atol=1e-6)
        alone = em_prototypes(source[b : b + 1], shared_init, kernel=kernel)  # type: ignore[arg-type]
        assert torch.allclose(shared.prototypes[b], alone.prototypes[0], atol=1e-6)


def test_zero_iterations_returns_normalised_init_and_outputs_carry_no_grad() -> None:
    source = torch.randn(1, 4, 2, requires_grad=True)
    init = torch.tensor([[3.0, 4.0], [0.0, -2.0]], requires_grad=True)
    result = em_prototypes(source, init, iterations=0)
    assert result.prototypes[0].flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, -1.0])
    assert not result.prototypes.requires_grad
    assert not result.responsibilities.requires_grad
    assert not result.reconstruct().requires_grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_returns_source_dtype(dtype: torch.dtype) -> None:
    source = torch.randn(2, 5, 3).to(dtype)
    result = em_prototypes(source, torch.randn(4, 3))
    assert result.prototypes.dtype == dtype
    assert result.responsibilities.dtype == dtype
    assert result.reconstruct().dtype == dtype
    assert isinstance(result, EMResult)


@pytest.mark.parametrize(
    ("source", "init", "options", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(2, 3), {}, r"source must be a float \[B, m, d\]"),
        (torch.zeros(1, 4, 3, dtype=torch.int64), torch.zeros(2, 3), {}, "source must be a float"),
        (torch.zeros(1, 4, 3), torch.zeros(2, 5), {}, r"init must be \[q, d\] or \[B, q, d\]"),
        (torch.zeros(1, 4, 3), torch.zeros(0, 3), {}, "init must be"),
        (torch.zeros(2, 4, 3), torch.zeros(3, 2, 3), {}, "init has batch size 3 but source has 2"),
        (torch.zeros(1, 0, 3), torch.zeros(2, 3), {}, "source has no features"),
        (torch.zeros(1, 4, 3), torch.zeros(2, 3), {"iterations": -1}, "iterations must be >= 0"),
        (torch.zeros(1, 4, 3), torch.zeros(2, 3), {"sigma": 0.0}, "sigma must be positive"),
        (torch.zeros(1, 4, 3), torch.zeros(2, 3), {"kernel": "cosine"}, "kernel must be one of"),
    ],
)
def test_em_input_errors_name_the_argument(
    source: torch.Tensor, init: torch.Tensor, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        em_prototypes(source, init, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# momentum_update, init_prototypes and the whole NPR step
# --------------------------------------------------------------------------------------------------------------------


def test_momentum_update_by_hand() -> None:
    new = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # batch mean [[0, 1], [0.5, 0.5]]
    buffer = torch.eye(2)
    pointer = buffer.data_ptr()
    momentum_update(buffer, new, 0.9, normalize=False)
    assert buffer.data_ptr() == pointer
    assert buffer.tolist()[0] == pytest.approx([0.9, 0.1])
    assert buffer.tolist()[1] == pytest.approx([0.05, 0.95])
    buffer = torch.eye(2)
    momentum_update(buffer, new)
    assert buffer.tolist()[0] == pytest.approx([0.9 / math.sqrt(0.82), 0.1 / math.sqrt(0.82)])
    assert buffer.tolist()[1] == pytest.approx([0.05 / math.sqrt(0.905), 0.95 / math.sqrt(0.905)])
    buffer = torch.eye(2)
    momentum_update(buffer, new, 0.0, normalize=False)
    assert buffer.flatten().tolist() == pytest.approx([0.0, 1.0, 0.5, 0.5])
    buffer = torch.eye(2, dtype=torch.float16)
    momentum_update(buffer, new, 1.0)
    assert buffer.dtype == torch.float16
    assert buffer.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    ("buffer", "new", "momentum", "message"),
    [
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), 0.9, r"buffer must be a float \[q, d\]"),
        (torch.zeros(2, 2), torch.zeros(2, 2), 0.9, r"new_prototypes must be \[B, q, d\] = \[B, 2, 2\]"),
        (torch.zeros(2, 2), torch.zeros(1, 3, 2), 0.9, "new_prototypes must be"),
        (torch.zeros(2, 2), torch.zeros(1, 2, 2), 1.5, r"momentum must be in \[0, 1\]"),
    ],
)
def test_momentum_update_errors(buffer: torch.Tensor, new: torch.Tensor, momentum: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        momentum_update(buffer, new, momentum)


def test_init_prototypes_is_scaled_gaussian_then_l2() -> None:
    raw = init_prototypes(5, 8, generator=torch.Generator().manual_seed(0), normalize=False)
    expected = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * math.sqrt(2 / 8)
    assert torch.allclose(raw, expected)
    unit = init_prototypes(5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(unit, expected / expected.norm(dim=-1, keepdim=True))
    assert init_prototypes(3, 4, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="num and dim must be >= 1"):
        init_prototypes(0, 4)


def test_em_runs_in_float32_inside_autocast() -> None:
    generator = torch.Generator().manual_seed(3)
    source, init = torch.randn(2, 16, 8, generator=generator), torch.randn(4, 8, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = em_prototypes(source, init)
    plain = em_prototypes(source, init)
    assert mixed.prototypes.dtype == torch.float32
    torch.testing.assert_close(mixed.prototypes, plain.prototypes)
    torch.testing.assert_close(mixed.responsibilities, plain.responsibilities)
