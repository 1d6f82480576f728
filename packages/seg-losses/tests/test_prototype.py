"""PGSeg's PG loss (Eq. 3) with Hungarian matching and hard rejection against hand and naive computations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seg_losses import pg_loss


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------------------------------
# pg_loss
# --------------------------------------------------------------------------------------------------------------------


def best_pairs(sims: list[list[float]], maximize: bool) -> list[tuple[int, int]]:
    """Brute-force one-to-one matching of rows to columns (independent of scipy)."""
    num_rows, num_cols = len(sims), len(sims[0])
    if num_rows <= num_cols:
        candidates = [
            list(zip(range(num_rows), perm, strict=True)) for perm in itertools.permutations(range(num_cols), num_rows)
        ]
    else:
        candidates = [
            list(zip(perm, range(num_cols), strict=True)) for perm in itertools.permutations(range(num_rows), num_cols)
        ]
    sign = 1.0 if maximize else -1.0
    return sorted(max(candidates, key=lambda pairs: sign * sum(sims[r][c] for r, c in pairs)))


def naive_pg(
    groups: torch.Tensor,
    prototypes: torch.Tensor,
    tau: float,
    similarity: str,
    *,
    threshold: float | None = None,
    rejection: str = "cosine",
    maximize: bool = True,
    rectangular: str = "both",
) -> tuple[float, float, float, list[list[int]]]:
    """Eq. 3 with loops over pairs in float64 python: (loss, kept fraction, mean matched similarity, assignment)."""
    batch, num_groups, _ = groups.shape
    num_prototypes = prototypes.shape[1]
    losses, kept_total, matched_all, assignments = [], 0, [], []
    for b in range(batch):
        gs, ps = groups[b].double().tolist(), prototypes[b].double().tolist()
        sims = []
        for g in gs:
            row = []
            for p in ps:
                if similarity == "cosine":
                    dot = sum(x * y for x, y in zip(g, p, strict=True))
                    row.append(dot / (math.sqrt(sum(x * x for x in g)) * math.sqrt(sum(y * y for y in p))))
                else:
                    row.append(-sum(abs(x - y) for x, y in zip(g, p, strict=True)))
            sims.append(row)
        pairs = best_pairs(sims, maximize)
        matched = [sims[i][j] for i, j in pairs]
        matched_all += matched
        assignment = [-1] * num_groups
        for i, j in pairs:
            assignment[i] = j
        assignments.append(assignment)
        scores = matched
        if threshold is not None and rejection == "minmax":
            low, high = min(matched), max(matched)
            scores = [(s - low) / (high - low) if high > low else 0.0 for s in matched]
        kept = [pair for pair, score in zip(pairs, scores, strict=True) if threshold is None or score > threshold]
        kept_total += len(kept)
        total = 0.0
        for i, j in kept:
            row_term = sims[i][j] / tau - math.log(sum(math.exp(sims[i][k] / tau) for k in range(num_prototypes)))
            col_term = sims[i][j] / tau - math.log(sum(math.exp(sims[k][j] / tau) for k in range(num_groups)))
            if rectangular == "one_sided" and num_groups < num_prototypes:
                total += row_term
            elif rectangular == "one_sided" and num_groups > num_prototypes:
                total += col_term
            else:
                total += row_term + col_term
        losses.append(-total / len(kept) if kept else 0.0)
    num_pairs = batch * min(num_groups, num_prototypes)
    return sum(losses) / batch, kept_total / num_pairs, sum(matched_all) / len(matched_all), assignments


# (threshold, rejection) per similarity kind: raw thresholds on the similarity's own scale (cosine in [-1, 1], the
# negative L1 distance <= 0), and the official min-max rule.
HRS_SETTINGS = {
    "cosine": [(None, "cosine"), (0.1, "cosine"), (0.3, "minmax")],
    "neg_abs": [(None, "cosine"), (-0.5, "cosine"), (0.3, "minmax")],
}


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (4, 2)])
@pytest.mark.parametrize(("similarity", "dim"), [("cosine", 4), ("neg_abs", 1), ("neg_abs", 3)])
@pytest.mark.parametrize("hrs", [0, 1, 2])
def test_pg_loss_equals_naive_loop(shape: tuple[int, int], similarity: str, dim: int, hrs: int) -> None:
    num_groups, num_prototypes = shape
    threshold, rejection = HRS_SETTINGS[similarity][hrs]
    generator = torch.Generator().manual_seed(num_groups * 10 + num_prototypes + dim)
    groups = torch.randn(3, num_groups, dim, generator=generator)
    prototypes = torch.randn(3, num_prototypes, dim, generator=generator)
    tau = 0.1 if similarity == "cosine" else 0.5  # L1 similarities are larger: a milder temperature
    result = pg_loss(
        groups,
        prototypes,
        tau=tau,
        similarity=similarity,  # type: ignore[arg-type]
        reject_threshold=threshold,
        rejection=rejection,  # type: ignore[arg-type]
    )
    loss, kept_fraction, matched_similarity, assignment = naive_pg(
        groups, prototypes, tau, similarity, threshold=threshold, rejection=rejection
    )
    assert float(result.loss) == pytest.approx(loss, rel=1e-4, abs=1e-5)
    assert result.kept_fraction == pytest.approx(kept_fraction)
    if threshold is None:
        assert result.kept_fraction == 1.0
    assert result.matched_similarity == pytest.approx(matched_similarity, rel=1e-5, abs=1e-6)
    assert result.assignment.tolist() == assignment
    assert result.kept.shape == (3, num_groups)
    assert int(result.kept.sum()) == round(kept_fraction * 3 * min(num_groups, num_prototypes))


def test_hrs_settings_of_the_naive_comparison_do_reject() -> None:
    """Guard for the test above: its HRS settings must actually drop some pairs (else they test nothing)."""
    generator = torch.Generator().manual_seed(33 + 4)
    groups = torch.randn(3, 3, 4, generator=generator)
    prototypes = torch.randn(3, 3, 4, generator=generator)
    for threshold, rejection in HRS_SETTINGS["cosine"][1:]:
        result = pg_loss(groups, prototypes, reject_threshold=threshold, rejection=rejection)  # type: ignore[arg-type]
        assert 0.0 < result.kept_fraction < 1.0


@pytest.mark.parametrize(("num_groups", "num_prototypes"), [(3, 3), (2, 4), (4, 2)])
def test_min_matching_and_one_sided_equal_naive_loop(num_groups: int, num_prototypes: int) -> None:
    generator = torch.Generator().manual_seed(7)
    groups = torch.randn(2, num_groups, 5, generator=generator)
    prototypes = torch.randn(2, num_prototypes, 5, generator=generator)
    result = pg_loss(groups, prototypes, match="min", rectangular="one_sided")
    loss, _, matched_similarity, assignment = naive_pg(
        groups, prototypes, 0.1, "cosine", maximize=False, rectangular="one_sided"
    )
    assert float(result.loss) == pytest.approx(loss, rel=1e-4)
    assert result.matched_similarity == pytest.approx(matched_similarity, rel=1e-5, abs=1e-6)
    assert result.assignment.tolist() == assignment
    best = pg_loss(groups, prototypes)
    assert best.matched_similarity > result.matched_similarity


def test_perfect_alignment_gives_near_zero_loss() -> None:
    permutation = [2, 0, 3, 1]
    prototypes = torch.eye(4).unsqueeze(0)
    groups = 3 * torch.eye(4)[permutation].unsqueeze(0)
    result = pg_loss(groups, prototypes, tau=0.01)
    assert float(result.loss) == pytest.approx(0.0, abs=1e-6)
    assert result.assignment.tolist() == [permutation]
    assert result.matched_similarity == pytest.approx(1.0)
    assert result.kept_fraction == 1.0


def test_uniform_logits_give_log_g_plus_log_p_not_halved() -> None:
    generator = torch.Generator().manual_seed(4)
    groups = torch.randn(2, 3, 6, generator=generator)
    prototypes = torch.randn(2, 5, 6, generator=generator)
    result = pg_loss(groups, prototypes, tau=1e6)
    assert float(result.loss) == pytest.approx(math.log(3) + math.log(5), rel=1e-5)


def test_hard_rejection_by_hand() -> None:
    prototypes = torch.eye(2).expand(2, 2, 2)
    # Image 0: both groups on their prototype (cos 1, 1). Image 1: cos 1 and 0.1/|(-1, 0.1)| ≈ 0.0995.
    groups = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.1]]])
    raw = pg_loss(groups, prototypes, tau=0.1, reject_threshold=0.5)
    assert raw.kept_fraction == pytest.approx(3 / 4)
    assert raw.kept.tolist() == [[True, True], [True, False]]
    assert raw.assignment.tolist() == [[0, 1], [0, 1]]
    strict = pg_loss(groups, prototypes, reject_threshold=1.0)  # cos exactly 1 is not *beyond* φ = 1
    assert strict.kept_fraction == 0.0
    # Min-max per image: image 0's equal similarities normalise to 0 (all rejected), image 1's to [1, 0].
    minmax = pg_loss(groups, prototypes, tau=1.0, reject_threshold=0.1, rejection="minmax")
    assert minmax.kept.tolist() == [[False, False], [True, False]]
    assert minmax.kept_fraction == pytest.approx(1 / 4)
    second = naive_pg(groups[1:], prototypes[1:], 1.0, "cosine", threshold=0.1, rejection="minmax")[0]
    assert float(minmax.loss) == pytest.approx(second / 2, rel=1e-5)


def test_all_rejected_gives_zero_loss_and_finite_zero_grads() -> None:
    groups = torch.randn(2, 3, 4, requires_grad=True)
    prototypes = torch.randn(2, 3, 4)
    result = pg_loss(groups, prototypes, reject_threshold=2.0)
    assert result.kept_fraction == 0.0
    assert float(result.loss.detach()) == 0.0
    torch.autograd.backward(result.loss)
    assert groups.grad is not None
    assert torch.isfinite(groups.grad).all()
    assert torch.equal(groups.grad, torch.zeros_like(groups))


def test_gradient_reaches_groups_not_prototypes_and_tensor_tau() -> None:
    generator = torch.Generator().manual_seed(5)
    groups = torch.randn(2, 3, 4, generator=generator).requires_grad_()
    prototypes = torch.randn(2, 3, 4, generator=generator).requires_grad_()
    tau = torch.tensor(0.1, requires_grad=True)
    result = pg_loss(groups, prototypes, tau=tau)
    assert float(result.loss.detach()) == pytest.approx(
        float(pg_loss(groups, prototypes, tau=0.1).loss.detach()), rel=1e-6
    )
    torch.autograd.backward(result.loss)
    assert groups.grad is not None
    assert torch.isfinite(groups.grad).all()
    assert groups.grad.abs().sum() > 0
    assert prototypes.grad is None
    assert tau.grad is not None
    assert tau.grad.abs() > 0


@pytest.mark.parametrize(
    ("groups", "prototypes", "options", "message"),
    [
        (torch.zeros(3, 4), torch.zeros(1, 3, 4), {}, r"groups must be a float \[B, g, d\]"),
        (torch.zeros(1, 0, 4), torch.zeros(1, 3, 4), {}, "groups must be"),
        (torch.zeros(1, 3, 4), torch.zeros(1, 3, 5), {}, r"prototypes must be \[B, p, d\] with the B and d"),
        (torch.zeros(1, 3, 4), torch.zeros(2, 3, 4), {}, "prototypes must be"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"tau": 0.0}, "tau must be a positive"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"tau": torch.ones(2)}, "tau must be a float or a one-element"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"similarity": "dot"}, "similarity must be one of"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"rejection": "raw"}, "rejection must be one of"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"match": "best"}, "match must be one of"),
        (torch.ones(1, 3, 4), torch.ones(1, 3, 4), {"rectangular": "left"}, "rectangular must be one of"),
        (torch.full((1, 3, 4), math.nan), torch.ones(1, 3, 4), {}, "NaN or infinite"),
    ],
)
def test_pg_loss_input_errors_name_the_argument(
    groups: torch.Tensor, prototypes: torch.Tensor, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pg_loss(groups, prototypes, **options)  # type: ignore[arg-type]


def test_pg_loss_runs_in_float32_inside_autocast() -> None:
    generator = torch.Generator().manual_seed(4)
    groups = torch.randn(2, 4, 8, generator=generator)
    prototypes = torch.randn(2, 4, 8, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = pg_loss(groups, prototypes)
    plain = pg_loss(groups, prototypes)
    assert mixed.loss.dtype == torch.float32
    torch.testing.assert_close(mixed.loss, plain.loss)
