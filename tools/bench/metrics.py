"""Throughput of ``ConfusionMatrix.update`` on the CPU, in megapixels per second.

Prints markdown table rows (the header first) for docs/benchmarks.md:

    hatch run python tools/bench/metrics.py
    hatch run python tools/bench/metrics.py --size 512 --batch 8 --classes 21 171 --threads 1

Each row times ``update(pred, target)`` on a batch of random label maps with 10 % of the ground truth set to the
ignore index 255 (the common case; it exercises the range checks), taking the best of several repeats. Input
dtypes are those of real loaders: uint8 targets (PNG labels) and int64 predictions (``argmax``).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from seg_eval.metrics import ConfusionMatrix


def _best_seconds(step: Callable[[], object], *, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def _inputs(num_classes: int, batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    target = generator.integers(0, num_classes, size=(batch, size, size)).astype(
        np.uint8 if num_classes < 255 else np.int64
    )
    target[generator.random(target.shape) < 0.1] = 255
    pred = generator.integers(0, num_classes, size=(batch, size, size)).astype(np.int64)
    return pred, target


def _masked_numpy(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """The textbook version (boolean-mask the ignored pixels, then bincount), for reference."""
    valid = target != 255
    return np.bincount(target[valid].astype(np.int64) * num_classes + pred[valid], minlength=num_classes**2)


def _masked_torch(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = target != 255
    return torch.bincount(target[valid].long() * num_classes + pred[valid], minlength=num_classes**2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="label map side (pixels)")
    parser.add_argument("--batch", type=int, default=8, help="maps per update call")
    parser.add_argument("--classes", type=int, nargs="+", default=[21, 171], help="numbers of classes")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip the textbook masked-bincount rows"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    megapixels = args.batch * args.size * args.size / 1e6
    cpu = platform.processor() or platform.machine()
    versions = f"torch {torch.__version__}, numpy {np.__version__}"
    print(f"<!-- CPU: {cpu}; torch threads: {torch.get_num_threads()}; {versions} -->")
    print("| input | classes | batch × size | ms / update | Mpx/s |")
    print("|---|---:|---|---:|---:|")
    for num_classes in args.classes:
        pred, target = _inputs(num_classes, args.batch, args.size)
        pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
        cases: list[tuple[str, Callable[[], object]]] = [
            ("numpy", partial(ConfusionMatrix(num_classes).update, pred, target)),
            ("torch (CPU)", partial(ConfusionMatrix(num_classes).update, pred_t, target_t)),
        ]
        if args.reference:
            cases += [
                ("reference: numpy masked bincount, no checks", partial(_masked_numpy, pred, target, num_classes)),
                ("reference: torch masked bincount, no checks", partial(_masked_torch, pred_t, target_t, num_classes)),
            ]
        for name, step in cases:
            seconds = _best_seconds(step, repeats=args.repeats)
            print(
                f"| {name} | {num_classes} | {args.batch} × {args.size}² | {seconds * 1e3:.1f} | "
                f"{megapixels / seconds:.0f} |"
            )


if __name__ == "__main__":
    main()
