"""The synthetic world's class table: 7 stuff classes and 14 thing classes.

Label value == class id, in every label map the world writes (semantic PNGs, VOC palette PNGs) and in the COCO
``category_id`` of its instances. Stuff comes first (ids 0-6), then things (ids 7-20); 255 is the ignore label.
There is no "background" class: every pixel is a stuff or a thing. :func:`label_lookup` remaps the ids to any subset
(e.g. "background + things", the VOC-21 style protocol).

Each thing has a *typical stuff*, the context it sits on in most images (``WorldConfig.p_typical``), and a
``group``: the suggested seen/unseen split for zero-shot transfer (one unseen thing per kind of context).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from seg_core import ConfigError, SegModel

__all__ = [
    "CLASSES",
    "IGNORE_LABEL",
    "NUM_CLASSES",
    "STUFF_NAMES",
    "THING_NAMES",
    "ClassKind",
    "WorldClass",
    "class_by_id",
    "class_by_name",
    "label_lookup",
    "palette",
    "unseen_class_names",
]

IGNORE_LABEL = 255
"""Label of pixels no metric should count (void borders, see ``WorldConfig.void_border``)."""

ClassKind = Literal["stuff", "thing"]


class WorldClass(SegModel):
    """One row of the class table (written into ``world.json`` so any reader knows the classes)."""

    id: int
    """Label value in every label map, and the COCO ``category_id`` of a thing."""
    name: str
    """Singular name, the word captions use (and what prompts should use)."""
    plural: str
    kind: ClassKind
    group: Literal["seen", "unseen"]
    """Suggested split for zero-shot transfer to unseen classes (things only; stuff is always "seen")."""
    supercategory: str
    typical_stuff: str | None
    """The stuff a thing sits on in most images (``None`` for stuff)."""
    color: tuple[int, int, int]
    """Palette colour of the label in VOC palette PNGs and example figures."""
    appearance: str
    """What it looks like, in words (for the docs and for readers)."""


# (name, plural, supercategory, typical stuff, palette colour, appearance, suggested group)
_THINGS: tuple[tuple[str, str, str, str, tuple[int, int, int], str, Literal["seen", "unseen"]], ...] = (
    ("tomato", "tomatoes", "food", "wall", (230, 30, 30), "red and round, a green star-shaped top", "seen"),
    ("banana", "bananas", "food", "wall", (250, 230, 40), "yellow crescent with brown tips", "seen"),
    ("flower", "flowers", "plant", "grass", (160, 60, 200), "purple petals around a yellow centre", "seen"),
    ("duck", "ducks", "animal", "water", (255, 150, 200), "white body and head, orange beak", "seen"),
    ("boat", "boats", "vehicle", "water", (140, 80, 30), "brown planked hull, white sails on a mast", "seen"),
    ("plane", "planes", "vehicle", "sky", (170, 170, 180), "grey cross: fuselage, swept wings, tail", "seen"),
    ("cow", "cows", "animal", "grass", (30, 30, 30), "white body with black patches, legs, pink nose", "seen"),
    ("ball", "balls", "toy", "sand", (230, 40, 200), "disk of alternating magenta and cyan sectors", "seen"),
    ("fish", "fish", "animal", "water", (255, 130, 20), "orange body, white black-edged stripes, tail", "unseen"),
    ("car", "cars", "vehicle", "road", (40, 70, 200), "blue body, light windows, black wheels", "seen"),
    ("sheep", "sheep", "animal", "grass", (250, 240, 150), "cream woolly cloud, black head and legs", "unseen"),
    ("kite", "kites", "toy", "sky", (0, 220, 255), "diamond of red and yellow quarters, dark spars, tail", "unseen"),
    ("umbrella", "umbrellas", "object", "sand", (250, 90, 120), "dome of red and white stripes on a handle", "unseen"),
    ("snowman", "snowmen", "object", "snow", (0, 128, 128), "three stacked white balls, top hat, carrot nose", "seen"),
)
# (name, palette colour, appearance)
_STUFF: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("sky", (112, 160, 255), "blue gradient, lighter towards the horizon, soft white clouds"),
    ("grass", (40, 150, 40), "green with fine vertical blade streaks"),
    ("water", (20, 80, 150), "deep blue-teal with horizontal wave stripes"),
    ("sand", (222, 196, 140), "beige speckle with diagonal ripples"),
    ("wall", (150, 60, 50), "red-brown bricks in offset rows with grey mortar"),
    ("road", (128, 64, 128), "dark grey asphalt speckle with a dashed yellow lane line"),
    ("snow", (235, 240, 250), "white with pale blue shadows and sparkles"),
)

CLASSES: tuple[WorldClass, ...] = tuple(
    WorldClass(
        id=class_id,
        name=name,
        plural=name,
        kind="stuff",
        group="seen",
        supercategory="stuff",
        typical_stuff=None,
        color=color,
        appearance=appearance,
    )
    for class_id, (name, color, appearance) in enumerate(_STUFF)
) + tuple(
    WorldClass(
        id=len(_STUFF) + number,
        name=name,
        plural=plural,
        kind="thing",
        group=group,
        supercategory=supercategory,
        typical_stuff=typical,
        color=color,
        appearance=appearance,
    )
    for number, (name, plural, supercategory, typical, color, appearance, group) in enumerate(_THINGS)
)
"""The class table, in id order."""

NUM_CLASSES = len(CLASSES)
STUFF_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.kind == "stuff")
THING_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.kind == "thing")
_BY_NAME = {c.name: c for c in CLASSES}


def class_by_name(name: str) -> WorldClass:
    """The class called ``name``; :class:`~seg_core.ConfigError` listing the valid names if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown world class {name!r}; choose from {', '.join(_BY_NAME)}") from None


