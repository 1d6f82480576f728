"""Config bases shared by every method: method configs (with a ``method`` discriminator), training and evaluation.

Method configs live with their recipes (``seg_trainers``); each subclasses :class:`MethodConfig` and narrows
``method`` to a literal. Subclasses register themselves by that literal, so :func:`parse_method_config` turns a
mapping (from JSON, YAML or a Hub ``config.json``) into the right class without a central union.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from seg_core.base import ConfigError, SegModel

__all__ = [
    "EvalConfig",
    "MethodConfig",
    "ScheduleConfig",
    "TrainConfig",
    "method_config_class",
    "parse_method_config",
    "registered_methods",
]

Precision = Literal["fp32", "bf16", "fp16", "auto"]


class ScheduleConfig(SegModel):
    """Learning-rate schedule: a multiplier of the base learning rate per optimiser step.

    ``constant``: 1. ``poly``: ``(1 - t)**power``. ``cosine``: half a cosine from 1 to ``min_lr_ratio``.
    All of them start with ``warmup_steps`` of linear warm-up from ``warmup_start_ratio``.
    """

    kind: Literal["constant", "poly", "cosine"] = "cosine"
    warmup_steps: NonNegativeInt = 0
    warmup_start_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    power: PositiveFloat = 0.9
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)


class TrainConfig(SegModel):
    """What every training run needs, whatever the method (the seg-train engine reads it)."""

    max_steps: PositiveInt
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    schedule: ScheduleConfig = ScheduleConfig()
    precision: Precision = "fp32"
    grad_clip_norm: PositiveFloat | None = None
    grad_accum_steps: PositiveInt = 1
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: PositiveInt | None = None
    keep_checkpoints: PositiveInt = 2
    log_every: PositiveInt = 10
    progress: bool = True
    tensorboard: bool = True

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.schedule.warmup_steps > self.max_steps:
            raise ValueError(
                f"schedule.warmup_steps ({self.schedule.warmup_steps}) exceeds max_steps ({self.max_steps}); "
                "lower the warm-up or train longer"
            )
        return self


class EvalConfig(SegModel):
    """One evaluation: a method (and model) over a dataset under a protocol preset."""

    method: str = Field(min_length=1)
    model: str | None = None
    dataset: str = Field(min_length=1)
    preset: str | None = None
    out: str = "results.json"
    batch_size: PositiveInt = 1
    device: str = "cpu"


_METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}


class MethodConfig(SegModel):
    """Base of every method config. Subclasses set ``method: Literal["name"] = "name"``.

    The literal is the discriminator: it is written into every serialised config and selects the class on load.
    """

    method: str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("method")
        if field is None:  # pragma: no cover - the base field is always inherited
            return
        args = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
        if len(args) != 1 or not isinstance(args[0], str):
            return  # an abstract intermediate base: not registered
        name = args[0]
        previous = _METHOD_CONFIGS.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise TypeError(f"method config name {name!r} is taken by {previous.__module__}.{previous.__qualname__}")
        _METHOD_CONFIGS[name] = cls


def registered_methods() -> tuple[str, ...]:
    """Names of every method config class imported so far, sorted."""
    return tuple(sorted(_METHOD_CONFIGS))


def method_config_class(name: str) -> type[MethodConfig]:
    """The config class registered for ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return _METHOD_CONFIGS[name]
    except KeyError:
        known = ", ".join(registered_methods()) or "none imported yet"
        raise ConfigError(f"method: unknown method {name!r} (known: {known})") from None


def parse_method_config(data: Any, *, source: str | None = None) -> MethodConfig:
    """Validate a mapping into the method config class its ``method`` field names."""
    if not isinstance(data, dict) or "method" not in data:
        raise ConfigError("method: required discriminator field is missing (e.g. method: reco)")
    return method_config_class(str(data["method"])).parse(data, source=source)
