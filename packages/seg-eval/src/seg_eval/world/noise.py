"""Noise fields and the per-image painting context shared by stuff textures and thing drawers.

Generating value noise per image is the slow part of procedural texturing, so each world keeps a small bank of
noise fields (a pure function of seed, image size and texture scale, cached per process) and every image takes
randomly offset, randomly flipped windows of them. An image stays a pure function of (config, split, index).

Colours and images are channel-first ``(3, H, W)`` while painting: numpy broadcasts a ``(3, 1, 1)`` colour against
an ``(H, W)`` weight several times faster than an ``(H, W, 1)`` weight against a ``(3,)`` colour.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["FloatArray", "NoiseBank", "Painter", "bank_fields", "mix", "noise_bank", "value_noise"]

FloatArray = npt.NDArray[np.float32]

_BANK_STREAM = 0x5E6  # keeps the banks' random streams apart from the per-image streams


def bank_fields(size: int) -> int:
    """Fields per kind in a bank: 4, fewer for big images (memory grows with ``(2 * size)**2``)."""
    return 4 if size <= 256 else 2 if size <= 512 else 1


@dataclass(frozen=True, eq=False)
class NoiseBank:
    """Noise fields of side ``2 * size``; windows of them texture one image.

    Attributes:
        unit: Pixels per unit of feature size (``size / 64 / texture_scale``): features are tuned at 64 px.
        smooth: ``(K, 2S, 2S)`` low-frequency value noise in [0, 1] (clouds, patches, shading).
        fine: ``(K, 2S, 2S)`` high-frequency value noise in [0, 1] (speckle, wool).
        streak: ``(K, 2S, 2S)`` noise stretched vertically, in [0, 1] (grass blades).
        grain: ``(K, 3, 2S, 2S)`` standard normal per-pixel, per-channel sensor noise.
    """

    unit: float
    smooth: FloatArray
    fine: FloatArray
    streak: FloatArray
    grain: FloatArray


def value_noise(generator: np.random.Generator, side: int, cell: tuple[float, float], *, order: int) -> FloatArray:
    """``(side, side)`` value noise with the given cell size (rows, cols) in pixels, normalised to [0, 1]."""
    cells = (max(1.0, cell[0]), max(1.0, cell[1]))
    grid_shape = (math.ceil(side / cells[0]) + 4, math.ceil(side / cells[1]) + 4)
    grid = generator.random(grid_shape, dtype=np.float32)
    field = ndimage.zoom(grid, cells, order=order, mode="nearest", grid_mode=True)[:side, :side]
    low, high = float(field.min()), float(field.max())
    normalised: FloatArray = ((field - low) / max(high - low, 1e-6)).astype(np.float32)
    return normalised


def bank_generator(seed: int, size: int, texture_scale: float, stream: int) -> np.random.Generator:
    """The random stream of a bank (``stream`` tells banks of one world apart)."""
    return np.random.default_rng([_BANK_STREAM, stream, seed, size, round(texture_scale * 1000)])


@lru_cache(maxsize=8)
def noise_bank(seed: int, size: int, texture_scale: float) -> NoiseBank:
    """The noise bank of a world (cached; a pure function of its arguments).

    Args:
        seed: The world's seed.
        size: Image side in pixels; fields have side ``2 * size``.
        texture_scale: Frequency multiplier (2 = features half as large).
    """
    generator = bank_generator(seed, size, texture_scale, 0)
    side, count = 2 * size, bank_fields(size)
    unit = size / 64.0 / texture_scale

    def stack(cell: tuple[float, float], order: int) -> FloatArray:
        return np.stack([value_noise(generator, side, cell, order=order) for _ in range(count)])

    return NoiseBank(
        unit=unit,
        smooth=stack((13 * unit, 13 * unit), 3),
        fine=stack((1.5 * unit, 1.5 * unit), 1),
        streak=stack((5 * unit, 1.2 * unit), 1),
        grain=generator.standard_normal((count, 3, side, side), dtype=np.float32),
    )


class Painter:
    """Per-image random state: the generator, the noise bank and the colour jitter of the current object."""

    def __init__(
        self,
        generator: np.random.Generator,
        bank: NoiseBank,
        *,
        hue_jitter: float,
        saturation: tuple[float, float],
        value: tuple[float, float],
    ) -> None:
        self.generator = generator
        self.bank = bank
        self._jitter_low = np.array((-hue_jitter, saturation[0], value[0]))
        self._jitter_span = np.array((2.0 * hue_jitter, saturation[1] - saturation[0], value[1] - value[0]))
        self._hue_shift = 0.0
        self._saturation_scale = 1.0
        self._value_scale = 1.0

    def new_object(self) -> None:
        """Draw the colour jitter of the next object (all of its colours move together)."""
        jitter = self._jitter_low + self._jitter_span * self.generator.random(3)
        self._hue_shift, self._saturation_scale, self._value_scale = (float(x) for x in jitter)

    def rgb(self, hue: float, saturation: float, value: float) -> tuple[float, float, float]:
        """The jittered colour of an HSV triple (all in [0, 1]) as RGB in 0-255."""
        red, green, blue = colorsys.hsv_to_rgb(
            (hue + self._hue_shift) % 1.0,
            min(1.0, saturation * self._saturation_scale),
            min(1.0, value * self._value_scale),
        )
        return red * 255.0, green * 255.0, blue * 255.0

    def color(self, hue: float, saturation: float, value: float) -> FloatArray:
        """The jittered colour of an HSV triple (all in [0, 1]), as ``(3, 1, 1)`` float32 RGB in 0-255."""
        return np.array(self.rgb(hue, saturation, value), dtype=np.float32).reshape(3, 1, 1)

    def window(self, fields: FloatArray, height: int, width: int) -> FloatArray:
        """A random, randomly flipped ``(height, width)`` window of one of ``fields`` ``(K, side, side)``.

        A view: do not write to it.
        """
        count, side = fields.shape[0], fields.shape[1]
        draws = self.generator.integers((count, side - height + 1, side - width + 1, 4))
        index, top, left, flip = (int(x) for x in draws)
        window: FloatArray = fields[index, top : top + height, left : left + width]
        if flip & 1:
            window = window[::-1]
        if flip & 2:
            window = window[:, ::-1]
        return window

    def smooth(self, height: int, width: int) -> FloatArray:
        """A ``(height, width)`` window of low-frequency noise in [0, 1] (a view)."""
        return self.window(self.bank.smooth, height, width)

    def fine(self, height: int, width: int) -> FloatArray:
        """A ``(height, width)`` window of high-frequency noise in [0, 1] (a view)."""
        return self.window(self.bank.fine, height, width)

    def grain(self, height: int, width: int) -> FloatArray:
        """A ``(3, height, width)`` window of standard normal sensor noise (a view)."""
        grain = self.bank.grain
        count, side = grain.shape[0], grain.shape[2]
        index, top, left = (int(x) for x in self.generator.integers((count, side - height + 1, side - width + 1)))
        window: FloatArray = grain[index, :, top : top + height, left : left + width]
        return window


def mix(first: FloatArray, second: FloatArray, weight: FloatArray) -> FloatArray:
    """Per-pixel blend of two colours (``(3, 1, 1)`` or ``(3, H, W)``) by an ``(H, W)`` weight in [0, 1].

    Returns:
        ``(3, H, W)`` float32 RGB.
    """
    return first + weight * (second - first)
