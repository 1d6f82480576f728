"""Symmetric InfoNCE against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from seg_losses import info_nce_loss


def test_two_pairs_by_hand() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # normalised: [1, 0] and [1/√2, 1/√2]
    scale = 2.0
    c = 1 / math.sqrt(2)
    sims = [[1.0, c], [0.0, c]]  # image i vs text j
    image_to_text = (
        -(
            math.log(math.exp(scale * sims[0][0]) / (math.exp(scale * sims[0][0]) + math.exp(scale * sims[0][1])))
            + math.log(math.exp(scale * sims[1][1]) / (math.exp(scale * sims[1][0]) + math.exp(scale * sims[1][1])))
        )
        / 2
    )
    text_to_image = (
        -(
            math.log(math.exp(scale * sims[0][0]) / (math.exp(scale * sims[0][0]) + math.exp(scale * sims[1][0])))
            + math.log(math.exp(scale * sims[1][1]) / (math.exp(scale * sims[0][1]) + math.exp(scale * sims[1][1])))
        )
        / 2
    )
    expected = (image_to_text + text_to_image) / 2
    assert float(info_nce_loss(images, texts, scale)) == pytest.approx(expected, rel=1e-6)
    log_scale = torch.tensor(math.log(scale))
    assert float(info_nce_loss(images, texts, log_scale)) == pytest.approx(expected, rel=1e-6)


def test_perfect_alignment_beats_shuffled_and_grad_reaches_temperature() -> None:
    torch.manual_seed(0)
    emb = torch.randn(8, 16)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    aligned = info_nce_loss(emb, emb, log_scale)
    shuffled = info_nce_loss(emb, emb.roll(1, dims=0), log_scale)
    assert aligned.item() < shuffled.item()
    aligned.backward()
    assert log_scale.grad is not None
    assert log_scale.grad.abs() > 0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        info_nce_loss(torch.zeros(4, 8), torch.zeros(3, 8), 1.0)
