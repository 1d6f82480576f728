"""Example pictures of the synthetic world for docs/synthetic-world.md (written under docs/images/world/).

    hatch run python tools/world_examples.py                # all figures, default world
    hatch run python tools/world_examples.py --scale 4 --out docs/images/world

Figures:

* ``examples.png``: val images, each beside its semantic map (class colours) and above its caption.
* ``classes.png``: every thing class alone on its typical stuff (a one-thing world with ``p_typical=1``).
* ``shift.png``: the same indices rendered in the ``test`` and ``shift`` splits' appearances.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from seg_eval.world import CLASSES, THING_NAMES, AppearanceConfig, WorldConfig, WorldSample, palette, render

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def _colorize(label_map: npt.NDArray[np.uint8]) -> Image.Image:
    image = Image.fromarray(label_map, mode="P")
    image.putpalette(palette())
    return image.convert("RGB")


def _upscale(image: Image.Image, scale: int) -> Image.Image:
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _tile(sample: WorldSample, scale: int, label: str, font: _Font) -> Image.Image:
    """Image | semantic map, with ``label`` wrapped underneath."""
    photo = _upscale(Image.fromarray(sample.image), scale)
    semantic = _upscale(_colorize(sample.semantic), scale)
    width = photo.width * 2 + 4
    lines = textwrap.wrap(label, width=max(20, width // 6))[:4]
    text_height = 12 * len(lines) + 6
    tile = Image.new("RGB", (width, photo.height + text_height), _BACKGROUND)
    tile.paste(photo, (0, 0))
    tile.paste(semantic, (photo.width + 4, 0))
    draw = ImageDraw.Draw(tile)
    for line_number, line in enumerate(lines):
        draw.text((2, photo.height + 3 + 12 * line_number), line, fill=_TEXT, font=font)
    return tile


def _grid(tiles: list[Image.Image], columns: int, gap: int = 8) -> Image.Image:
    width = max(tile.width for tile in tiles)
    height = max(tile.height for tile in tiles)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (width + gap) - gap, rows * (height + gap) - gap), _BACKGROUND)
    for number, tile in enumerate(tiles):
        sheet.paste(tile, ((number % columns) * (width + gap), (number // columns) * (height + gap)))
    return sheet


def _first_single(config: WorldConfig, name: str, start: int = 0) -> WorldSample:
    """The first val image (from ``start``) whose only thing is one instance of ``name`` on its typical stuff."""
    for index in range(start, start + 20000):
        sample = render(config, "val", index)
        if len(sample.instances) == 1 and sample.instances[0].name == name and sample.instances[0].typical:
            return sample
    raise RuntimeError(f"no single {name} found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/world"))
    parser.add_argument("--scale", type=int, default=3, help="nearest-neighbour upscaling of the 64 px images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default()
    config = WorldConfig(seed=args.seed)

    def caption_label(sample: WorldSample) -> str:
        noisy = f" [noisy: {sample.caption_kind}]" if sample.noisy else ""
        return f"#{sample.index}: {sample.caption}{noisy}"

    samples = [render(config, "val", index) for index in range(12)]
    examples = [_tile(sample, args.scale, caption_label(sample), font) for sample in samples]
    _grid(examples, columns=3).save(args.out / "examples.png", optimize=True)

    # One mid-sized thing on its typical stuff per class.
    single = WorldConfig(
        seed=args.seed, min_things=1, max_things=1, appearance=AppearanceConfig(p_typical=1.0, thing_area=(0.2, 0.3))
    )
    class_tiles = []
    for name in THING_NAMES:
        sample = _first_single(single, name)
        thing = next(c for c in CLASSES if c.name == name)
        class_tiles.append(_tile(sample, args.scale, f"{name} ({thing.id}), typical: {thing.typical_stuff}", font))
    _grid(class_tiles, columns=4).save(args.out / "classes.png", optimize=True)

    shift_tiles = []
    for index in range(6):
        shift_tiles.append(_tile(render(config, "test", index), args.scale, f"test #{index}", font))
        shift_tiles.append(_tile(render(config, "shift", index), args.scale, f"shift #{index}", font))
    _grid(shift_tiles, columns=4).save(args.out / "shift.png", optimize=True)
    print(f"wrote examples.png, classes.png, shift.png under {args.out}")


if __name__ == "__main__":
    main()
