"""Seeding, RNG capture/restore through a weights_only state file, deterministic mode."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from seg_train import capture_rng_state, deterministic_algorithms, restore_rng_state, seed_everything


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_same_seed_same_draws_and_rank_offset_changes_them() -> None:
    assert seed_everything(5) == 5
    first = _draw()
    seed_everything(5)
    assert _draw() == first
    assert seed_everything(5, rank=1) == 6
    assert _draw() != first
    seed_everything(6)
    second_rank_equivalent = _draw()
    seed_everything(5, rank=1)
    assert _draw() == second_rank_equivalent


def test_negative_and_huge_seeds_are_reduced() -> None:
    assert seed_everything(-1) == 2**32 - 1
    assert seed_everything(2**40 + 3) == 3


def test_rng_state_round_trips_through_weights_only_load() -> None:
    seed_everything(11)
    np.random.randn()  # leave numpy with a cached gaussian so has_gauss/gauss are exercised
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    expected = _draw()
    _draw()  # move every stream on
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    assert _draw() == expected


def test_deterministic_algorithms_is_scoped() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() == before
    with deterministic_algorithms(False):
        assert torch.are_deterministic_algorithms_enabled() == before
