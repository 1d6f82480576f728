"""SimCon, MV-SimCon and the negative-cosine view loss (Patel et al., 2023, Eqs. 3-10) against values by hand.

The hand-made vectors use 3-4-5 triangles so that every cosine is exact in float32 (``[3, 4] / 5 = [0.6, 0.8]``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seg_losses import (
    PredictionHead,
    info_nce_loss,
    intra_modal_positives,
    joint_positives,
    lambda_schedule,
    mv_simcon_loss,
    negative_cosine_loss,
    simcon_loss,
    symmetric_simcon_loss,
)

Y, N = True, False
e = math.exp


def _bool(rows: list[list[bool]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _naive_simcon(
    anchors: Tensor,
    others: Tensor,
    positives: Tensor,
    scale: float,
    *,
    intra_scale: float | None = None,
    mask_self: bool = True,
    use_intra: bool = True,
) -> float:
    """Eq. 3 with Python loops and math.exp, independent of the vectorised code."""
    intra = scale if intra_scale is None else intra_scale
    a = [[float(x) for x in row] for row in F.normalize(anchors.double(), dim=-1)]
    o = [[float(x) for x in row] for row in F.normalize(others.double(), dim=-1)]
    n = len(a)

    def dot(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    def e_ao(i: int, j: int) -> float:
        return e(scale * dot(a[i], o[j]))

    def e_aa(i: int, j: int) -> float:
        if not use_intra or (mask_self and i == j):
            return 0.0
        return e(intra * dot(a[i], a[j]))

    total = 0.0
    for i in range(n):
        denominator = sum(e_ao(i, j) for j in range(n)) + sum(e_aa(i, j) for j in range(n))
        chosen = [p for p in range(n) if bool(positives[i, p]) or p == i]
        total += -sum(math.log((e_ao(i, p) + e_aa(i, p)) / denominator) for p in chosen) / len(chosen)
    return total / n


# --- positives (Eqs. 5 and 8) ----------------------------------------------------------------------------------------


def test_intra_modal_positives_by_hand() -> None:
    # a=[1,0], b=[0.6,0.8], c=a scaled by 2, d=[0,-1]: cos(a,b)=0.6, cos(a,c)=1, cos(b,c)=0.6, cos(b,d)=-0.8, rest 0.
    vectors = torch.tensor([[1.0, 0.0], [3.0, 4.0], [2.0, 0.0], [0.0, -1.0]])
    at_06 = [[Y, Y, Y, N], [Y, Y, Y, N], [Y, Y, Y, N], [N, N, N, Y]]
    # Heaviside is 1 at 0: a similarity equal to the threshold (0.6 exactly) is a positive.
    assert torch.equal(intra_modal_positives(vectors, 0.6), _bool(at_06))
    at_07 = [[Y, N, Y, N], [N, Y, N, N], [Y, N, Y, N], [N, N, N, Y]]
    assert torch.equal(intra_modal_positives(vectors, 0.61), _bool(at_07))
    assert torch.equal(intra_modal_positives(vectors, 0.7), _bool(at_07))
    without_self = _bool(at_07) & ~torch.eye(4, dtype=torch.bool)
    assert torch.equal(intra_modal_positives(vectors, 0.7, include_self=False), without_self)
    # A negative threshold takes the orthogonal pairs too but not b-d (-0.8); above 1 only the diagonal is left.
    at_minus = intra_modal_positives(vectors, -0.5)
    assert int(at_minus.sum()) == 16 - 2
    assert not at_minus[1, 3]
    assert not at_minus[3, 1]
    assert torch.equal(intra_modal_positives(vectors, 1.5), torch.eye(4, dtype=torch.bool))


def test_joint_positives_are_the_union_over_views() -> None:
    view1 = torch.tensor([[1.0, 0.0], [3.0, 4.0], [2.0, 0.0]])  # cos 01=0.6, 02=1, 12=0.6
    view2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 5.0]])  # cos 01=0, 02=0, 12=1
    expected = _bool([[Y, N, Y], [N, Y, Y], [Y, Y, Y]])  # λ=0.7: 0-2 from view 1, 1-2 from view 2
    assert torch.equal(joint_positives(view1, view2, 0.7), expected)
    assert torch.equal(
        joint_positives(view1, view2, 0.7),
        intra_modal_positives(view1, 0.7) | intra_modal_positives(view2, 0.7),
    )
    assert not joint_positives(view1, view2, 0.7, include_self=False).diagonal().any()


def test_positives_are_thresholded_in_float32_under_autocast() -> None:
    # cos = 0.949 < λ = 0.95, but in bf16 both round to 0.94921875: bf16 similarities would make this a positive.
    angle = math.acos(0.949)
    vectors = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = intra_modal_positives(vectors, 0.95)
        mixed_joint = joint_positives(vectors, vectors, 0.95)
    assert not bool(mixed[0, 1])
    assert not bool(mixed_joint[0, 1])
    assert torch.equal(mixed, intra_modal_positives(vectors, 0.95))


# --- SimCon (Eq. 3) by hand ------------------------------------------------------------------------------------------

# anchors a0=[1,0], a1=[0.6,0.8]; others o0=[0,1], o1=[1,0] (anchor 0's caption is the noisy one).
# cross cos: a0·o0=0, a0·o1=1, a1·o0=0.8, a1·o1=0.6; intra cos: a0·a1=0.6 (and 1 on the diagonal).
ANCHORS = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
OTHERS = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
POSITIVES = _bool([[Y, Y], [N, Y]])  # anchor 0 takes sample 1 as positive; anchor 1 only its pair


def test_simcon_two_by_two_by_hand_with_self_masked() -> None:
    s = 2.0
    # Row 0: den = E^AO_00 + E^AO_01 + E^AA_01 (E^AA_00 masked); positives p=0 (num E^AO_00), p=1 (E^AO_01 + E^AA_01).
    den0 = e(s * 0) + e(s * 1) + e(s * 0.6)
    loss0 = -(math.log(e(s * 0) / den0) + math.log((e(s * 1) + e(s * 0.6)) / den0)) / 2
    # Row 1: den = E^AO_10 + E^AO_11 + E^AA_10; only p=1 (num E^AO_11).
    den1 = e(s * 0.8) + e(s * 0.6) + e(s * 0.6)
    loss1 = -math.log(e(s * 0.6) / den1)
    expected = (loss0 + loss1) / 2
    assert float(simcon_loss(ANCHORS, OTHERS, POSITIVES, s)) == pytest.approx(expected, rel=1e-6)
    # A tensor scale is the log of the scale (as in info_nce_loss).
    log_scale = torch.tensor(math.log(s))
    assert float(simcon_loss(ANCHORS, OTHERS, POSITIVES, log_scale)) == pytest.approx(expected, rel=1e-6)
    # The diagonal of positives is forced: leaving it out changes nothing.
    no_diagonal = POSITIVES & ~torch.eye(2, dtype=torch.bool)
    assert float(simcon_loss(ANCHORS, OTHERS, no_diagonal, s)) == pytest.approx(expected, rel=1e-6)


def test_simcon_two_by_two_by_hand_with_self_kept() -> None:
    s = 2.0
    # E^AA_ii = e^{s·1} joins the denominator of every row and the numerator of p = i.
    den0 = e(s * 0) + e(s * 1) + e(s * 1) + e(s * 0.6)
    loss0 = -(math.log((e(s * 0) + e(s * 1)) / den0) + math.log((e(s * 1) + e(s * 0.6)) / den0)) / 2
    den1 = e(s * 0.8) + e(s * 0.6) + e(s * 0.6) + e(s * 1)
    loss1 = -math.log((e(s * 0.6) + e(s * 1)) / den1)
    expected = (loss0 + loss1) / 2
    got = simcon_loss(ANCHORS, OTHERS, POSITIVES, s, mask_self_in_intra=False)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_simcon_intra_scale_and_use_intra_by_hand() -> None:
    s, s_intra = 2.0, 3.0
    den0 = e(s * 0) + e(s * 1) + e(s_intra * 0.6)
    loss0 = -(math.log(e(s * 0) / den0) + math.log((e(s * 1) + e(s_intra * 0.6)) / den0)) / 2
    den1 = e(s * 0.8) + e(s * 0.6) + e(s_intra * 0.6)
    loss1 = -math.log(e(s * 0.6) / den1)
    got = simcon_loss(ANCHORS, OTHERS, POSITIVES, s, intra_scale=s_intra)
    assert float(got) == pytest.approx((loss0 + loss1) / 2, rel=1e-6)
    got_log = simcon_loss(ANCHORS, OTHERS, POSITIVES, s, intra_scale=torch.tensor(math.log(s_intra)))
    assert float(got_log) == pytest.approx((loss0 + loss1) / 2, rel=1e-6)
    # Without intra-modal terms: cross-modal exponentials only.
    den0 = e(s * 0) + e(s * 1)
    den1 = e(s * 0.8) + e(s * 0.6)
    loss0 = -(math.log(e(s * 0) / den0) + math.log(e(s * 1) / den0)) / 2
    loss1 = -math.log(e(s * 0.6) / den1)
    got = simcon_loss(ANCHORS, OTHERS, POSITIVES, s, use_intra=False)
    assert float(got) == pytest.approx((loss0 + loss1) / 2, rel=1e-6)


@pytest.mark.parametrize("mask_self", [True, False])
@pytest.mark.parametrize("use_intra", [True, False])
def test_simcon_matches_a_naive_loop_on_random_inputs(mask_self: bool, use_intra: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    anchors = torch.randn(5, 4, generator=generator)
    others = torch.randn(5, 4, generator=generator)
    positives = torch.rand(5, 5, generator=generator) > 0.6
    got = simcon_loss(
        anchors, others, positives, 4.0, intra_scale=2.5, mask_self_in_intra=mask_self, use_intra=use_intra
    )
    expected = _naive_simcon(anchors, others, positives, 4.0, intra_scale=2.5, mask_self=mask_self, use_intra=use_intra)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_simcon_gradients_reach_both_modalities_and_the_scales() -> None:
    generator = torch.Generator().manual_seed(5)
    anchors = torch.randn(4, 6, generator=generator, requires_grad=True)
    others = torch.randn(4, 6, generator=generator, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    log_intra = torch.tensor(math.log(10.0), requires_grad=True)
    positives = intra_modal_positives(anchors, 0.0)
    loss = simcon_loss(anchors, others, positives, log_scale, intra_scale=log_intra)
    for grad in torch.autograd.grad(loss, [anchors, others, log_scale, log_intra]):
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


# --- SimCon is InfoNCE when λ is above every off-diagonal similarity ------------------------------------------------


def _above_off_diagonal(*embeddings: Tensor) -> float:
    highest = -1.0
    for x in embeddings:
        normalised = F.normalize(x, dim=-1)
        sims = (normalised @ normalised.t()).fill_diagonal_(-1.0)
        highest = max(highest, float(sims.max()))
    return highest + 1e-3


def test_simcon_is_infonce_without_the_intra_modal_terms() -> None:
    generator = torch.Generator().manual_seed(7)
    image = torch.randn(6, 8, generator=generator)
    text = torch.randn(6, 8, generator=generator)
    threshold = _above_off_diagonal(image, text)
    positives = intra_modal_positives(image, threshold)
    assert torch.equal(positives, torch.eye(6, dtype=torch.bool))
    scale = 5.0
    # Eq. 1 written independently: cross-entropy of the scaled cosine matrix against the diagonal.
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    eq1 = F.cross_entropy(logits, torch.arange(6))
    reduced = simcon_loss(image, text, positives, scale, use_intra=False)
    torch.testing.assert_close(reduced, eq1)
    # The equality needs use_intra=False. Masked, the intra-modal exponentials only add to the denominator, so the
    # loss is strictly larger; unmasked, E^AA_ii = e^s also joins the numerator and the (constant) self-similarity
    # dominates, so the loss is far smaller.
    masked = simcon_loss(image, text, positives, scale)
    assert float(masked) > float(eq1) + 1e-3
    unmasked = simcon_loss(image, text, positives, scale, mask_self_in_intra=False)
    assert float(unmasked) < float(eq1) - 1e-3
    # Both directions summed (Eq. 10) = twice info_nce_loss (which averages them).
    symmetric = symmetric_simcon_loss(image, text, scale, threshold=threshold, use_intra=False)
    torch.testing.assert_close(symmetric, 2 * info_nce_loss(image, text, scale))
    log_scale = torch.tensor(math.log(scale))
    symmetric = symmetric_simcon_loss(image, text, log_scale, threshold=threshold, use_intra=False)
    torch.testing.assert_close(symmetric, 2 * info_nce_loss(image, text, log_scale))


def test_symmetric_simcon_sums_both_directions_with_each_modality_positives() -> None:
    image = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]])  # cos 01=0.6, 12=0.8, 02=0
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 3.0]])  # cos 02=0.8, 12=0.6, 01=0
    threshold = 0.7
    image_positives = _bool([[Y, N, N], [N, Y, Y], [N, Y, Y]])
    text_positives = _bool([[Y, N, Y], [N, Y, N], [Y, N, Y]])
    assert torch.equal(intra_modal_positives(image, threshold), image_positives)
    assert torch.equal(intra_modal_positives(text, threshold), text_positives)
    expected = _naive_simcon(image, text, image_positives, 3.0) + _naive_simcon(text, image, text_positives, 3.0)
    got = symmetric_simcon_loss(image, text, 3.0, threshold=threshold)
    assert float(got) == pytest.approx(expected, rel=1e-6)


# --- MV-SimCon (Eqs. 6-8) --------------------------------------------------------------------------------------------


def test_mv_simcon_with_identical_views_is_twice_symmetric_simcon() -> None:
    generator = torch.Generator().manual_seed(11)
    image = torch.randn(5, 4, generator=generator)
    text = torch.randn(5, 4, generator=generator)
    for threshold in (0.0, 0.5):
        symmetric = symmetric_simcon_loss(image, text, 4.0, threshold=threshold)
        multi = mv_simcon_loss(image, image.clone(), text, 4.0, threshold=threshold)
        torch.testing.assert_close(multi, 2 * symmetric)


@pytest.mark.parametrize("joint", [True, False])
def test_mv_simcon_is_the_four_simcon_terms(joint: bool) -> None:
    generator = torch.Generator().manual_seed(13)
    view1 = torch.randn(5, 4, generator=generator)
    view2 = view1 + 0.8 * torch.randn(5, 4, generator=generator)
    text = torch.randn(5, 4, generator=generator)
    threshold, scale = 0.3, 3.0
    if joint:
        p1 = p2 = joint_positives(view1, view2, threshold)
    else:
        p1, p2 = intra_modal_positives(view1, threshold), intra_modal_positives(view2, threshold)
    pt = intra_modal_positives(text, threshold)
    expected = (
        _naive_simcon(view1, text, p1, scale)
        + _naive_simcon(view2, text, p2, scale)
        + _naive_simcon(text, view1, pt, scale)
        + _naive_simcon(text, view2, pt, scale)
    )
    got = mv_simcon_loss(view1, view2, text, scale, threshold=threshold, joint_image_positives=joint)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_joint_positives_change_the_loss_when_views_disagree() -> None:
    view1 = torch.tensor([[1.0, 0.0], [3.0, 4.0], [2.0, 0.0]])
    view2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    text = torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.0, 1.0]])
    joint = mv_simcon_loss(view1, view2, text, 2.0, threshold=0.7)
    separate = mv_simcon_loss(view1, view2, text, 2.0, threshold=0.7, joint_image_positives=False)
    assert abs(float(joint) - float(separate)) > 1e-3


# --- negative cosine (Eq. 9) and the prediction head -----------------------------------------------------------------


def test_negative_cosine_is_minus_one_for_identical_inputs_and_stops_target_gradients() -> None:
    generator = torch.Generator().manual_seed(17)
    z1 = torch.randn(4, 6, generator=generator, requires_grad=True)
    z2 = torch.randn(4, 6, generator=generator, requires_grad=True)
    p1 = z1.detach().clone().requires_grad_(True)
    p2 = (3.0 * z2.detach()).requires_grad_(True)  # same direction: cosine 1 regardless of the norm
    loss = negative_cosine_loss(p1, z1, p2, z2)
    assert float(loss.detach()) == pytest.approx(-1.0, abs=1e-6)
    loss = negative_cosine_loss(p1, z2, p2, z1)
    grads = torch.autograd.grad(loss, [z1, z2, p1, p2], allow_unused=True)
    # The stop-gradient: the targets z1, z2 are not in the graph (None), the predictions are.
    assert [grad is None for grad in grads] == [True, True, False, False]
    assert grads[2].abs().sum() > 0
    assert grads[3].abs().sum() > 0


def test_negative_cosine_by_hand() -> None:
    pred1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # cos 0, cos 1
    pred2 = torch.tensor([[1.0, 1.0], [3.0, 4.0]])
    target1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 1/√2, cos 0.8
    expected = -((0.5 * 0 + 0.5 / math.sqrt(2)) + (0.5 * 1 + 0.5 * 0.8)) / 2
    assert float(negative_cosine_loss(pred1, target2, pred2, target1)) == pytest.approx(expected, rel=1e-6)


def test_prediction_head_is_a_bottleneck_mlp() -> None:
    torch.manual_seed(0)
    head = PredictionHead(16)
    assert head.hidden_dim == 4
    linear1, norm, relu, linear2 = head.layers
    assert isinstance(linear1, torch.nn.Linear)
    assert (linear1.in_features, linear1.out_features) == (16, 4)
    assert [name for name, _ in linear1.named_parameters()] == ["weight"]  # no bias before BatchNorm
    assert isinstance(norm, torch.nn.BatchNorm1d)
    assert isinstance(relu, torch.nn.ReLU)
    assert isinstance(linear2, torch.nn.Linear)
    assert (linear2.in_features, linear2.out_features) == (4, 16)
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 16)
    assert PredictionHead(2).hidden_dim == 1
    assert PredictionHead(16, hidden_dim=32).hidden_dim == 32
    with pytest.raises(ValueError, match=r"embeddings must be \[B, 16\]"):
        head(torch.randn(3, 8))
    with pytest.raises(ValueError, match="dim"):
        PredictionHead(0)


# --- λ schedule, precision, input checks -----------------------------------------------------------------------------


def test_lambda_schedule_steps_after_epochs_two_and_fifteen() -> None:
    expected = {0: 0.95, 1: 0.95, 2: 0.90, 14: 0.90, 15: 0.85, 29: 0.85}
    for epoch, value in expected.items():
        assert lambda_schedule(epoch) == pytest.approx(value)
    assert lambda_schedule(500, initial=0.9, step=0.1, milestones=(100, 400, 1000)) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="epoch_or_step"):
        lambda_schedule(-1)


def test_losses_run_in_float32_under_autocast() -> None:
    generator = torch.Generator().manual_seed(19)
    v1, v2, text = (torch.randn(4, 8, generator=generator) for _ in range(3))
    positives = intra_modal_positives(v1, 0.2)

    def all_losses() -> list[Tensor]:
        return [
            simcon_loss(v1, text, positives, 10.0),
            symmetric_simcon_loss(v1, text, 10.0, threshold=0.2),
            mv_simcon_loss(v1, v2, text, 10.0, threshold=0.2),
            negative_cosine_loss(v1, v2, v2, v1),
        ]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = all_losses()
    plain = all_losses()
    for m, p in zip(mixed, plain, strict=True):
        assert m.dtype == torch.float32
        torch.testing.assert_close(m, p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = simcon_loss(v1.bfloat16(), text.bfloat16(), positives, 10.0)
        half_ncs = negative_cosine_loss(v1.bfloat16(), v2.bfloat16(), v2.bfloat16(), v1.bfloat16())
    assert half.dtype == torch.float32
    assert half_ncs.dtype == torch.float32


def test_shape_errors_name_the_argument() -> None:
    good = torch.randn(3, 4)
    with pytest.raises(ValueError, match="embeddings must be a \\[B, D\\]"):
        intra_modal_positives(torch.randn(3), 0.9)
    with pytest.raises(ValueError, match="threshold"):
        intra_modal_positives(good, float("nan"))
    with pytest.raises(ValueError, match="view2 must have the shape of view1"):
        joint_positives(good, torch.randn(2, 4), 0.9)
    with pytest.raises(ValueError, match="others must have the shape of anchors"):
        simcon_loss(good, torch.randn(3, 5), torch.eye(3, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match=r"positives must be a \[B, B\] = \[3, 3\] bool"):
        simcon_loss(good, good, torch.eye(3), 1.0)
    with pytest.raises(ValueError, match=r"positives must be a \[B, B\]"):
        simcon_loss(good, good, torch.eye(2, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match="logit_scale"):
        simcon_loss(good, good, torch.eye(3, dtype=torch.bool), -1.0)
    with pytest.raises(ValueError, match="intra_scale"):
        simcon_loss(good, good, torch.eye(3, dtype=torch.bool), 1.0, intra_scale=torch.ones(2))
    with pytest.raises(ValueError, match="text must have the shape of image"):
        symmetric_simcon_loss(good, torch.randn(4, 4), 1.0, threshold=0.9)
    with pytest.raises(ValueError, match="image_view2 must have the shape of image_view1"):
        mv_simcon_loss(good, torch.randn(3, 2), good, 1.0, threshold=0.9)
    with pytest.raises(ValueError, match="text must have the shape of image_view1"):
        mv_simcon_loss(good, good, torch.randn(2, 4), 1.0, threshold=0.9)
    with pytest.raises(ValueError, match="target1 must have the shape of pred1"):
        negative_cosine_loss(good, good, good, torch.randn(3, 2))
    with pytest.raises(ValueError, match="anchors must be a floating-point tensor"):
        simcon_loss(torch.ones(3, 4, dtype=torch.long), good, torch.eye(3, dtype=torch.bool), 1.0)
