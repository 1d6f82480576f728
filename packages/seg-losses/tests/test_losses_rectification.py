"""ReCLIP++'s rectification and distillation losses against naive loops and values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seg_losses import (
    DEFAULT_TAU,
    DistillationLosses,
    distillation_loss,
    feature_guided_loss,
    gumbel_masks,
    mask_guided_loss,
    masked_pooling,
    rectification_loss,
)

B, C, D, H, W = 2, 3, 4, 3, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed + 100)
    features = torch.randn(B, D, H, W, generator=g)
    logits = torch.randn(B, C, H, W, generator=g)
    text = torch.randn(C, D, generator=g)
    return features, logits, text


# --- naive references -------------------------------------------------------------------------------------------


def _naive_gumbel(logits: torch.Tensor, tau: float, seed: int) -> torch.Tensor:
    """Soft Gumbel-softmax, pixel by pixel, with the documented noise: -log(-log(rand(shape)))."""
    uniform = torch.rand(logits.shape, generator=_gen(seed), dtype=torch.float32)
    out = torch.zeros_like(logits)
    for b in range(logits.shape[0]):
        for i in range(logits.shape[2]):
            for j in range(logits.shape[3]):
                values = [
                    (float(logits[b, c, i, j]) - math.log(-math.log(float(uniform[b, c, i, j])))) / tau
                    for c in range(logits.shape[1])
                ]
                top = max(values)
                exps = [math.exp(v - top) for v in values]
                for c, e in enumerate(exps):
                    out[b, c, i, j] = e / sum(exps)
    return out


def _naive_pool(features: torch.Tensor, masks: torch.Tensor, normalize: str) -> torch.Tensor:
    out = torch.zeros(features.shape[0], masks.shape[1], features.shape[1], dtype=torch.float64)
    for b in range(features.shape[0]):
        for c in range(masks.shape[1]):
            total = [0.0] * features.shape[1]
            area = 0.0
            for i in range(features.shape[2]):
                for j in range(features.shape[3]):
                    m = float(masks[b, c, i, j])
                    area += m
                    for d in range(features.shape[1]):
                        total[d] += m * float(features[b, d, i, j])
            denominator = float(features.shape[2] * features.shape[3]) if normalize == "image" else area
            for d in range(features.shape[1]):
                out[b, c, d] = total[d] / denominator if denominator > 0 else 0.0
    return out


def _naive_loss(
    features: torch.Tensor,
    masks: torch.Tensor,
    text: torch.Tensor,
    hypotheses: torch.Tensor,
    *,
    tau: float,
    pooling: str,
    similarity: str,
) -> float:
    pooled = _naive_pool(features, masks, pooling)
    per_image = []
    for b in range(features.shape[0]):
        terms = []
        for k in range(text.shape[0]):
            if not bool(hypotheses[b, k]):
                continue
            z = [float(v) for v in pooled[b, k]]
            z_norm = math.sqrt(sum(v * v for v in z))
            sims = []
            for j in range(text.shape[0]):
                t = [float(v) for v in text[j]]
                t_norm = math.sqrt(sum(v * v for v in t))
                dot = sum(a * c for a, c in zip(z, t, strict=True)) / t_norm
                if similarity == "cosine":
                    dot = dot / z_norm if z_norm > 0 else 0.0
                sims.append(dot / tau)
            top = max(sims)
            log_denominator = top + math.log(sum(math.exp(s - top) for s in sims))
            terms.append(log_denominator - sims[k])
        if terms:
            per_image.append(sum(terms) / len(terms))
    return sum(per_image) / len(per_image)


# --- gumbel_masks -----------------------------------------------------------------------------------------------


def test_soft_gumbel_matches_naive_loop() -> None:
    _, logits, _ = _random_inputs()
    soft = gumbel_masks(logits, 0.7, hard=False, generator=_gen(3))
    assert torch.allclose(soft, _naive_gumbel(logits, 0.7, seed=3), atol=1e-6)
    assert torch.allclose(soft.sum(dim=1), torch.ones(B, H, W))


def test_hard_masks_are_one_hot_and_argmax_consistent() -> None:
    _, logits, _ = _random_inputs()
    hard = gumbel_masks(logits, 1.0, hard=True, generator=_gen(5))
    soft = gumbel_masks(logits, 1.0, hard=False, generator=_gen(5))
    assert torch.allclose(hard, hard.round(), atol=1e-6)
    assert torch.equal(hard.round().sum(dim=1), torch.ones(B, H, W))
    # forward one-hot = argmax of the perturbed logits = argmax of the soft sample, for every temperature
    assert torch.equal(hard.argmax(dim=1), soft.argmax(dim=1))
    # small tau: the soft sample converges to the hard one
    very_soft = gumbel_masks(logits, 1e-4, hard=False, generator=_gen(5))
    assert torch.allclose(very_soft, hard, atol=1e-4)
    # logits far larger than the noise: the masks are the one-hot argmax of the logits
    big = gumbel_masks(logits * 1e4, 1.0, hard=True, generator=_gen(6))
    assert torch.equal(big.argmax(dim=1), logits.argmax(dim=1))


def test_straight_through_gradient_equals_soft_gradient() -> None:
    _, logits, _ = _random_inputs()
    upstream = torch.randn(B, C, H, W, generator=_gen(9))
    grads = []
    for hard in (True, False):
        x = logits.clone().requires_grad_(True)
        torch.autograd.backward((gumbel_masks(x, 0.5, hard=hard, generator=_gen(11)) * upstream).sum())
        assert x.grad is not None
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_seeded_generator_is_deterministic_and_tau_is_validated() -> None:
    _, logits, _ = _random_inputs()
    assert torch.equal(gumbel_masks(logits, generator=_gen(1)), gumbel_masks(logits, generator=_gen(1)))
    assert not torch.equal(
        gumbel_masks(logits, hard=False, generator=_gen(1)), gumbel_masks(logits, hard=False, generator=_gen(2))
    )
    with pytest.raises(ValueError, match="tau"):
        gumbel_masks(logits, 0.0)
    with pytest.raises(ValueError, match="logits"):
        gumbel_masks(logits[0])


# --- masked_pooling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["area", "image"])
def test_masked_pooling_matches_naive_loop(normalize: str) -> None:
    features, logits, _ = _random_inputs()
    soft = logits.softmax(dim=1)
    hard = gumbel_masks(logits, generator=_gen(0))
    for masks in (soft, hard):
        pooled = masked_pooling(features, masks, normalize=normalize)  # type: ignore[arg-type]
        assert pooled.shape == (B, C, D)
        assert torch.allclose(pooled.double(), _naive_pool(features, masks, normalize), atol=1e-5)


def test_empty_mask_pools_to_zero_without_nan() -> None:
    features, _, _ = _random_inputs()
    masks = torch.zeros(B, C, H, W)
    masks[:, 0] = 1.0  # classes 1 and 2 empty
    masks.requires_grad_(True)
    feats = features.clone().requires_grad_(True)
    pooled = masked_pooling(feats, masks, normalize="area")
    assert torch.equal(pooled[:, 1:], torch.zeros(B, C - 1, D))
    assert torch.allclose(pooled[:, 0], features.mean(dim=(2, 3)), atol=1e-6)
    torch.autograd.backward(pooled.sum())
    assert masks.grad is not None
    assert feats.grad is not None
    assert torch.isfinite(masks.grad).all()
    assert torch.isfinite(feats.grad).all()


def test_masked_pooling_validates() -> None:
    features, logits, _ = _random_inputs()
    with pytest.raises(ValueError, match="normalize"):
        masked_pooling(features, logits, normalize="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share B, h and w"):
        masked_pooling(features, logits[:, :, :2])


# --- rectification_loss -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pooling", "similarity"), [("area", "cosine"), ("image", "dot"), ("area", "dot")])
def test_rectification_loss_matches_naive_loop(pooling: str, similarity: str) -> None:
    features, logits, text = _random_inputs()
    hypotheses = torch.tensor([[True, False, True], [False, True, False]])
    masks = gumbel_masks(logits, 1.0, generator=_gen(21))
    expected = _naive_loss(features, masks, text, hypotheses, tau=0.5, pooling=pooling, similarity=similarity)
    loss = rectification_loss(
        features,
        logits,
        text,
        hypotheses,
        tau=0.5,
        generator=_gen(21),
        pooling=pooling,  # type: ignore[arg-type]
        similarity=similarity,  # type: ignore[arg-type]
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_images_without_hypotheses_contribute_nothing() -> None:
    features, logits, text = _random_inputs()
    both = torch.tensor([[True, False, True], [False, False, False]])
    loss = rectification_loss(features, logits, text, both, tau=0.5, generator=_gen(4))
    first_only = rectification_loss(features[:1], logits[:1], text, both[:1], tau=0.5, generator=_gen(4))
    masks = gumbel_masks(logits, generator=_gen(4))
    expected = _naive_loss(features[:1], masks[:1], text, both[:1], tau=0.5, pooling="area", similarity="cosine")
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the noise of image 0 is drawn first, so dropping image 1 leaves it unchanged
    assert float(first_only) == pytest.approx(expected, rel=1e-5)


def test_no_hypotheses_gives_zero_with_grad() -> None:
    features, logits, text = _random_inputs()
    feats = features.clone().requires_grad_(True)
    logs = logits.clone().requires_grad_(True)
    loss = rectification_loss(feats, logs, text, torch.zeros(B, C, dtype=torch.bool), generator=_gen(0))
    assert loss.grad_fn is not None
    assert float(loss.detach()) == 0.0
    torch.autograd.backward(loss)
    assert feats.grad is not None
    assert logs.grad is not None
    assert torch.equal(feats.grad, torch.zeros_like(feats))
    assert torch.equal(logs.grad, torch.zeros_like(logs))


def test_hand_computed_single_hypothesis() -> None:
    # one image, 2x2 pixels: the logits put pixels (0,0),(0,1) in class 0 and (1,0),(1,1) in class 1, by a margin
    # (2e4) far above any Gumbel noise (|g| < 90 in float32), so the masks are deterministic.
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, :] = 1e4
    logits[0, 1, 1, :] = 1e4
    logits[0, 0, 1, :] = -1e4
    logits[0, 1, 0, :] = -1e4
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([3.0, 4.0])
    features[0, :, 0, 1] = torch.tensor([3.0, 4.0])
    features[0, :, 1, :] = torch.tensor([-1.0, 7.0]).view(2, 1)
    text = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # normalised: e1, e2
    hypotheses = torch.tensor([[True, False]])
    # class 0: Z_g = [3, 4] (area mean), cos with e1 = 0.6, with e2 = 0.8; tau = 0.1 -> -log(e^6 / (e^6 + e^8))
    loss = rectification_loss(features, logits, text, hypotheses, tau=0.1, generator=_gen(0))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-5)
    # the same with a float logit scale 10 (= 1/tau) and a log-scale tensor
    assert float(rectification_loss(features, logits, text, hypotheses, logit_scale=10.0)) == pytest.approx(
        math.log(1 + math.exp(2.0)), rel=1e-5
    )
    log_scale = torch.tensor(math.log(10.0))
    assert float(rectification_loss(features, logits, text, hypotheses, logit_scale=log_scale)) == pytest.approx(
        math.log(1 + math.exp(2.0)), rel=1e-5
    )
    # official: Z_g = (2 [3, 4]) / 4 = [1.5, 2], not re-normalised: S = [1.5, 2] -> -log(e^15 / (e^15 + e^20))
    official = rectification_loss(features, logits, text, hypotheses, tau=0.1, pooling="image", similarity="dot")
    assert float(official) == pytest.approx(math.log(1 + math.exp(5.0)), rel=1e-5)
    # default tau = 0.01: -log(e^60 / (e^60 + e^80)) = 20 + log(1 + e^-20)
    assert DEFAULT_TAU == 0.01
    assert float(rectification_loss(features, logits, text, hypotheses)) == pytest.approx(20.0, rel=1e-5)


def test_empty_hypothesis_class_is_finite_with_cosine() -> None:
    # every pixel goes to class 0, class 1 (a hypothesis) has an empty mask: S_{1,.} = 0 -> loss log(2) for it
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = 1e4
    logits[0, 1] = -1e4
    logits.requires_grad_(True)
    features = torch.randn(1, 2, 2, 2, generator=_gen(1), requires_grad=True)
    text = torch.eye(2)
    loss = rectification_loss(features, logits, text, torch.tensor([[False, True]]), tau=0.1)
    assert float(loss.detach()) == pytest.approx(math.log(2.0), rel=1e-6)
    torch.autograd.backward(loss)
    assert features.grad is not None
    assert logits.grad is not None
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(logits.grad).all()


def test_empty_hypothesis_class_has_a_bounded_gradient() -> None:
    # A margin of 30 keeps class 1's hard mask empty (a Gumbel difference above 30 has probability ~e^-30) while
    # gumbel_tau=10 leaves its soft probability near 0.05, so the straight-through gradient reaches the zero pooled
    # vector of class 1: F.normalize would scale it by 1/eps = 1e12 there, the safe normalisation by 1.
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = 30.0
    features = torch.randn(1, 2, 2, 2, generator=_gen(1))
    hypotheses = torch.tensor([[False, True]])
    assert float(gumbel_masks(logits, 10.0, generator=_gen(3))[0, 1].sum()) == 0.0
    logits.requires_grad_(True)
    loss = rectification_loss(features, logits, torch.eye(2), hypotheses, tau=0.1, gumbel_tau=10.0, generator=_gen(3))
    torch.autograd.backward(loss)
    assert logits.grad is not None
    assert 0 < float(logits.grad.abs().max()) < 100


def test_loss_gradient_reaches_logits_and_logit_scale() -> None:
    features, logits, text = _random_inputs()
    logs = logits.clone().requires_grad_(True)
    log_scale = torch.tensor(math.log(20.0), requires_grad=True)
    hypotheses = torch.ones(B, C, dtype=torch.bool)
    torch.autograd.backward(
        rectification_loss(features, logs, text, hypotheses, logit_scale=log_scale, generator=_gen(2))
    )
    assert logs.grad is not None
    assert logs.grad.abs().sum() > 0
    assert log_scale.grad is not None
    assert log_scale.grad.abs() > 0


def test_rectification_loss_validates_inputs() -> None:
    features, logits, text = _random_inputs()
    hyp = torch.ones(B, C, dtype=torch.bool)
    with pytest.raises(ValueError, match="hypotheses"):
        rectification_loss(features, logits, text, hyp.long())
    with pytest.raises(ValueError, match="hypotheses"):
        rectification_loss(features, logits, text, hyp[:, :2])
    with pytest.raises(ValueError, match="text"):
        rectification_loss(features, logits, text[:, :3], hyp)
    with pytest.raises(ValueError, match="features"):
        rectification_loss(features.long(), logits, text, hyp)
    with pytest.raises(ValueError, match="share B, h and w"):
        rectification_loss(features[:, :, :2], logits, text, hyp)
    with pytest.raises(ValueError, match="either tau"):
        rectification_loss(features, logits, text, hyp, tau=0.1, logit_scale=10.0)
    with pytest.raises(ValueError, match="similarity"):
        rectification_loss(features, logits, text, hyp, similarity="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        rectification_loss(features, logits, text, hyp, tau=-1.0)


# --- distillation -----------------------------------------------------------------------------------------------


def _naive_ce(logits: torch.Tensor, labels: torch.Tensor, ignore: int) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1]):
            for j in range(labels.shape[2]):
                label = int(labels[b, i, j])
                if label == ignore:
                    continue
                values = [float(v) for v in logits[b, :, i, j]]
                top = max(values)
                total += top + math.log(sum(math.exp(v - top) for v in values)) - values[label]
                count += 1
    return total / count


def test_mask_guided_loss_matches_naive_loop_and_ignores() -> None:
    _, logits, _ = _random_inputs()
    labels = torch.randint(0, C, (B, H, W), generator=_gen(7))
    labels[0, 0, 0] = 255
    labels[1, 2, :] = 255
    assert float(mask_guided_loss(logits, labels)) == pytest.approx(_naive_ce(logits, labels, 255), rel=1e-5)
    # logits at half the label resolution are upsampled bilinearly first
    big_labels = torch.randint(0, C, (B, 2 * H, 2 * W), generator=_gen(8))
    upsampled = F.interpolate(logits, size=(2 * H, 2 * W), mode="bilinear", align_corners=False)
    assert float(mask_guided_loss(logits, big_labels)) == pytest.approx(_naive_ce(upsampled, big_labels, 255), rel=1e-5)


def test_mask_guided_loss_all_ignored_and_validation() -> None:
    _, logits, _ = _random_inputs()
    logs = logits.clone().requires_grad_(True)
    loss = mask_guided_loss(logs, torch.full((B, H, W), 255))
    assert float(loss.detach()) == 0.0
    assert loss.grad_fn is not None
    with pytest.raises(ValueError, match="pseudo_labels"):
        mask_guided_loss(logits, torch.full((B, H, W), 3))
    with pytest.raises(ValueError, match="pseudo_labels"):
        mask_guided_loss(logits, torch.zeros(B, H, W))


def test_feature_guided_loss_by_hand_and_naive() -> None:
    teacher = torch.ones(1, 2, 1, 1)  # bilinear to 2x2: all ones
    student = torch.full((1, 2, 2, 2), 0.5, requires_grad=True)
    loss = feature_guided_loss(teacher, student, (2, 2))
    assert float(loss.detach()) == pytest.approx(0.5)
    torch.autograd.backward(loss)
    assert student.grad is not None
    assert torch.allclose(student.grad, torch.full((1, 2, 2, 2), -1 / 8))  # d mean|1 - s| / ds = -1/8

    teach = torch.randn(B, D, H, W, generator=_gen(12), requires_grad=True)
    stud = torch.randn(B, D, 2, 2, generator=_gen(13))
    size = (6, 6)
    a = F.interpolate(teach.detach(), size=size, mode="bilinear", align_corners=False)
    c = F.interpolate(stud, size=size, mode="bilinear", align_corners=False)
    naive = sum(abs(float(x) - float(y)) for x, y in zip(a.flatten(), c.flatten(), strict=True)) / a.numel()
    out = feature_guided_loss(teach, stud, size)
    assert float(out) == pytest.approx(naive, rel=1e-5)
    assert out.grad_fn is None  # the teacher is detached and the student needs no grad here
    with pytest.raises(ValueError, match="size"):
        feature_guided_loss(teach, stud, (0, 6))
    with pytest.raises(ValueError, match="share B and D"):
        feature_guided_loss(teach, stud[:, :2], size)


def test_distillation_loss_is_the_weighted_sum() -> None:
    features, logits, text = _random_inputs()
    teacher = torch.randn(B, D, 2, 2, generator=_gen(14))
    labels = torch.randint(0, C, (B, 6, 6), generator=_gen(15))
    hypotheses = torch.tensor([[True, True, False], [False, True, True]])
    result = distillation_loss(
        logits, features, teacher, labels, text=text, hypotheses=hypotheses, tau=0.2, generator=_gen(16)
    )
    assert isinstance(result, DistillationLosses)
    mask = mask_guided_loss(logits, labels)
    feat = feature_guided_loss(teacher, features, (6, 6))
    text_loss = rectification_loss(features, logits, text, hypotheses, tau=0.2, generator=_gen(16))
    assert float(result.mask) == pytest.approx(float(mask), rel=1e-6)
    assert float(result.feat) == pytest.approx(float(feat), rel=1e-6)
    assert float(result.text) == pytest.approx(float(text_loss), rel=1e-6)
    assert float(result.total) == pytest.approx(float(mask + 0.5 * feat + 0.5 * text_loss), rel=1e-6)
    other = distillation_loss(
        logits,
        features,
        teacher,
        labels,
        text=text,
        hypotheses=hypotheses,
        alpha=2.0,
        beta=0.0,
        tau=0.2,
        generator=_gen(16),
    )
    assert float(other.total) == pytest.approx(float(mask + 2.0 * feat), rel=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(logits, features, teacher, labels, text=text, hypotheses=hypotheses, alpha=-1.0)


def test_distillation_mask_scale_scales_only_the_gumbel_input_of_the_text_term() -> None:
    torch.manual_seed(3)
    logits, features, teacher = torch.randn(2, 3, 3, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    labels, text = torch.randint(0, 3, (2, 3, 3)), torch.randn(3, 4)
    hypotheses = torch.tensor([[True, False, True], [False, True, False]])
    scaled = distillation_loss(
        logits,
        features,
        teacher,
        labels,
        text=text,
        hypotheses=hypotheses,
        mask_scale=7.0,
        generator=torch.Generator().manual_seed(0),
    )
    expected_text = rectification_loss(
        features, logits * 7.0, text, hypotheses, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(scaled.text, expected_text)
    torch.testing.assert_close(scaled.mask, mask_guided_loss(logits, labels))  # the cross-entropy is unscaled
    torch.testing.assert_close(scaled.total, scaled.mask + 0.5 * scaled.feat + 0.5 * scaled.text)
