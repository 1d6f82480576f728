"""Time dense MaskCLIP inference against plain ``encode_image`` for an open_clip CLIP (default ViT-B/16 at 448).

Both paths run the same tower at the same input size with the positional embedding interpolated to the
448/16 = 28x28 grid: ``vit_global_features`` is open_clip's ``encode_image`` computation with that interpolation,
``dense_clip_features`` is the MaskCLIP value path. Random weights (timing does not depend on them), CPU by
default. After a few warm-up runs the two paths are timed in alternating single runs, so load from other
processes hits both alike; the row reports the minimum (least disturbed) and the median of each and their ratios.
The target is a dense / encode_image ratio of at most 1.1.

    hatch run python tools/bench/dense_inference.py --header [--model ViT-B-16] [--size 448] [--repeats 15]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import open_clip
import torch

from seg_models.dense_clip import DENSE_VARIANTS, dense_clip_features, global_clip_features


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--size", type=int, default=448, help="square input side in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variant", default="maskclip", choices=DENSE_VARIANTS)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--header", action="store_true", help="print the table header too")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(args.model, pretrained=None, device=args.device)
    model.eval()
    visual = model.visual
    images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)

    def synchronize() -> None:
        if images.device.type == "cuda":
            torch.cuda.synchronize()

    def run_global() -> None:
        global_clip_features(visual, images)
        synchronize()

    def run_dense() -> None:
        dense_clip_features(visual, images, variant=args.variant)
        synchronize()

    with torch.inference_mode():
        dense_shape = tuple(dense_clip_features(visual, images, variant=args.variant).shape)
        for _ in range(args.warmup):
            run_global()
            run_dense()
        global_times, dense_times = [], []
        for _ in range(args.repeats):
            global_times.append(_timed(run_global))
            dense_times.append(_timed(run_dense))
    global_min, dense_min = min(global_times), min(dense_times)
    global_median, dense_median = statistics.median(global_times), statistics.median(dense_times)
    if images.device.type == "cuda":
        device = torch.cuda.get_device_name()
    else:
        device = f"{platform.machine()} cpu, {torch.get_num_threads()} threads"
    if args.header:
        print(
            f"| model | input -> dense grid | batch | device | encode_image ms (min / median) "
            f"| dense {args.variant} ms (min / median) | ratio of minima | ratio of medians |"
        )
        print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {args.size}x{args.size} -> {dense_shape[-2]}x{dense_shape[-1]}x{dense_shape[1]} "
        f"| {args.batch} | {device} | {global_min * 1e3:.1f} / {global_median * 1e3:.1f} "
        f"| {dense_min * 1e3:.1f} / {dense_median * 1e3:.1f} | {dense_min / global_min:.3f} "
        f"| {dense_median / global_median:.3f} |"
    )


if __name__ == "__main__":
    main()
