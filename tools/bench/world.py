"""Generation speed of the synthetic world on one CPU core, in images per second.

Prints markdown table rows (the header first) for docs/benchmarks.md:

    hatch run python tools/bench/world.py
    hatch run python tools/bench/world.py --sizes 64 96 128 --images 2000 --write-images 500

Rows:

* ``render``: ``render(config, "pairs", i)`` in memory (image, label maps, instances, caption), the path a
  training loop or ``RenderedWorldDataset`` takes. The per-world caches (noise bank, stuff fields, sprites) are
  built before timing; the best of ``--repeats`` runs is kept.
* ``write coco`` / ``write voc``: ``generate_split`` into a temporary directory (PNG/JPEG encoding, RLE, JSON and
  the file system included), one worker.

Reference: the design study's throwaway generator (study 2) rendered 1275 img/s at 64 px and 518 img/s at 96 px.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from seg_eval.world import WorldConfig, generate_split, render


def _render_rate(config: WorldConfig, images: int, repeats: int) -> float:
    for index in range(20):  # builds the caches
        render(config, "pairs", index)
    best = float("inf")
    for repeat in range(repeats):
        start = time.perf_counter()
        for index in range(images):
            render(config, "pairs", repeat * images + index)
        best = min(best, time.perf_counter() - start)
    return images / best


def _write_rate(config: WorldConfig, fmt: str, images: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        generate_split(Path(root) / "warm", "val", 8, config=config, fmt=fmt)  # type: ignore[arg-type]
        start = time.perf_counter()
        generate_split(Path(root) / "timed", "val", images, config=config, fmt=fmt)  # type: ignore[arg-type]
        return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="image sides (pixels)")
    parser.add_argument("--images", type=int, default=2000, help="images per timed render run at 64 px")
    parser.add_argument("--repeats", type=int, default=3, help="timed render runs per size (best is kept)")
    parser.add_argument("--write-images", type=int, default=500, help="images per write run (0: skip writing)")
    args = parser.parse_args()

    cpu = platform.processor() or platform.machine()
    print(f"<!-- CPU: {cpu}; one process, one core; numpy {np.__version__}; python {platform.python_version()} -->")
    print("| task | size | images | img/s (1 core) | ms / image |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes:
        config = WorldConfig(size=size)
        images = max(100, args.images * 64 * 64 // (size * size))
        rate = _render_rate(config, images, args.repeats)
        print(f"| render | {size} | {images} | {rate:,.0f} | {1000 / rate:.2f} |")
    if args.write_images:
        config = WorldConfig()
        for fmt in ("coco", "voc"):
            rate = _write_rate(config, fmt, args.write_images)
            print(f"| write {fmt} | {config.size} | {args.write_images} | {rate:,.0f} | {1000 / rate:.2f} |")


if __name__ == "__main__":
    main()
