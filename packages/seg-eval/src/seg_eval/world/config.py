"""``WorldConfig``: every knob of the synthetic world, as one frozen pydantic model.

A world is a pure function of its config (which holds the seed): image ``i`` of split ``s`` depends on
``(config, s, i)`` only, so splits can be written in parallel, resumed, and re-created bit for bit.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import Field, NonNegativeInt, field_validator, model_validator

from seg_core import SegModel
from seg_eval.world.classes import STUFF_NAMES, THING_NAMES

__all__ = ["SPLITS", "AppearanceConfig", "SplitName", "WorldConfig"]

SplitName = Literal["index", "pairs", "val", "test", "shift"]
"""``index``: unlabelled collection for retrieval. ``pairs``: image-text pairs for training. ``val``/``test``:
labelled evaluation. ``shift``: labelled evaluation under the held-out appearance of ``WorldConfig.shift``."""

SPLITS: tuple[SplitName, ...] = get_args(SplitName)

Probability = float  # documented alias; bounds are set per field


def _check_range(value: tuple[float, float], *, low: float, high: float) -> tuple[float, float]:
    first, second = value
    if not (low <= first <= second <= high):
        raise ValueError(f"must be (min, max) with {low} <= min <= max <= {high}")
    return value


class AppearanceConfig(SegModel):
    """How a split looks: object scale, colour jitter, texture frequency, noise and context prior.

    The ``index``, ``pairs``, ``val`` and ``test`` splits use ``WorldConfig.appearance``; the ``shift`` split uses
    ``WorldConfig.shift``, so a zero-shot transfer test changes exactly the fields that differ between the two.
    """

    thing_area: tuple[float, float] = (0.15, 0.5)
    """Range of the fraction of the image that all things together cover (visible pixels)."""
    hue_jitter: float = Field(default=0.03, ge=0.0, le=0.5)
    """Each object's and region's hue moves by up to this fraction of the colour circle."""
    saturation: tuple[float, float] = (0.85, 1.1)
    """Per-object multiplier range of saturation."""
    value: tuple[float, float] = (0.85, 1.1)
    """Per-object multiplier range of brightness (HSV value)."""
    brightness: tuple[float, float] = (0.9, 1.1)
    """Whole-image brightness multiplier range (the light of the scene)."""
    texture_scale: float = Field(default=1.0, ge=0.25, le=4.0)
    """Spatial frequency multiplier of every texture (stuff patterns, cow patches, wool)."""
    pixel_noise: float = Field(default=4.0, ge=0.0, le=64.0)
    """Standard deviation of per-pixel sensor noise, in 0-255 levels."""
    p_typical: Probability = Field(default=0.7, ge=0.0, le=1.0)
    """Probability that a thing sits on its typical stuff (cows on grass); otherwise on another stuff, uniformly."""

    @field_validator("thing_area")
    @classmethod
    def _area_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, low=0.01, high=0.8)

    @field_validator("saturation", "value", "brightness")
    @classmethod
    def _multiplier_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _check_range(value, low=0.1, high=3.0)


_DEFAULT_SHIFT = AppearanceConfig(
    thing_area=(0.06, 0.2),
    hue_jitter=0.08,
    saturation=(0.6, 1.0),
    value=(0.8, 1.1),
    brightness=(0.6, 0.85),
    texture_scale=2.0,
    pixel_noise=8.0,
)


class WorldConfig(SegModel):
    """The synthetic world: scene layout, priors, captions and the two appearances.

    Defaults follow the design study (64 px, co-occurrence 0.7, stuff named in 60 % of captions, 10 % noisy
    captions). See ``docs/synthetic-world.md`` for what each field does to the pictures.
    """

    seed: int = Field(default=0, ge=0)
    """Same config and seed: the same world, byte for byte. Another seed: another world from the same distribution."""
    size: int = Field(default=64, ge=32, le=1024)
    """Image side in pixels (square images)."""
    min_things: int = Field(default=1, ge=1, le=6)
    max_things: int = Field(default=3, ge=1, le=6)
    """Number of thing instances per image, uniform in [min_things, max_things] (before occlusion drops any)."""
    p_repeat: Probability = Field(default=0.5, ge=0.0, le=1.0)
    """Probability that an extra instance repeats a class already in the image ("two ducks")."""
    p_companion: Probability = Field(default=0.3, ge=0.0, le=1.0)
    """Otherwise, probability that it is a class sharing the first class's typical stuff (a boat with a duck)."""
    stuff_regions: tuple[float, float, float] = (0.3, 0.5, 0.2)
    """Probabilities of 1, 2 and 3 stuff regions (raised to the number of distinct contexts the things need)."""
    min_visible: float = Field(default=0.3, ge=0.0, le=1.0)
    """An occluded instance is dropped (not painted) when less than this fraction of its silhouette is visible..."""
    min_visible_area: float = Field(default=0.004, ge=0.0, le=0.5)
    """...or when its visible area is below this fraction of the image."""
    void_border: NonNegativeInt = Field(default=0, le=8)
    """Width in pixels of a VOC-style ignore band (label 255) along thing boundaries; 0 = exact labels, no band."""
    p_stuff: Probability = Field(default=0.6, ge=0.0, le=1.0)
    """Probability that a clean caption names a stuff ("... on the water")."""
    p_count: Probability = Field(default=0.8, ge=0.0, le=1.0)
    """Probability that several instances of a class are counted ("two ducks") rather than "some ducks"."""
    p_noise: Probability = Field(default=0.1, ge=0.0, le=1.0)
    """Fraction of captions replaced by unrelated text (recorded as noisy in the metadata)."""
    p_mismatch: Probability = Field(default=0.5, ge=0.0, le=1.0)
    """Among noisy captions, the fraction describing another scene; the rest are web junk ("IMG_2034.JPG")."""
    held_out: tuple[str, ...] = ()
    """Thing classes never drawn (nor named) in the ``index`` and ``pairs`` splits: unseen classes for
    zero-shot transfer. ``unseen_class_names()`` gives the suggested group."""
    appearance: AppearanceConfig = AppearanceConfig()
    """Appearance of the ``index``, ``pairs``, ``val`` and ``test`` splits."""
    shift: AppearanceConfig = _DEFAULT_SHIFT
    """Appearance of the ``shift`` split: by default smaller things, stronger colour jitter, finer textures,
    darker and noisier images, the same context prior."""

    @field_validator("stuff_regions")
    @classmethod
    def _stuff_regions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(p < 0 for p in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError("must be three non-negative probabilities (1, 2, 3 regions) that sum to 1")
        return value

    @field_validator("held_out")
    @classmethod
    def _held_out_are_things(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in THING_NAMES]
        if unknown:
            stuff_note = " (stuff cannot be held out)" if any(name in STUFF_NAMES for name in unknown) else ""
            raise ValueError(f"unknown thing classes {unknown}{stuff_note}; choose from {', '.join(THING_NAMES)}")
        if len(set(value)) == len(THING_NAMES):
            raise ValueError("cannot hold out every thing class")
        return tuple(sorted(set(value), key=THING_NAMES.index))

    @model_validator(mode="after")
    def _things_range(self) -> WorldConfig:
        if self.min_things > self.max_things:
            raise ValueError(f"min_things ({self.min_things}) must not exceed max_things ({self.max_things})")
        return self

    def appearance_of(self, split: SplitName) -> AppearanceConfig:
        """The appearance a split is rendered with (``shift`` for the shift split)."""
        return self.shift if split == "shift" else self.appearance

    def things_of(self, split: SplitName) -> tuple[str, ...]:
        """Thing classes that may appear in ``split`` (``held_out`` removed from ``index`` and ``pairs``)."""
        if split in ("index", "pairs"):
            return tuple(name for name in THING_NAMES if name not in self.held_out)
        return THING_NAMES
