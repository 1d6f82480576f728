"""Learning-rate schedules as plain functions: the multiplier of each parameter group's initial learning rate.

``step`` is always the number of optimiser steps already taken (0 for the first update), so the multiplier at
``step`` is the one the update number ``step + 1`` uses. Every schedule starts with ``warmup_steps`` of linear
warm-up from ``warmup_start_ratio`` to 1, then decays over the remaining ``max_steps - warmup_steps`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from seg_core import ConfigError, ScheduleConfig

__all__ = [
    "cosine_decay",
    "linear_warmup",
    "lr_multiplier",
    "lr_multiplier_fn",
    "poly_decay",
]


def linear_warmup(step: int, warmup_steps: int, start_ratio: float) -> float:
    """Linear ramp from ``start_ratio`` at step 0 to 1 at ``warmup_steps`` (1 from then on).

    Args:
        step: Optimiser steps already taken.
        warmup_steps: Length of the ramp; 0 disables warm-up.
        start_ratio: Multiplier at step 0, in [0, 1].
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start_ratio + (1.0 - start_ratio) * step / warmup_steps


def poly_decay(progress: float, power: float, min_ratio: float = 0.0) -> float:
    """Polynomial decay ``min_ratio + (1 - min_ratio) * (1 - progress) ** power``.

    Args:
        progress: Fraction of the decay phase done, clamped to [0, 1].
        power: Exponent (0.9 is the usual segmentation choice).
        min_ratio: Multiplier reached at the end of training.
    """
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * float((1.0 - progress) ** power)


def cosine_decay(progress: float, min_ratio: float = 0.0) -> float:
    """Half a cosine from 1 (``progress=0``) to ``min_ratio`` (``progress=1``).

    Args:
        progress: Fraction of the decay phase done, clamped to [0, 1].
        min_ratio: Multiplier reached at the end of training.
    """
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(step: int, schedule: ScheduleConfig, max_steps: int) -> float:
    """The multiplier of every group's initial learning rate for the update after ``step`` steps.

    ``constant`` is 1 after warm-up; ``poly`` and ``cosine`` decay over the steps after warm-up and both honour
    ``min_lr_ratio`` (for ``poly`` the default 0 gives the plain ``(1 - t) ** power``).

    Args:
        step: Optimiser steps already taken, ``0 <= step``.
        schedule: The schedule config.
        max_steps: Total optimiser steps of the run.

    Raises:
        ConfigError: When ``step`` is negative or ``max_steps`` is not positive.
    """
    if max_steps <= 0:
        raise ConfigError(f"max_steps: must be positive (got {max_steps})")
    if step < 0:
        raise ConfigError(f"step: must be >= 0 (got {step})")
    if step < schedule.warmup_steps:
        return linear_warmup(step, schedule.warmup_steps, schedule.warmup_start_ratio)
    decay_steps = max_steps - schedule.warmup_steps
    progress = (step - schedule.warmup_steps) / decay_steps if decay_steps > 0 else 1.0
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "poly":
        return poly_decay(progress, schedule.power, schedule.min_lr_ratio)
    return cosine_decay(progress, schedule.min_lr_ratio)


def lr_multiplier_fn(schedule: ScheduleConfig, max_steps: int) -> Callable[[int], float]:
    """``lr_multiplier`` bound to one schedule: a ``step -> multiplier`` function (e.g. for ``LambdaLR``)."""

    def multiplier_at(step: int) -> float:
        return lr_multiplier(step, schedule, max_steps)

    return multiplier_at
