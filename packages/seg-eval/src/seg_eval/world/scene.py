"""``render(config, split, index)``: one image of the world, a pure function of its arguments.

A scene is built in five steps, all drawn from one random stream seeded by ``(config.seed, split, index)``:

1. **Things**: 1-3 classes; extra instances repeat a class present (``p_repeat``) or pick a companion that shares
   the first class's typical stuff (``p_companion``).
2. **Contexts**: each instance sits on its typical stuff with probability ``p_typical``, else on another stuff.
3. **Stuff regions**: the contexts plus random extra stuff (``stuff_regions``), stacked top to bottom in a
   plausible order (sky and walls above the ground, sand in front of water) and split by wavy horizons.
4. **Placement**: sizes are set so that the things together cover ``thing_area`` of the image; each centre lies
   inside its context's band. Later instances are painted over earlier ones; an instance whose visible part is too
   small (``min_visible``, ``min_visible_area``) is dropped, not painted. The layout is redrawn when the visible
   thing area falls outside ``thing_area``.
5. **Caption** from what is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from seg_core import ConfigError
from seg_eval.world.captions import caption_for
from seg_eval.world.classes import IGNORE_LABEL, NUM_CLASSES, STUFF_NAMES, THING_NAMES, class_by_name
from seg_eval.world.config import SPLITS, AppearanceConfig, SplitName, WorldConfig
from seg_eval.world.noise import FloatArray, Painter, noise_bank
from seg_eval.world.sample import WorldInstance, WorldSample, mask_bbox
from seg_eval.world.textures import paint_stuff, stuff_fields
from seg_eval.world.things import BoolArray, draw_thing, max_rotation, silhouette_fill, sprite_side

__all__ = ["render", "split_stream"]

_SPLIT_STREAMS: dict[str, int] = {name: number + 1 for number, name in enumerate(SPLITS)}
_LAYOUT_ATTEMPTS = 16
# Vertical order of stuff in a picture (smaller is higher up); ties are broken at random.
_STUFF_DEPTH = {"sky": 0, "wall": 1, "snow": 2, "grass": 3, "road": 3, "water": 3, "sand": 4}
_STUFF_IDS = {name: class_by_name(name).id for name in STUFF_NAMES}
_THING_IDS = {name: class_by_name(name).id for name in THING_NAMES}
_TYPICAL_STUFF = {name: class_by_name(name).typical_stuff for name in THING_NAMES}


def split_stream(config: WorldConfig, split: SplitName, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split``: independent of every other image and split."""
    return np.random.default_rng([config.seed, _SPLIT_STREAMS[split], index])


@cache
def _pixel_grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates in [0, 1): rows ``(S, 1)`` and cols ``(1, S)``."""
    centres = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return centres[:, None], centres[None, :]


@dataclass
class _Horizons:
    """Wavy boundaries between stacked stuff bands, in pixels: ``boundary_k(x) = S * (base + amp * sin(...))``."""

    base: list[float]
    amplitude: list[float]
    frequency: list[float]
    phase: list[float]
    size: int

    def row(self, boundary: int, x_pixels: FloatArray) -> FloatArray:
        """``boundary``'s row (pixels) at each of ``x_pixels``."""
        wave = np.sin((2.0 * math.pi * self.frequency[boundary] / self.size) * x_pixels + self.phase[boundary])
        rows: FloatArray = self.size * (self.base[boundary] + self.amplitude[boundary] * wave)
        return rows

    def _at(self, boundary: int, x_pixels: float) -> float:
        wave = math.sin(2.0 * math.pi * self.frequency[boundary] * x_pixels / self.size + self.phase[boundary])
        return self.size * (self.base[boundary] + self.amplitude[boundary] * wave)

    def band_top(self, band: int, x_pixels: float) -> float:
        return 0.0 if band == 0 else self._at(band - 1, x_pixels)

    def band_bottom(self, band: int, x_pixels: float) -> float:
        return float(self.size) if band == len(self.base) else self._at(band, x_pixels)


def _draw_horizons(generator: np.random.Generator, bands: int, size: int) -> _Horizons:
    if bands == 1:
        base = []
    elif bands == 2:
        base = [float(generator.uniform(0.35, 0.65))]
    else:
        base = [float(generator.uniform(0.22, 0.38)), float(generator.uniform(0.6, 0.76))]
    count = len(base)
    return _Horizons(
        base=base,
        amplitude=[float(a) for a in generator.uniform(0.01, 0.05, size=count)],
        frequency=[float(f) for f in generator.uniform(0.5, 2.0, size=count)],
        phase=[float(p) for p in generator.uniform(0.0, 2.0 * math.pi, size=count)],
        size=size,
    )


