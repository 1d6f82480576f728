"""ZUTIS's set criterion (dice + BCE, Hungarian mask matching per decoder layer) against hand and naive values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from seg_losses import (
    SetCriterionResult,
    dice_loss,
    match_masks,
    pairwise_mask_cost,
    set_criterion_loss,
    sigmoid_bce_loss,
)

# --------------------------------------------------------------------------------------------------------------------
# Independent naive reference: pure-python per-pixel formulas and brute-force matching (no scipy, no vectorisation)
# --------------------------------------------------------------------------------------------------------------------


def naive_pair_cost(logits: list[float], target: list[float]) -> float:
    """Dice (+1 smoothing) + mean BCE of one mask, pixel by pixel in float64 python."""
    probs = [1.0 / (1.0 + math.exp(-x)) for x in logits]
    dice = 1.0 - (2.0 * sum(p * t for p, t in zip(probs, target, strict=True)) + 1.0) / (sum(probs) + sum(target) + 1.0)
    bce = -sum(t * math.log(p) + (1.0 - t) * math.log(1.0 - p) for p, t in zip(probs, target, strict=True))
    return dice + bce / len(target)


def naive_cost_matrix(logits: torch.Tensor, targets: torch.Tensor) -> list[list[float]]:
    """``[Q][T]`` naive costs of flattened ``logits [Q, P]`` and ``targets [T, P]``."""
    rows, cols = logits.double().tolist(), targets.double().tolist()
    return [[naive_pair_cost(row, col) for col in cols] for row in rows]


def brute_force_match(cost: list[list[float]]) -> list[tuple[int, int]]:
    """The (pred, target) pairs of minimal total cost, over all one-to-one maps, sorted by pred."""
    num_pred, num_target = len(cost), len(cost[0])
    if num_target <= num_pred:
        candidates = [
            [(perm[j], j) for j in range(num_target)] for perm in itertools.permutations(range(num_pred), num_target)
        ]
    else:
        candidates = [
            [(i, perm[i]) for i in range(num_pred)] for perm in itertools.permutations(range(num_target), num_pred)
        ]
    return sorted(min(candidates, key=lambda pairs: sum(cost[q][t] for q, t in pairs)))


def naive_criterion(
    layers: list[torch.Tensor], targets: list[torch.Tensor], size: tuple[int, int] | None = None
) -> tuple[list[float], int, list[list[list[tuple[int, int]]]]]:
    """Per-layer sums of matched costs, number of matched pairs per layer, and indices[layer][image]."""
    layer_sums = [0.0] * len(layers)
    pairs = 0
    indices: list[list[list[tuple[int, int]]]] = [[] for _ in layers]
    for image, masks in enumerate(targets):
        if size is not None and tuple(masks.shape[-2:]) != size:
            step_h, step_w = masks.shape[1] // size[0], masks.shape[2] // size[1]  # integer factors in these tests
            masks = masks[:, ::step_h, ::step_w]  # noqa: PLW2901 -- nearest downsampling by hand
        keep = [j for j in range(masks.shape[0]) if bool(masks[j].any())]
        height, width = masks.shape[1:]
        for layer, logits in enumerate(layers):
            if not keep:
                indices[layer].append([])
                continue
            up = F.interpolate(logits[image : image + 1].double(), size=(height, width), mode="bilinear")[0]
            cost = naive_cost_matrix(up.flatten(1), masks[keep].flatten(1).double())
            matched = brute_force_match(cost)
            layer_sums[layer] += sum(cost[q][t] for q, t in matched)
            indices[layer].append([(q, keep[t]) for q, t in matched])
            if layer == 0:
                pairs += len(matched)
    return layer_sums, pairs, indices


def result_pairs(result: SetCriterionResult) -> list[list[list[tuple[int, int]]]]:
    return [
        [list(zip(pred.tolist(), target.tolist(), strict=True)) for pred, target in per_image]
        for per_image in result.indices
    ]


def random_masks(generator: torch.Generator, count: int, height: int, width: int) -> torch.Tensor:
    masks = torch.rand(count, height, width, generator=generator) > 0.6
    masks[:, 0, 0] = True  # never empty
    return masks


# --------------------------------------------------------------------------------------------------------------------
# dice_loss and sigmoid_bce_loss by hand
# --------------------------------------------------------------------------------------------------------------------


def test_dice_loss_by_hand() -> None:
    log3 = math.log(3.0)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [log3, -log3, -log3, -log3]])
    target = torch.tensor([[True, False, False, False], [True, False, False, False]])
    # Row 0: p = 1/2 everywhere: 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 1/2.
    # Row 1: p = (3/4, 1/4, 1/4, 1/4): 1 - (2 * 3/4 + 1) / (3/2 + 1 + 1) = 1 - 2.5 / 3.5 = 2/7.
    torch.testing.assert_close(dice_loss(logits, target), torch.tensor([0.5, 2.0 / 7.0]))
    # Without smoothing: 1 - 1 / 3 and 1 - 1.5 / 2.5.
    torch.testing.assert_close(dice_loss(logits, target.float(), smooth=0.0), torch.tensor([2.0 / 3.0, 0.4]))


def test_dice_loss_of_empty_target_and_empty_prediction_is_zero_with_smoothing() -> None:
    logits = torch.full((1, 5), -100.0)
    assert dice_loss(logits, torch.zeros(1, 5)).item() == pytest.approx(0.0, abs=1e-6)


def test_sigmoid_bce_loss_by_hand() -> None:
    log3 = math.log(3.0)
    logits = torch.tensor([[0.0, 0.0], [log3, -log3], [log3, -log3]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # ln 2 at p = 1/2 whatever the target; -ln(3/4) when both pixels are right; -ln(1/4) when both are wrong.
    expected = torch.tensor([math.log(2.0), math.log(4.0 / 3.0), math.log(4.0)])
    torch.testing.assert_close(sigmoid_bce_loss(logits, target), expected)
    torch.testing.assert_close(sigmoid_bce_loss(logits, target.bool()), expected)


def test_sigmoid_bce_loss_is_exact_for_large_logits() -> None:
    # A confidently wrong pixel costs |x| (the official probability-space BCE would cap it at 100).
    loss = sigmoid_bce_loss(torch.tensor([[200.0, -300.0]]), torch.tensor([[0.0, 1.0]]))
    torch.testing.assert_close(loss, torch.tensor([250.0]))


# --------------------------------------------------------------------------------------------------------------------
# pairwise_mask_cost and match_masks
# --------------------------------------------------------------------------------------------------------------------


def test_pairwise_cost_equals_double_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, generator=generator) * 2.0
    targets = torch.rand(3, 12, generator=generator) > 0.5
    cost = pairwise_mask_cost(logits, targets)
    assert cost.shape == (4, 3)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(
        cost.double(), torch.tensor(naive_cost_matrix(logits, targets.double()), dtype=torch.float64)
    )
    for q in range(4):
        for t in range(3):
            one = dice_loss(logits[q : q + 1], targets[t : t + 1]) + sigmoid_bce_loss(
                logits[q : q + 1], targets[t : t + 1]
            )
            torch.testing.assert_close(cost[q, t], one[0])


def test_pairwise_cost_without_targets_is_empty() -> None:
    assert pairwise_mask_cost(torch.zeros(3, 4), torch.zeros(0, 4, dtype=torch.bool)).shape == (3, 0)


@pytest.mark.parametrize("seed", range(5))
def test_match_masks_minimises_total_cost_against_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 9, generator=generator) * 3.0
    targets = torch.rand(3, 9, generator=generator) > 0.5
    pred_idx, target_idx = match_masks(logits, targets)
    assert pred_idx.dtype == torch.int64
    assert torch.equal(pred_idx, pred_idx.sort().values)
    pairs = list(zip(pred_idx.tolist(), target_idx.tolist(), strict=True))
    assert pairs == brute_force_match(naive_cost_matrix(logits, targets.double()))


def test_match_masks_with_more_targets_than_queries_matches_every_query() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 6, generator=generator)
    targets = torch.rand(3, 6, generator=generator) > 0.5
    pred_idx, target_idx = match_masks(logits, targets)
    pairs = list(zip(pred_idx.tolist(), target_idx.tolist(), strict=True))
    assert pairs == brute_force_match(naive_cost_matrix(logits, targets.double()))
    assert pred_idx.tolist() == [0, 1]


# --------------------------------------------------------------------------------------------------------------------
# set_criterion
# --------------------------------------------------------------------------------------------------------------------


def test_perfect_prediction_gives_near_zero_loss_and_matches_the_right_queries() -> None:
    masks0 = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks0[0, :3, :3] = True
    masks0[1, 3:, 2:] = True
    masks1 = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks1[0, :, :2] = True
    masks1[1, 1:4, 3:5] = True
    masks1[2, 5, :] = True
    owner = [{0: 3, 1: 1}, {0: 4, 1: 0, 2: 2}]  # target -> query holding it
    layers = []
    for _ in range(2):
        logits = torch.full((2, 5, 6, 6), -20.0)
        for image, masks in enumerate((masks0, masks1)):
            for target, query in owner[image].items():
                logits[image, query][masks[target]] = 20.0
        layers.append(logits)
    result = set_criterion_loss(layers, [masks0, masks1])
    assert result.loss.item() == pytest.approx(0.0, abs=1e-5)
    assert result.num_targets == 5
    assert len(result.per_layer) == 2
    for per_image in result.indices:
        for image, (pred_idx, target_idx) in enumerate(per_image):
            assert dict(zip(target_idx.tolist(), pred_idx.tolist(), strict=True)) == owner[image]


@pytest.mark.parametrize("size", [None, (4, 4)])
def test_official_reduction_equals_naive_loop(size: tuple[int, int] | None) -> None:
    generator = torch.Generator().manual_seed(1)
    batch, num_layers = 3, 2
    layers = [torch.randn(batch, 4, 3, 3, generator=generator) * 2.0 for _ in range(num_layers)]
    targets = [random_masks(generator, count, 8, 8) for count in (3, 1, 2)]
    result = set_criterion_loss(layers, targets, target_size=size)
    layer_sums, _, indices = naive_criterion(layers, targets, size)
    torch.testing.assert_close(result.loss.double(), torch.tensor(sum(layer_sums) / batch, dtype=torch.float64))
    assert result.per_layer == pytest.approx([value / batch for value in layer_sums], rel=1e-5)
    assert result_pairs(result) == indices
    assert result.num_targets == 6


def test_mean_reduction_equals_naive_loop() -> None:
    generator = torch.Generator().manual_seed(2)
    layers = [torch.randn(2, 3, 5, 5, generator=generator) for _ in range(3)]
    targets = [random_masks(generator, count, 5, 5) for count in (2, 4)]  # image 1 has T > Q: 3 pairs
    result = set_criterion_loss(layers, targets, reduction="mean")
    layer_sums, pairs, indices = naive_criterion(layers, targets)
    assert pairs == 5
    expected = sum(layer_sums) / (3 * pairs)
    torch.testing.assert_close(result.loss.double(), torch.tensor(expected, dtype=torch.float64))
    assert result.per_layer == pytest.approx([value / pairs for value in layer_sums], rel=1e-5)
    assert result_pairs(result) == indices
    official = set_criterion_loss(layers, targets)
    torch.testing.assert_close(official.loss.double(), torch.tensor(sum(layer_sums) / 2, dtype=torch.float64))


def test_image_without_targets_contributes_nothing_but_counts_in_the_batch() -> None:
    generator = torch.Generator().manual_seed(3)
    layers = [torch.randn(2, 3, 4, 4, generator=generator)]
    with_targets = random_masks(generator, 2, 4, 4)
    targets = [torch.zeros(0, 4, 4, dtype=torch.bool), with_targets]
    result = set_criterion_loss(layers, targets)
    alone = set_criterion_loss([layers[0][1:]], [with_targets])
    assert torch.isfinite(result.loss)
    torch.testing.assert_close(result.loss, alone.loss / 2)
    pred, target = result.indices[0][0]
    assert pred.numel() == 0
    assert target.numel() == 0
    mean = set_criterion_loss(layers, targets, reduction="mean")
    torch.testing.assert_close(mean.loss, set_criterion_loss([layers[0][1:]], [with_targets], reduction="mean").loss)


@pytest.mark.parametrize("reduction", ["official", "mean"])
def test_batch_without_targets_gives_a_zero_loss_that_backpropagates(reduction: str) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    targets = [torch.zeros(0, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 4, dtype=torch.bool)]
    result = set_criterion_loss([logits], targets, reduction=reduction)  # type: ignore[arg-type]
    assert result.loss.item() == 0.0
    assert result.per_layer == (0.0,)
    assert result.num_targets == 0
    torch.autograd.backward(result.loss)
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_empty_target_masks_are_dropped_and_indices_refer_to_the_original_list() -> None:
    generator = torch.Generator().manual_seed(4)
    layers = [torch.randn(1, 4, 6, 6, generator=generator) for _ in range(2)]
    full = random_masks(generator, 2, 6, 6)
    with_empty = torch.stack([full[0], torch.zeros(6, 6, dtype=torch.bool), full[1]])
    result = set_criterion_loss(layers, [with_empty])
    reference = set_criterion_loss(layers, [full])
    torch.testing.assert_close(result.loss, reference.loss)
    assert result.num_targets == 2
    for layer in range(2):
        ref_pred, ref_target = reference.indices[layer][0]
        pred, target = result.indices[layer][0]
        assert torch.equal(pred, ref_pred)
        assert target.tolist() == [[0, 2][t] for t in ref_target.tolist()]


def test_mask_that_vanishes_when_resized_is_dropped() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 1, 1] = True  # nearest 8 -> 4 samples even rows/columns only
    layers = [torch.randn(1, 3, 4, 4)]
    result = set_criterion_loss(layers, [masks], target_size=(4, 4))
    assert result.num_targets == 1
    assert result.indices[0][0][1].tolist() == [0]
    layer_sums, _, _ = naive_criterion(layers, [masks[:1]], (4, 4))
    assert result.loss.item() == pytest.approx(layer_sums[0], rel=1e-5)


def test_gradient_reaches_the_matched_queries_of_every_layer_only() -> None:
    generator = torch.Generator().manual_seed(5)
    layers = [(torch.randn(2, 4, 3, 3, generator=generator)).requires_grad_() for _ in range(2)]
    targets = [random_masks(generator, 2, 6, 6), random_masks(generator, 1, 6, 6)]
    result = set_criterion_loss(layers, targets)
    torch.autograd.backward(result.loss)
    for layer, logits in enumerate(layers):
        assert logits.grad is not None
        for image in range(2):
            matched = set(result.indices[layer][image][0].tolist())
            for query in range(4):
                grad_norm = logits.grad[image, query].abs().sum().item()
                assert (grad_norm > 0) == (query in matched)
    # A small step against the gradient lowers the loss.
    with torch.no_grad():
        stepped = [logits - 0.05 * logits.grad for logits in layers]  # type: ignore[operator]
    assert set_criterion_loss(stepped, targets).loss.item() < result.loss.item()


def test_pairwise_cost_under_autocast_keeps_float32_precision() -> None:
    generator = torch.Generator().manual_seed(8)
    logits = torch.randn(6, 64, generator=generator) * 3.0
    targets = torch.rand(5, 64, generator=generator) > 0.5
    reference = pairwise_mask_cost(logits, targets)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cost = pairwise_mask_cost(logits, targets)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, reference)


def test_autocast_computes_in_float32() -> None:
    generator = torch.Generator().manual_seed(6)
    layers = [torch.randn(2, 3, 4, 4, generator=generator).bfloat16() for _ in range(2)]
    targets = [random_masks(generator, 2, 8, 8), random_masks(generator, 1, 8, 8)]
    reference = set_criterion_loss([logits.float() for logits in layers], targets)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        result = set_criterion_loss(layers, targets)
        flat = layers[0][0].flatten(1)
        cost = pairwise_mask_cost(flat, targets[0][:, ::2, ::2].flatten(1))
        dice = dice_loss(flat[:2], targets[0][:, ::2, ::2].flatten(1))
    assert result.loss.dtype == torch.float32
    assert cost.dtype == torch.float32
    assert dice.dtype == torch.float32
    torch.testing.assert_close(result.loss, reference.loss)


# --------------------------------------------------------------------------------------------------------------------
# Errors name the argument
# --------------------------------------------------------------------------------------------------------------------


def test_loss_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="pred_logits must be a floating-point \\[N, P\\]"):
        dice_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="target must have the shape of pred_logits"):
        sigmoid_bce_loss(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="smooth"):
        dice_loss(torch.zeros(2, 4), torch.zeros(2, 4), smooth=-1.0)
    with pytest.raises(ValueError, match="targets must be a \\[T, P\\]"):
        pairwise_mask_cost(torch.zeros(2, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="pred_logits produced a non-finite"):
        match_masks(torch.full((2, 4), float("nan")), torch.ones(1, 4))


def test_set_criterion_errors_name_the_argument() -> None:
    logits = torch.zeros(2, 3, 4, 4)
    masks = [torch.ones(1, 4, 4, dtype=torch.bool)] * 2
    with pytest.raises(ValueError, match="layer_mask_logits must be a non-empty sequence"):
        set_criterion_loss([], masks)
    with pytest.raises(ValueError, match="layer_mask_logits must be a non-empty sequence"):
        set_criterion_loss(logits, masks)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer_mask_logits\\[1\\] must be a floating-point \\[B, Q, H, W\\]"):
        set_criterion_loss([logits, torch.zeros(2, 3, 4)], masks)
    with pytest.raises(ValueError, match="layer_mask_logits\\[1\\] must have the shape"):
        set_criterion_loss([logits, torch.zeros(2, 4, 4, 4)], masks)
    with pytest.raises(ValueError, match=r"targets must be a sequence .* B = 2"):
        set_criterion_loss([logits], masks[:1])
    with pytest.raises(ValueError, match="targets\\[1\\] must be a bool \\[T, H, W\\]"):
        set_criterion_loss([logits], [masks[0], torch.ones(1, 4, 4)])
    with pytest.raises(ValueError, match="target_size"):
        set_criterion_loss([logits], masks, target_size=(4, 0))
    with pytest.raises(ValueError, match="reduction"):
        set_criterion_loss([logits], masks, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer_mask_logits produced a non-finite matching cost for image 0"):
        set_criterion_loss([torch.full((2, 3, 4, 4), float("inf"))], masks)
