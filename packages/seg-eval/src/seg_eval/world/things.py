"""Things: one silhouette, palette and pattern per thing class, drawn from cached sprites.

Each class is a :class:`ThingStyle`: a shape function that labels the parts of the silhouette (body, beak, wheels
...) and a shading factor on a grid of local coordinates ``u`` (right) and ``v`` (down) in ``[-1, 1]^2``, plus one
HSV colour per part. The shape is evaluated once per process into a sprite; an instance samples its sprite at its
pixels (nearest neighbour, after rotation, mirroring and scaling) and colours the parts with jittered colours.
Two classes add a per-instance pattern: cow patches and sheep wool. Silhouettes have hard edges, so label maps are
exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from seg_eval.world.noise import FloatArray, Painter, mix

__all__ = [
    "THING_STYLES",
    "Sprite",
    "ThingStyle",
    "draw_thing",
    "max_rotation",
    "silhouette_fill",
    "sprite",
    "sprite_side",
]

BoolArray = npt.NDArray[np.bool_]
UInt8Array = npt.NDArray[np.uint8]
HSV = tuple[float, float, float]
ShapeFunction = Callable[[FloatArray, FloatArray], tuple[UInt8Array, FloatArray]]
"""``(u (n, n), v (n, n)) -> (part labels (n, n) uint8, 0 = outside; shading factor (n, n) float32)``."""


@dataclass(frozen=True)
class ThingStyle:
    """How a thing class looks.

    Attributes:
        shape: Labels the parts of the silhouette and gives the shading.
        colors: HSV colour of part 1, 2, ... (``colors[k - 1]`` is part ``k``).
        max_rotation_degrees: Largest random tilt either way (upright things tilt little).
        pattern: ``"patches"``: part 1 gets blotches of ``pattern_color`` (cow); ``"wool"``: part 1 is a fine-noise
            blend towards ``pattern_color`` (sheep).
        pattern_color: HSV colour of the pattern.
    """

    shape: ShapeFunction
    colors: tuple[HSV, ...]
    max_rotation_degrees: float = 12.0
    pattern: Literal["none", "patches", "wool"] = "none"
    pattern_color: HSV = (0.0, 0.0, 0.0)


def _ellipse(u: FloatArray, v: FloatArray, centre: tuple[float, float], radii: tuple[float, float]) -> FloatArray:
    """Squared normalised distance to the centre of an axis-aligned ellipse, ``(u, v)`` order (< 1 inside)."""
    du = (u - centre[0]) * (1.0 / radii[0])
    dv = (v - centre[1]) * (1.0 / radii[1])
    distance2: FloatArray = du * du + dv * dv
    return distance2


def _labels(shape: tuple[int, ...], *layers: BoolArray) -> UInt8Array:
    """Part map: pixels of ``layers[k]`` get label ``k + 1``; later layers paint over earlier ones."""
    parts = np.zeros(shape, dtype=np.uint8)
    for label, layer in enumerate(layers, start=1):
        parts[layer] = label
    return parts


def _flat(u: FloatArray) -> FloatArray:
    return np.ones_like(u)


def _tomato(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    radius2 = _ellipse(u, v, (0.0, 0.1), (1.0, 0.88))
    body = radius2 < 1.0
    highlight = body & (_ellipse(u, v, (-0.42, -0.2), (0.17, 0.13)) < 1.0)
    top_v = v + 0.68
    star_radius = 0.34 * (0.55 + 0.45 * np.cos(5.0 * np.arctan2(top_v, u)))
    top = (u * u + top_v * top_v < star_radius * star_radius) | ((np.abs(u) < 0.07) & (v > -0.98) & (v < -0.68))
    parts = _labels(u.shape, body, highlight, top)
    return parts, np.where(parts == 1, 1.08 - 0.4 * radius2, 1.0).astype(np.float32)


def _banana(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    centre_v = v + 1.05
    angle = np.arctan2(u, centre_v)  # 0 points straight down
    max_angle = 0.95
    half_thickness = 0.3 * (1.0 - (angle / max_angle) ** 2)
    offset = np.sqrt(u * u + centre_v * centre_v) - 1.15
    body = (np.abs(angle) < max_angle) & (np.abs(offset) < half_thickness)
    tips = body & (np.abs(angle) > 0.82 * max_angle)
    ridge = offset / np.maximum(half_thickness, 1e-3)
    return _labels(u.shape, body, tips), (1.05 - 0.35 * ridge * ridge).astype(np.float32)


def _flower(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    centre_v = v + 0.12
    radius = np.sqrt(u * u + centre_v * centre_v)
    petals = radius < 0.45 + 0.42 * np.abs(np.cos(2.5 * np.arctan2(centre_v, u)))
    stem = (np.abs(u) < 0.07) & (v > 0.5) & (v < 1.0) & ~petals
    parts = _labels(u.shape, petals, radius < 0.27, stem)
    return parts, np.where(parts == 1, 0.7 + 0.4 * radius, 1.0).astype(np.float32)


def _duck(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    body = _ellipse(u, v, (-0.12, 0.3), (0.85, 0.5)) < 1.0
    head = _ellipse(u, v, (0.48, -0.3), (0.3, 0.3)) < 1.0
    tail = (u > -1.0) & (u < -0.7) & (v < 0.3) & (v > 0.3 + 1.2 * (u + 0.7))
    wing = _ellipse(u, v, (-0.2, 0.28), (0.45, 0.22)) < 1.0
    beak = _ellipse(u, v, (0.86, -0.24), (0.2, 0.09)) < 1.0
    eye = _ellipse(u, v, (0.56, -0.38), (0.08, 0.08)) < 1.0
    parts = _labels(u.shape, body | head | tail, wing, beak, eye)
    return parts, (1.0 - 0.22 * np.clip(v, 0.0, 1.0)).astype(np.float32)


def _boat(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    hull = (v > 0.3) & (v < 0.78) & (np.abs(u) < 1.0 - (v - 0.3) * 0.75)
    planks = hull & ((v - 0.3) * 9.0 % 1.0 < 0.25)
    mast = (np.abs(u + 0.05) < 0.05) & (v > -0.95) & (v <= 0.3)
    sail = (u > 0.02) & (v > -0.9) & (v < 0.22) & (u < 0.8 * (v + 0.9) / 1.12)
    jib = (u < -0.12) & (v > -0.62) & (v < 0.22) & (u > -0.62 * (v + 0.62) / 0.84 - 0.12)
    parts = _labels(u.shape, hull, planks, mast, sail | jib)
    return parts, np.where(parts == 4, 0.92 + 0.08 * u, 1.0).astype(np.float32)


def _plane(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    across = np.abs(v)
    fuselage = _ellipse(u, v, (0.0, 0.0), (0.97, 0.15)) < 1.0
    wings = (across < 0.92) & (u > -0.18 - 0.35 * across) & (u < 0.2 - 0.35 * across)
    tail = (across < 0.38) & (u > -0.97) & (u < -0.72 - 0.3 * across)
    cockpit = _ellipse(u, v, (0.8, 0.0), (0.12, 0.08)) < 1.0
    return _labels(u.shape, fuselage | wings | tail, cockpit), (1.05 - 0.2 * across).astype(np.float32)


def _cow(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    body = _ellipse(u, v, (-0.1, -0.05), (0.72, 0.42)) < 1.0
    legs = (v > 0.15) & (v < 0.9)
    legs &= (np.abs(u + 0.6) < 0.08) | (np.abs(u + 0.33) < 0.08) | (np.abs(u - 0.2) < 0.08) | (np.abs(u - 0.45) < 0.08)
    head = _ellipse(u, v, (0.74, -0.32), (0.22, 0.2)) < 1.0
    tail = (np.abs(u + 0.83) < 0.05) & (v > -0.1) & (v < 0.45)
    hooves = legs & (v > 0.78)
    nose = _ellipse(u, v, (0.9, -0.24), (0.1, 0.1)) < 1.0
    return _labels(u.shape, body | legs | head | tail, hooves, nose), _flat(u)


def _ball(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    radius2 = u * u + v * v
    disk = radius2 < 0.9
    sector = disk & (np.floor((np.arctan2(v, u) + math.pi) * (3.0 / math.pi)).astype(np.int64) % 2 == 1)
    highlight = disk & (_ellipse(u, v, (-0.35, -0.4), (0.16, 0.12)) < 1.0)
    parts = _labels(u.shape, disk, sector, highlight)
    return parts, np.where(parts == 3, 1.0, 1.08 - 0.35 * radius2).astype(np.float32)


def _fish(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    radius2 = _ellipse(u, v, (0.15, 0.0), (0.72, 0.45))
    body = radius2 < 1.0
    tail = (u < -0.45) & (u > -1.0) & (np.abs(v) < (-0.45 - u) * 1.05 + 0.05)
    fin = (u > -0.1) & (u < 0.4) & (v < -0.3) & (v > -0.65 + 0.7 * (u + 0.1))
    stripe_distance = np.minimum(np.abs(u - 0.42), np.abs(u + 0.12))
    eye = _ellipse(u, v, (0.62, -0.08), (0.07, 0.07)) < 1.0
    parts = _labels(u.shape, body | tail | fin, body & (stripe_distance < 0.13), body & (stripe_distance < 0.08), eye)
    return parts, np.where(parts == 1, 1.05 - 0.3 * np.minimum(radius2, 1.0), 1.0).astype(np.float32)


def _car(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    lower = (np.abs(u) < 0.95) & (v > -0.08) & (v < 0.45)
    cabin_u = np.abs(u + 0.05)
    cabin = (v > -0.52) & (v <= -0.08) & (cabin_u < 0.42 + (v + 0.52) * 0.6)
    window = (v > -0.44) & (v < -0.14) & (cabin_u < 0.34 + (v + 0.44) * 0.6) & (cabin_u > 0.05)
    wheel_radius2 = np.minimum((u - 0.55) ** 2, (u + 0.55) ** 2) + (v - 0.47) ** 2
    headlight = _ellipse(u, v, (0.9, 0.05), (0.06, 0.08)) < 1.0
    parts = _labels(u.shape, lower | cabin, window, wheel_radius2 < 0.24**2, wheel_radius2 < 0.1**2, headlight)
    return parts, np.where(parts == 1, 1.08 - 0.3 * np.clip(v + 0.5, 0.0, 1.0), 1.0).astype(np.float32)


def _sheep(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    du = (u + 0.1) * (1.0 / 0.78)
    dv = (v + 0.02) * (1.0 / 0.55)
    wool = np.sqrt(du * du + dv * dv) < 1.0 + 0.1 * np.sin(9.0 * np.arctan2(dv, du))
    head = _ellipse(u, v, (0.72, -0.18), (0.2, 0.25)) < 1.0
    legs = (v > 0.35) & (v < 0.92) & ~wool
    legs &= (np.abs(u + 0.5) < 0.07) | (np.abs(u + 0.25) < 0.07) | (np.abs(u - 0.1) < 0.07) | (np.abs(u - 0.32) < 0.07)
    return _labels(u.shape, wool, head | legs), _flat(u)


def _kite(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    from_cross = v + 0.3
    half_height = np.where(from_cross < 0.0, 0.65, 0.92)
    diamond = np.abs(u) * (1.0 / 0.62) + np.abs(from_cross) / half_height < 1.0
    quarter = diamond & ((u > 0.0) ^ (from_cross > 0.0))
    spars = diamond & ((np.abs(u) < 0.035) | (np.abs(from_cross) < 0.035))
    tail = (v > 0.6) & (v < 1.0) & (np.abs(u - 0.12 * np.sin(v * 14.0)) < 0.06)
    bow = _ellipse(u, v, (0.1, 0.82), (0.14, 0.06)) < 1.0
    return _labels(u.shape, diamond, quarter | tail | bow, spars), _flat(u)


def _umbrella(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    above = -(v + 0.05)
    canopy = (u * u + (above * (1.0 / 0.8)) ** 2 < 1.0) & (v < -0.02 - 0.1 * np.abs(np.sin(math.pi * 2.0 * u)))
    stripe = canopy & (np.floor((np.arctan2(u, above) + math.pi / 2.0) * (8.0 / math.pi)).astype(np.int64) % 2 == 1)
    handle = (np.abs(u) < 0.045) & (v >= -0.1) & (v < 0.8)
    hook = (np.abs(np.sqrt((u + 0.14) ** 2 + (v - 0.8) ** 2) - 0.14) < 0.045) & (v >= 0.8)
    knob = _ellipse(u, v, (0.0, -0.87), (0.06, 0.06)) < 1.0
    return _labels(u.shape, canopy, stripe, handle | hook | knob), _flat(u)


def _snowman(u: FloatArray, v: FloatArray) -> tuple[UInt8Array, FloatArray]:
    bottom = _ellipse(u, v, (0.0, 0.52), (0.46, 0.46))
    middle = _ellipse(u, v, (0.0, -0.05), (0.34, 0.34))
    head = _ellipse(u, v, (0.0, -0.5), (0.25, 0.25))
    balls = (bottom < 1.0) | (middle < 1.0) | (head < 1.0)
    hat = ((np.abs(u) < 0.17) & (v > -0.98) & (v < -0.7)) | ((np.abs(u) < 0.28) & (v >= -0.74) & (v < -0.68))
    eyes = (_ellipse(u, v, (0.09, -0.57), (0.05, 0.05)) < 1.0) | (_ellipse(u, v, (-0.09, -0.57), (0.05, 0.05)) < 1.0)
    buttons = (_ellipse(u, v, (0.0, -0.12), (0.05, 0.05)) < 1.0) | (_ellipse(u, v, (0.0, 0.06), (0.05, 0.05)) < 1.0)
    scarf = (v > -0.31) & (v < -0.22) & (np.abs(u) < 0.3)
    nose = (u > 0.02) & (u < 0.34) & (np.abs(v + 0.48) < 0.06 * (0.34 - u) / 0.32 + 0.01)
    parts = _labels(u.shape, balls, hat | eyes | buttons, scarf, nose)
    edge = np.minimum(np.minimum(bottom, middle), head)
    return parts, np.where(parts == 1, 1.0 - 0.25 * np.clip(edge + 0.3 * u, 0.0, 1.0), 1.0).astype(np.float32)


_DARK: HSV = (0.0, 0.0, 0.1)

THING_STYLES: dict[str, ThingStyle] = {
    "tomato": ThingStyle(_tomato, ((0.995, 0.85, 0.88), (0.0, 0.3, 1.0), (0.33, 0.8, 0.5))),
    "banana": ThingStyle(_banana, ((0.15, 0.85, 0.97), (0.08, 0.7, 0.35)), max_rotation_degrees=40.0),
    "flower": ThingStyle(
        _flower, ((0.78, 0.62, 0.85), (0.14, 0.9, 0.97), (0.32, 0.75, 0.5)), max_rotation_degrees=25.0
    ),
    "duck": ThingStyle(_duck, ((0.14, 0.04, 0.98), (0.1, 0.06, 0.84), (0.08, 0.95, 0.97), _DARK)),
    "boat": ThingStyle(_boat, ((0.07, 0.72, 0.5), (0.07, 0.72, 0.35), (0.07, 0.6, 0.25), (0.1, 0.05, 0.98))),
    "plane": ThingStyle(_plane, ((0.6, 0.05, 0.75), (0.6, 0.35, 0.3)), max_rotation_degrees=180.0),
    "cow": ThingStyle(
        _cow,
        ((0.1, 0.03, 0.96), (0.05, 0.3, 0.2), (0.95, 0.45, 0.95)),
        pattern="patches",
        pattern_color=(0.0, 0.0, 0.12),
    ),
    "ball": ThingStyle(_ball, ((0.5, 0.9, 0.92), (0.88, 0.9, 0.92), (0.0, 0.0, 1.0)), max_rotation_degrees=180.0),
    "fish": ThingStyle(
        _fish, ((0.07, 0.95, 0.98), _DARK, (0.1, 0.03, 1.0), (0.0, 0.0, 0.08)), max_rotation_degrees=25.0
    ),
    "car": ThingStyle(_car, ((0.62, 0.8, 0.8), (0.53, 0.2, 0.95), _DARK, (0.0, 0.0, 0.6), (0.15, 0.8, 1.0))),
    "sheep": ThingStyle(_sheep, ((0.11, 0.2, 0.78), (0.0, 0.0, 0.13)), pattern="wool", pattern_color=(0.12, 0.1, 0.98)),
    "kite": ThingStyle(_kite, ((0.14, 0.9, 0.98), (0.99, 0.88, 0.92), (0.07, 0.5, 0.3)), max_rotation_degrees=30.0),
    "umbrella": ThingStyle(_umbrella, ((0.0, 0.03, 0.98), (0.98, 0.85, 0.92), (0.07, 0.5, 0.3))),
    "snowman": ThingStyle(_snowman, ((0.6, 0.03, 1.0), (0.0, 0.0, 0.08), (0.99, 0.85, 0.85), (0.08, 0.95, 0.98))),
}
"""Thing class name -> style."""


@dataclass(frozen=True, eq=False)
class Sprite:
    """A thing's shape sampled on a ``(side, side)`` grid over ``[-1, 1]^2`` plus a one-pixel empty border.

    Attributes:
        parts: ``(side * side,)`` uint8 part labels (flattened; 0 = outside).
        shade: ``(side * side,)`` float32 shading factors.
        side: Grid side including the border.
        fill: Fraction of ``[-1, 1]^2`` inside the silhouette.
    """

    parts: UInt8Array
    shade: FloatArray
    side: int
    fill: float


def sprite_side(image_size: int) -> int:
    """Sprite grid side for an image size: at least 2 sprite pixels per image pixel of the largest things."""
    return min(1024, max(256, 2 * image_size)) + 2


@lru_cache(maxsize=64)
def sprite(name: str, side: int) -> Sprite:
    """The cached sprite of thing class ``name`` with a ``side``-pixel grid (see :func:`sprite_side`)."""
    inner = side - 2
    centres = ((np.arange(inner, dtype=np.float32) + 0.5) * (2.0 / inner) - 1.0).astype(np.float32)
    u = np.ascontiguousarray(np.broadcast_to(centres[None, :], (inner, inner)))
    v = np.ascontiguousarray(np.broadcast_to(centres[:, None], (inner, inner)))
    parts, shade = THING_STYLES[name].shape(u, v)
    fill = float(np.count_nonzero(parts)) / parts.size
    return Sprite(
        parts=np.pad(parts, 1).ravel(),
        shade=np.pad(shade.astype(np.float32), 1, constant_values=1.0).ravel(),
        side=side,
        fill=fill,
    )


def silhouette_fill(name: str) -> float:
    """Fraction of the ``[-1, 1]^2`` box a thing's silhouette covers (to size it to a target area)."""
    return sprite(name, sprite_side(64)).fill