def _choose_things(config: WorldConfig, allowed: tuple[str, ...], generator: np.random.Generator) -> list[str]:
    count = int(generator.integers(config.min_things, config.max_things + 1))
    first = allowed[int(generator.integers(len(allowed)))]
    first_context = class_by_name(first).typical_stuff
    companions = [n for n in allowed if n != first and class_by_name(n).typical_stuff == first_context]
    names = [first]
    for _ in range(count - 1):
        if generator.random() < config.p_repeat:
            names.append(names[int(generator.integers(len(names)))])
        elif companions and generator.random() < config.p_companion:
            names.append(companions[int(generator.integers(len(companions)))])
        else:
            names.append(allowed[int(generator.integers(len(allowed)))])
    return names


def _choose_contexts(names: list[str], p_typical: float, generator: np.random.Generator) -> list[str]:
    contexts: list[str] = []
    for name in names:
        typical = class_by_name(name).typical_stuff
        assert typical is not None
        if generator.random() < p_typical:
            context = typical
        else:
            others = [stuff for stuff in STUFF_NAMES if stuff != typical]
            context = others[int(generator.integers(len(others)))]
        if context not in contexts and len(set(contexts)) == 3:
            context = contexts[int(generator.integers(len(contexts)))]  # at most three bands
        contexts.append(context)
    return contexts


def _choose_stuff(config: WorldConfig, contexts: list[str], generator: np.random.Generator) -> list[str]:
    """Stuff of the bands, top to bottom: the contexts plus random extra stuff."""
    stuff = list(dict.fromkeys(contexts))
    one, two, _ = config.stuff_regions
    draw = generator.random()
    wanted = 1 if draw < one else 2 if draw < one + two else 3
    while len(stuff) < wanted:
        rest = [name for name in STUFF_NAMES if name not in stuff]
        stuff.append(rest[int(generator.integers(len(rest)))])
    tie_break = generator.random(len(stuff))
    order = sorted(range(len(stuff)), key=lambda i: (_STUFF_DEPTH[stuff[i]], tie_break[i]))
    return [stuff[i] for i in order]


@dataclass
class _Placed:
    """One drawn instance: its box ``(y0, y1, x0, x1)``, silhouette and colours over the box."""

    name: str
    context: str
    box: tuple[int, int, int, int]
    mask: BoolArray
    colors: FloatArray
    visible: BoolArray | None = None
    visible_area: int = 0


def _place_things(
    names: list[str],
    *,
    contexts: list[str],
    band_of: dict[str, int],
    horizons: _Horizons,
    appearance: AppearanceConfig,
    painter: Painter,
    size: int,
) -> list[_Placed]:
    generator = painter.generator
    rows, cols = _pixel_grid(size)
    row_pixels, col_pixels = rows * size, cols * size  # pixel centres
    count = len(names)
    total_area = generator.uniform(*appearance.thing_area)
    weights = 0.6 + 0.8 * generator.random(count)
    shares = (total_area / weights.sum()) * weights
    draws = generator.random((count, 4)).tolist()  # rotation, mirroring, centre x, centre y
    side = sprite_side(size)
    placed = []
    for name, context, share, (turn, mirror, across, down) in zip(names, contexts, shares, draws, strict=True):
        radius = size * math.sqrt(share / (4.0 * silhouette_fill(name)))
        angle = (2.0 * turn - 1.0) * max_rotation(name)
        low_x, high_x = min(0.5 * radius, size / 2), max(size - 0.5 * radius, size / 2)
        centre_x = low_x + across * (high_x - low_x)
        band = band_of[context]
        top, bottom = horizons.band_top(band, centre_x), horizons.band_bottom(band, centre_x)
        margin = min(0.35 * radius, 0.3 * (bottom - top))
        centre_y = top + margin + down * (bottom - top - 2.0 * margin)
        extent = radius * (abs(math.cos(angle)) + abs(math.sin(angle)))
        y0, y1 = max(0, math.floor(centre_y - extent)), min(size, math.ceil(centre_y + extent))
        x0, x1 = max(0, math.floor(centre_x - extent)), min(size, math.ceil(centre_x + extent))
        if y1 <= y0 or x1 <= x0:
            continue
        mask, colors = draw_thing(
            name,
            painter,
            col_pixels[:, x0:x1] - centre_x,
            row_pixels[y0:y1] - centre_y,
            radius=radius,
            angle=angle,
            mirrored=mirror < 0.5,
            side=side,
        )
        placed.append(_Placed(name, context, (y0, y1, x0, x1), mask, colors))
    return placed


