"""Stuff textures: a pattern field per stuff class, coloured per region with jittered colours.

The patterns (cloud cover, grass blades, waves, ripples, bricks, asphalt, snow drifts) are rendered once per world
into a bank of ``(K, 2S, 2S)`` weight fields (:func:`stuff_fields`); an image takes a random window of its stuff's
field and blends two jittered colours by it (:func:`paint_stuff`). Feature sizes are set at 64 px and scale with
the image and with ``AppearanceConfig.texture_scale``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from seg_eval.world.noise import FloatArray, Painter, bank_generator, mix, noise_bank

__all__ = ["paint_stuff", "stuff_fields"]

_TAU = 2.0 * math.pi
_MORTAR = -1.0  # weight value of mortar pixels in the wall field


@lru_cache(maxsize=8)
def stuff_fields(seed: int, size: int, texture_scale: float) -> dict[str, FloatArray]:
    """Pattern fields of every stuff class: name -> ``(K, 2S, 2S)`` float32 weights (cached per process).

    Weights are in [0, 1] (0: the darker colour, 1: the lighter one); the wall marks mortar with -1.
    """
    bank = noise_bank(seed, size, texture_scale)
    generator = bank_generator(seed, size, texture_scale, 1)
    count, side = bank.smooth.shape[0], bank.smooth.shape[1]
    rows = (np.arange(side, dtype=np.float32) / size)[None, :, None]  # in image heights
    cols = (np.arange(side, dtype=np.float32) / size)[None, None, :]

    def other(fields: FloatArray) -> FloatArray:
        """The same fields transposed and in reverse order: decorrelated from ``fields`` for a second use."""
        transposed: FloatArray = fields[::-1].transpose(0, 2, 1)
        return transposed

    phases = generator.uniform(0.0, _TAU, size=(count, 1, 1)).astype(np.float32)
    crest = 0.5 + 0.5 * np.sin(rows * (_TAU * 9.0 * texture_scale) + 3.0 * bank.smooth + phases)
    ripple = 0.5 + 0.5 * np.sin((cols * 3.0 + rows * 8.0) * (_TAU * texture_scale) + 2.0 * other(bank.smooth))

    brick_height = max(3, round(size / 9.0 / texture_scale))
    brick_width = 2 * brick_height + 1
    row_pixels = np.arange(side)[:, None]
    brick_row = row_pixels // brick_height
    shifted_cols = np.arange(side)[None, :] + (brick_row % 2) * (brick_width // 2)
    brick_index = (brick_row * 7 + (shifted_cols // brick_width) * 3) % 64
    brick_shade = generator.random((count, 64), dtype=np.float32)
    bricks = 0.6 * np.stack([shades[brick_index] for shades in brick_shade]) + 0.4 * bank.fine
    mortar = (row_pixels % brick_height == 0) | (shifted_cols % brick_width == 0)

    sparkle = other(bank.fine) > 0.96
    fields = {
        "sky": np.clip((bank.smooth - 0.55) * 4.0, 0.0, 1.0),
        "grass": 0.6 * bank.streak + 0.4 * other(bank.smooth),
        "water": 0.8 * crest * crest + 0.2 * bank.fine,
        "sand": 0.55 * other(bank.fine) + 0.45 * ripple,
        "wall": np.where(mortar, np.float32(_MORTAR), bricks),
        "road": 0.7 * bank.fine + 0.3 * bank.smooth,
        "snow": np.where(sparkle, np.float32(1.0), 0.35 + 0.65 * (0.75 * other(bank.smooth) + 0.25 * bank.fine)),
    }
    return {name: np.ascontiguousarray(field, dtype=np.float32) for name, field in fields.items()}


def paint_stuff(
    name: str,
    painter: Painter,
    *,
    fields: FloatArray,
    rows: FloatArray,
    cols: FloatArray,
    size: int,
    texture_scale: float,
) -> FloatArray:
    """Paint a band of rows with the texture of stuff class ``name``.

    Args:
        name: Stuff class name.
        painter: The image's painter (call ``new_object`` first for a fresh colour jitter).
        fields: ``stuff_fields(...)[name]``.
        rows: ``(h, 1)`` row centres of the band in [0, 1) (fraction of the image height).
        cols: ``(1, w)`` column centres in [0, 1).
        size: Image side in pixels.
        texture_scale: The appearance's texture frequency multiplier.

    Returns:
        ``(3, h, w)`` float32 RGB in 0-255.
    """
    height, width = rows.shape[0], cols.shape[1]
    weight = painter.window(fields, height, width)
    color = painter.color
    if name == "sky":
        gradient = mix(color(0.60, 0.62, 0.82), color(0.56, 0.25, 0.98), np.minimum(rows * 1.3, 1.0))
        return mix(gradient, color(0.6, 0.03, 1.0), weight)
    if name == "grass":
        return mix(color(0.29, 0.75, 0.40), color(0.24, 0.70, 0.80), weight)
    if name == "water":
        return mix(color(0.555, 0.85, 0.52), color(0.52, 0.45, 0.88), weight)
    if name == "sand":
        return mix(color(0.10, 0.50, 0.72), color(0.12, 0.28, 0.96), weight)
    if name == "wall":
        bricks = mix(color(0.02, 0.72, 0.50), color(0.04, 0.62, 0.78), weight)
        return np.where(weight == _MORTAR, color(0.08, 0.08, 0.78), bricks)
    if name == "road":
        asphalt = mix(color(0.62, 0.10, 0.22), color(0.60, 0.06, 0.42), weight)
        generator = painter.generator
        half_width = max(0, round(size / 64.0) - 1)
        lane_row = height // 2 + int(generator.integers(-(height // 6), height // 6 + 1))
        period = max(4, round(size / 4.0 / texture_scale))
        dashes = ((cols[0] * size).astype(np.int64) + int(generator.integers(period))) % period < period // 2
        lane = np.zeros((height, width), dtype=bool)
        lane[max(0, lane_row - half_width) : lane_row + half_width + 1] = dashes
        return np.where(lane, color(0.14, 0.85, 0.95), asphalt)
    if name == "snow":
        return mix(color(0.60, 0.20, 0.80), color(0.6, 0.02, 1.0), weight)
    raise KeyError(f"no texture for stuff class {name!r}")