def max_rotation(name: str) -> float:
    """Largest rotation of a thing, in radians either way."""
    return math.radians(THING_STYLES[name].max_rotation_degrees)


def draw_thing(
    name: str,
    painter: Painter,
    dx: FloatArray,
    dy: FloatArray,
    *,
    radius: float,
    angle: float,
    mirrored: bool,
    side: int,
) -> tuple[BoolArray, FloatArray]:
    """Draw one instance over its box.

    Args:
        name: Thing class.
        painter: The image's painter (its colour jitter is drawn here).
        dx: ``(1, w)`` x offsets of the box's pixel centres from the instance centre, in pixels.
        dy: ``(h, 1)`` y offsets, in pixels.
        radius: Half the side of the instance's (unrotated) square, in pixels.
        angle: Rotation in radians.
        mirrored: Whether to mirror left-right.
        side: Sprite grid side (:func:`sprite_side`).

    Returns:
        The silhouette ``(h, w)`` bool and its colours ``(3, h, w)`` float32 in 0-255.
    """
    style = THING_STYLES[name]
    shape = sprite(name, side)
    # Sprite index of local coordinate t in [-1, 1] is floor((t + 1) * scale) + 1 (the +1 skips the border).
    scale = (side - 2) / 2.0
    cos, sin = math.cos(angle) * scale / radius, math.sin(angle) * scale / radius
    flip = -1.0 if mirrored else 1.0
    column = (dx * (flip * cos)) + (dy * (flip * sin) + (scale + 1.0))
    row = (dy * cos) + (dx * -sin + (scale + 1.0))
    np.clip(column, 0.0, side - 1.0, out=column)
    np.clip(row, 0.0, side - 1.0, out=row)
    flat = row.astype(np.intp) * side + column.astype(np.intp)
    parts = shape.parts.take(flat)
    painter.new_object()
    palette = np.zeros((3, len(style.colors) + 1), dtype=np.float32)
    for label, hsv in enumerate(style.colors, start=1):
        palette[:, label] = painter.rgb(*hsv)
    colors = palette.take(parts, axis=1) * shape.shade.take(flat)
    height, width = parts.shape
    if style.pattern == "patches":
        patches = (parts == 1) & (painter.smooth(height, width) > 0.55)
        colors = np.where(patches, painter.color(*style.pattern_color), colors)
    elif style.pattern == "wool":
        wool = mix(painter.color(*style.colors[0]), painter.color(*style.pattern_color), painter.fine(height, width))
        colors = np.where(parts == 1, wool, colors)
    return parts > 0, colors
