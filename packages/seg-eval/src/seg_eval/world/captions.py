"""Captions: templated descriptions of a scene, and the unrelated text that stands in for web noise.

A clean caption names every thing class in the image with its count ("two ducks and a boat") and, with
probability ``p_stuff``, one stuff region ("... on the water"), sometimes a second one. A noisy caption is either
*junk* (file names, shop slogans: no class word at all) or a *mismatch*: a clean caption of another scene, naming
classes that are not in the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from seg_eval.world.classes import STUFF_NAMES, class_by_name

__all__ = ["CaptionKind", "caption_for", "describe"]

CaptionKind = Literal["clean", "junk", "mismatch"]

_TEMPLATES = (
    "a photo of {}.",
    "{}.",
    "there is {}.",
    "a picture of {}.",
    "an image showing {}.",
    "look at {}!",
    "a close-up photo of {}.",
)

_STUFF_PHRASES: dict[str, tuple[str, ...]] = {
    "sky": ("in the sky", "against the sky", "under a blue sky"),
    "grass": ("on the grass", "in the grass", "on green grass"),
    "water": ("on the water", "in the water", "by the water"),
    "sand": ("on the sand", "in the sand", "on sand"),
    "wall": ("in front of a brick wall", "against a wall", "by the wall"),
    "road": ("on the road", "on a road", "by the road"),
    "snow": ("in the snow", "on the snow", "on white snow"),
}
_STUFF_NOUNS = {
    "sky": "the sky",
    "grass": "grass",
    "water": "water",
    "sand": "sand",
    "wall": "a brick wall",
    "road": "the road",
    "snow": "snow",
}
_COUNT_WORDS = ("zero", "a", "two", "three", "four", "five", "six")

_JUNK = (
    "IMG_{number:04d}.JPG",
    "DSC{number:05d}",
    "click here to see more",
    "free shipping on all orders over ${number}",
    "best price guaranteed",
    "untitled",
    "photo {number}",
    "my holiday pictures {year}",
    "desktop background 1920x1080 hd",
    "screenshot {year}-{month:02d}-{day:02d}",
    "copyright {year} all rights reserved",
    "view more at our website",
    "thumbnail",
    "image not available",
    "new arrivals this week",
    "happy birthday to my best friend",
    "what do you think?",
    "sale ends {month}/{day}",
)


def _counted(name: str, count: int, generator: np.random.Generator, p_count: float) -> str:
    world_class = class_by_name(name)
    if count == 1:
        article = "an" if name[0] in "aeiou" else "a"
        return f"{article} {name}"
    if generator.random() < p_count:
        return f"{_COUNT_WORDS[min(count, len(_COUNT_WORDS) - 1)]} {world_class.plural}"
    return f"some {world_class.plural}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(
    thing_counts: Sequence[tuple[str, int]],
    stuff: Sequence[str],
    generator: np.random.Generator,
    *,
    p_stuff: float,
    p_count: float,
) -> tuple[str, tuple[str, ...]]:
    """A clean caption of a scene.

    Args:
        thing_counts: ``(class name, number of instances)`` of every thing class to name, in any order.
        stuff: Stuff class names that may be named, most prominent first.
        generator: Random stream (consumed).
        p_stuff: Probability of naming a stuff.
        p_count: Probability of a number word for several instances ("two") instead of "some".

    Returns:
        The caption and the names of the classes it mentions.
    """
    order = generator.permutation(len(thing_counts))
    counted = [_counted(thing_counts[i][0], thing_counts[i][1], generator, p_count) for i in order]
    mentioned = [thing_counts[i][0] for i in order]
    text = _join(counted)
    if stuff and generator.random() < p_stuff:
        first = stuff[0]
        phrases = _STUFF_PHRASES[first]
        text += " " + phrases[int(generator.integers(len(phrases)))]
        mentioned.append(first)
        if len(stuff) > 1 and generator.random() < 0.3:
            second = stuff[1]
            text += f", with {_STUFF_NOUNS[second]} in the background"
            mentioned.append(second)
    template = _TEMPLATES[int(generator.integers(len(_TEMPLATES)))]
    if template.startswith("there is") and not counted[0].startswith(("a ", "an ")):
        template = "there are" + template[len("there is") :]
    return template.format(text), tuple(mentioned)


def _junk(generator: np.random.Generator) -> str:
    template = _JUNK[int(generator.integers(len(_JUNK)))]
    return template.format(
        number=int(generator.integers(1, 10000)),
        year=int(generator.integers(1998, 2026)),
        month=int(generator.integers(1, 13)),
        day=int(generator.integers(1, 29)),
    )


def caption_for(
    thing_counts: Sequence[tuple[str, int]],
    stuff: Sequence[str],
    allowed_things: Sequence[str],
    generator: np.random.Generator,
    *,
    p_stuff: float,
    p_count: float,
    p_noise: float,
    p_mismatch: float,
) -> tuple[str, CaptionKind, tuple[str, ...]]:
    """The caption of an image: clean with probability ``1 - p_noise``, otherwise junk or a mismatch.

    A mismatch names one or two thing classes from ``allowed_things`` that are not in the image, and a stuff that
    is not in it (with probability ``p_stuff``), so it is unrelated to the image.

    Returns:
        ``(caption, kind, names of the classes it mentions)``.
    """
    if generator.random() >= p_noise:
        caption, mentioned = describe(thing_counts, stuff, generator, p_stuff=p_stuff, p_count=p_count)
        return caption, "clean", mentioned
    if generator.random() >= p_mismatch:
        return _junk(generator), "junk", ()
    present = {name for name, _ in thing_counts}
    absent_things = [name for name in allowed_things if name not in present] or list(allowed_things)
    how_many = min(len(absent_things), int(generator.integers(1, 3)))
    chosen = generator.choice(len(absent_things), size=how_many, replace=False)
    fake_counts = [(absent_things[int(i)], int(generator.integers(1, 3))) for i in chosen]
    absent_stuff = [name for name in STUFF_NAMES if name not in stuff]
    fake_stuff = [absent_stuff[int(generator.integers(len(absent_stuff)))]] if absent_stuff else []
    caption, mentioned = describe(fake_counts, fake_stuff, generator, p_stuff=p_stuff, p_count=p_count)
    return caption, "mismatch", mentioned