def _resolve_occlusion(placed: list[_Placed], config: WorldConfig, size: int) -> tuple[list[_Placed], int]:
    """Keep the instances visible enough (top-down) with their visible masks; returns them and the thing area."""
    covered = np.zeros((size, size), dtype=bool)
    kept: list[_Placed] = []
    min_pixels = config.min_visible_area * size * size
    thing_area = 0
    for item in reversed(placed):
        y0, y1, x0, x1 = item.box
        full_area = int(np.count_nonzero(item.mask))
        region = covered[y0:y1, x0:x1]
        visible = item.mask & ~region
        visible_area = int(np.count_nonzero(visible))
        if full_area == 0 or visible_area < config.min_visible * full_area or visible_area < min_pixels:
            continue
        region |= visible
        item.visible, item.visible_area = visible, visible_area
        thing_area += visible_area
        kept.append(item)
    kept.reverse()
    return kept, thing_area


def _void_band(instance_map: npt.NDArray[np.uint8], width: int) -> BoolArray:
    """Pixels at most ``width`` 4-neighbour steps from a pixel of another instance (or of no instance).

    Every boundary of a thing gets a band ``2 * width`` pixels wide, centred on it (the VOC void border style).
    """
    edge = np.zeros(instance_map.shape, dtype=bool)
    vertical = instance_map[1:] != instance_map[:-1]
    horizontal = instance_map[:, 1:] != instance_map[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    return edge


def render(config: WorldConfig, split: SplitName, index: int) -> WorldSample:
    """Render image ``index`` of ``split``: a pure function of ``(config, split, index)``.

    Args:
        config: The world.
        split: One of ``SPLITS``; ``shift`` uses ``config.shift``'s appearance, ``index``/``pairs`` leave out
            ``config.held_out``.
        index: Non-negative image index.

    Returns:
        The sample: ``(S, S, 3)`` image, ``(S, S)`` semantic and instance maps, instances, caption, metadata.
    """
    if split not in _SPLIT_STREAMS:
        raise ConfigError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if index < 0:
        raise ConfigError(f"image index must be >= 0, got {index}")
    size = config.size
    appearance = config.appearance_of(split)
    generator = split_stream(config, split, index)
    painter = Painter(
        generator,
        noise_bank(config.seed, size, appearance.texture_scale),
        hue_jitter=appearance.hue_jitter,
        saturation=appearance.saturation,
        value=appearance.value,
    )
    allowed = config.things_of(split)
    names = _choose_things(config, allowed, generator)
    contexts = _choose_contexts(names, appearance.p_typical, generator)
    stuff = _choose_stuff(config, contexts, generator)
    band_of = {name: band for band, name in enumerate(stuff)}
    horizons = _draw_horizons(generator, len(stuff), size)

    # Stuff layer: band index per pixel from the horizons, then one texture per band.
    rows, cols = _pixel_grid(size)
    band_index = np.zeros((size, size), dtype=np.uint8)
    boundaries = [horizons.row(k, cols[0] * size) for k in range(len(stuff) - 1)]
    row_pixels = rows * size
    for boundary in boundaries:
        band_index += row_pixels >= boundary[None, :]
    stuff_ids = np.array([_STUFF_IDS[name] for name in stuff], dtype=np.uint8)
    stuff_map = stuff_ids[band_index]
    fields = stuff_fields(config.seed, size, appearance.texture_scale)
    canvas = np.empty((3, size, size), dtype=np.float32)  # channel-first while painting (see noise.py)
    for band, name in enumerate(stuff):
        top = 0 if band == 0 else max(0, math.floor(float(boundaries[band - 1].min())))
        bottom = size if band == len(stuff) - 1 else min(size, math.ceil(float(boundaries[band].max())) + 1)
        painter.new_object()
        texture = paint_stuff(
            name,
            painter,
            fields=fields[name],
            rows=rows[top:bottom],
            cols=cols,
            size=size,
            texture_scale=appearance.texture_scale,
        )
        if band == 0:  # later bands paint over the rows it overlaps
            canvas[:, top:bottom] = texture
        else:
            canvas[:, top:bottom] = np.where(band_index[top:bottom] == band, texture, canvas[:, top:bottom])

    # Things: redraw the layout until the visible things cover `thing_area` (keep the closest attempt otherwise).
    low, high = appearance.thing_area[0] * size * size, appearance.thing_area[1] * size * size
    best: tuple[float, list[_Placed]] | None = None
    for _ in range(_LAYOUT_ATTEMPTS):
        placed = _place_things(
            names,
            contexts=contexts,
            band_of=band_of,
            horizons=horizons,
            appearance=appearance,
            painter=painter,
            size=size,
        )
        kept, thing_area = _resolve_occlusion(placed, config, size)
        miss = max(low - thing_area, thing_area - high, 0.0) + (size * size if not kept else 0.0)
        if best is None or miss < best[0]:
            best = (miss, kept)
        if miss == 0.0:
            break
    assert best is not None
    kept = best[1]

    semantic = stuff_map.copy()
    instance_map = np.zeros((size, size), dtype=np.uint8)
    for number, item in enumerate(kept, start=1):
        assert item.visible is not None
        y0, y1, x0, x1 = item.box
        canvas[:, y0:y1, x0:x1] = np.where(item.visible, item.colors, canvas[:, y0:y1, x0:x1])
        semantic[y0:y1, x0:x1][item.visible] = _THING_IDS[item.name]
        instance_map[y0:y1, x0:x1][item.visible] = number
    void_border = bool(config.void_border and kept)
    if void_border:
        void = _void_band(instance_map, config.void_border)
        semantic[void] = IGNORE_LABEL
        instance_map[void] = IGNORE_LABEL

    instances = []
    for number, item in enumerate(kept, start=1):
        assert item.visible is not None
        y0, y1, x0, x1 = item.box
        own = (instance_map[y0:y1, x0:x1] == number) if void_border else item.visible
        typical_stuff = _TYPICAL_STUFF[item.name]
        instances.append(
            WorldInstance(
                number=number,
                class_id=_THING_IDS[item.name],
                bbox=mask_bbox(own, y0, x0),
                area=int(np.count_nonzero(own)) if void_border else item.visible_area,
                context_id=_STUFF_IDS[item.context],
                typical=item.context == typical_stuff,
            )
        )

    # Light and sensor noise.
    canvas *= generator.uniform(*appearance.brightness)
    if appearance.pixel_noise > 0:
        canvas += painter.grain(size, size) * appearance.pixel_noise
    planes = np.clip(canvas, 0.0, 255.0, out=canvas).astype(np.uint8)
    image = np.empty((size, size, 3), dtype=np.uint8)
    for channel in range(3):  # channel-wise copies transpose to (H, W, 3) faster than ascontiguousarray
        image[:, :, channel] = planes[channel]

    # Caption from what is visible: things by first appearance; stuff: what the biggest things stand on, then the
    # other regions by visible area ("a duck on the water, with the road in the background").
    counts: dict[str, int] = {}
    for item in kept:
        counts[item.name] = counts.get(item.name, 0) + 1
    stuff_area = np.bincount(semantic.ravel(), minlength=256)[: len(STUFF_NAMES)]
    by_size = sorted(kept, key=lambda item: -item.visible_area)
    ordered = [item.context for item in by_size] + [STUFF_NAMES[i] for i in np.argsort(-stuff_area, kind="stable")]
    visible_stuff = [name for name in dict.fromkeys(ordered) if stuff_area[_STUFF_IDS[name]] > 0]
    caption, kind, mentioned = caption_for(
        list(counts.items()),
        visible_stuff,
        allowed,
        generator,
        p_stuff=config.p_stuff,
        p_count=config.p_count,
        p_noise=config.p_noise,
        p_mismatch=config.p_mismatch,
    )
    assert NUM_CLASSES < IGNORE_LABEL
    return WorldSample(
        split=split,
        index=index,
        image=image,
        semantic=semantic,
        instance_map=instance_map,
        instances=tuple(instances),
        caption=caption,
        caption_kind=kind,
        mentioned=tuple(class_by_name(name).id for name in mentioned),
        stuff_map=stuff_map,
    )