def class_by_id(class_id: int) -> WorldClass:
    """The class whose label value is ``class_id`` (0 <= class_id < NUM_CLASSES)."""
    if not 0 <= class_id < NUM_CLASSES:
        raise ConfigError(f"world class id {class_id} out of range [0, {NUM_CLASSES})")
    return CLASSES[class_id]


def unseen_class_names() -> tuple[str, ...]:
    """Names of the things in the suggested unseen group (hold them out with ``WorldConfig(held_out=...)``)."""
    return tuple(c.name for c in CLASSES if c.group == "unseen")


@cache
def palette() -> bytes:
    """A 768-byte PIL palette: class id -> class colour, 255 -> VOC's void colour (224, 224, 192), rest black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for world_class in CLASSES:
        table[world_class.id] = world_class.color
    table[IGNORE_LABEL] = (224, 224, 192)
    return table.tobytes()


def label_lookup(keep: Sequence[str], *, others: Literal["ignore", "background"] = "ignore") -> npt.NDArray[np.uint8]:
    """A 256-entry lookup table that remaps world label maps onto a subset of classes.

    ``lut[semantic]`` gives the kept classes contiguous ids in the order of ``keep``. With ``others="background"``
    id 0 is a background class (kept classes become 1..len(keep)) that every other class falls into, the VOC-21
    style; with ``others="ignore"`` other classes become 255. The ignore label stays 255.

    Args:
        keep: Class names, e.g. ``THING_NAMES`` or the seen things.
        others: What every class not in ``keep`` becomes.

    Returns:
        ``(256,)`` uint8 table; apply as ``lut[semantic]`` to an ``(H, W)`` uint8 map.
    """
    if len(set(keep)) != len(keep):
        raise ConfigError(f"label_lookup: duplicate class names in {list(keep)}")
    offset = 1 if others == "background" else 0
    lut = np.full(256, 0 if others == "background" else IGNORE_LABEL, dtype=np.uint8)
    lut[IGNORE_LABEL] = IGNORE_LABEL
    for new_id, name in enumerate(keep):
        lut[class_by_name(name).id] = new_id + offset
    return lut
