"""Learning-rate schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from seg_core import ConfigError, ScheduleConfig
from seg_train import cosine_decay, linear_warmup, lr_multiplier, lr_multiplier_fn, poly_decay


def test_linear_warmup_ramps_from_start_ratio_to_one() -> None:
    assert linear_warmup(0, 4, 0.1) == pytest.approx(0.1)
    assert linear_warmup(2, 4, 0.1) == pytest.approx(0.55)  # 0.1 + 0.9 * 2/4
    assert linear_warmup(3, 4, 0.0) == pytest.approx(0.75)
    assert linear_warmup(4, 4, 0.1) == 1.0
    assert linear_warmup(7, 0, 0.1) == 1.0  # no warm-up


def test_poly_decay_values() -> None:
    assert poly_decay(0.0, 0.9) == 1.0
    assert poly_decay(0.5, 0.9) == pytest.approx(0.5358867312681466)  # 0.5 ** 0.9
    assert poly_decay(0.5, 1.0, min_ratio=0.2) == pytest.approx(0.6)  # 0.2 + 0.8 * 0.5
    assert poly_decay(1.0, 0.9) == 0.0
    assert poly_decay(1.5, 0.9) == 0.0  # clamped


def test_cosine_decay_values() -> None:
    assert cosine_decay(0.0) == 1.0
    assert cosine_decay(0.25) == pytest.approx(0.8535533905932737)  # (1 + cos(pi/4)) / 2
    assert cosine_decay(0.5) == pytest.approx(0.5)
    assert cosine_decay(0.5, min_ratio=0.1) == pytest.approx(0.55)
    assert cosine_decay(1.0, min_ratio=0.1) == pytest.approx(0.1)


def test_cosine_schedule_with_warmup_hand_computed() -> None:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=2, warmup_start_ratio=0.0)
    # steps 0, 1 warm up (0, 0.5); the decay spans steps 2..10 (8 steps): t = (step - 2) / 8.
    expected = [0.0, 0.5, 1.0, 0.9619397662556434, 0.8535533905932737, 0.6913417161825449, 0.5]
    observed = [lr_multiplier(step, schedule, max_steps=10) for step in range(7)]
    assert observed == pytest.approx(expected)


def test_poly_schedule_with_warmup_hand_computed() -> None:
    schedule = ScheduleConfig(kind="poly", warmup_steps=1, warmup_start_ratio=0.5, power=2.0)
    # step 0: warm-up at 0.5; then (1 - (step - 1) / 4) ** 2 over max_steps - 1 = 4 steps.
    expected = [0.5, 1.0, 0.5625, 0.25, 0.0625]
    assert [lr_multiplier(step, schedule, max_steps=5) for step in range(5)] == pytest.approx(expected)


def test_constant_schedule_is_one_after_warmup() -> None:
    schedule = ScheduleConfig(kind="constant", warmup_steps=2, warmup_start_ratio=0.5)
    assert [lr_multiplier(step, schedule, max_steps=6) for step in range(6)] == pytest.approx(
        [0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    )


def test_warmup_over_the_whole_run() -> None:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=4)
    assert [lr_multiplier(step, schedule, max_steps=4) for step in range(4)] == pytest.approx([0, 0.25, 0.5, 0.75])


def test_invalid_step_and_max_steps_are_named() -> None:
    with pytest.raises(ConfigError, match=r"step: must be >= 0 \(got -1\)"):
        lr_multiplier(-1, ScheduleConfig(), max_steps=10)
    with pytest.raises(ConfigError, match="max_steps"):
        lr_multiplier(0, ScheduleConfig(), max_steps=0)


def test_multiplier_fn_drives_lambda_lr() -> None:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=0, min_lr_ratio=0.0)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier_fn(schedule, max_steps=4))
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0 * (1 + math.cos(math.pi * step / 4)) / 2 for step in range(4)])
