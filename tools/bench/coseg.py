"""Time and peak memory of ReCo's seed search: block-wise ``seed_pixels`` vs the full adjacency vs one matmul.

Default workload: a K=50 archive of 20x20 feature grids with D=384 channels (random, seeded; DeiT-S width), so
N = K*h*w = 20,000 archive pixels. Three computations:

(a) ``seg_coseg.seeds.seed_pixels``: block by block, no N x N matrix;
(b) ``seg_coseg.seeds.naive_seed_pixels``: the whole N x N adjacency (what the official code does; 1.6 GB here);
(c) one plain matmul ``[N, D] @ [D, N]``: the same 2*N^2*D FLOPs with nothing else, the physical limit (it too
    materialises the N x N output).

Time: a warm-up run of each, then ``--repeats`` rounds that run (a), (b), (c) in turn, so load from other processes
hits all three alike; the table gives the median and the minimum of each.
Peak memory: one fresh subprocess per computation (``--worker``), started before this process allocates anything
large. It builds the inputs and runs a tiny warm-up of the same computation (so lazily loaded kernels and thread
pools are in place), then resets the kernel's resident-set high-water mark (``5`` into ``/proc/self/clear_refs``),
reads its resident set (``VmRSS`` in ``/proc/self/status``) as the baseline, runs the computation once and reads
the high-water mark (``VmHWM``): the difference is the extra peak memory of the computation itself. Plain
``resource.getrusage(...).ru_maxrss`` cannot be reset and is inherited from the parent across fork+exec (a child
of a process that once held 2 GB reports at least 2 GB), so it is only the fallback where ``/proc`` is missing.
torch keeps no allocator statistics for the CPU; with ``--device cuda`` ``torch.cuda.max_memory_allocated`` is used.
Targets: (a) within 1.3x the time of (c), and at least 10x less extra peak memory than (b).

    hatch run python tools/bench/coseg.py [--weights] [--block-sizes 1 2 4] [--out coseg.json]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seg_coseg.seeds import default_block_size, naive_seed_pixels, seed_pixels

METHODS = ("blockwise", "naive", "matmul")


def _inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(args.seed)
    features = torch.randn(args.images, args.dim, args.grid, args.grid, generator=generator)
    weights = torch.rand(args.images, args.grid, args.grid, generator=generator) if args.weights else None
    device = torch.device(args.device)
    return features.to(device), None if weights is None else weights.to(device)


def _runner(method: str, features: torch.Tensor, weights: torch.Tensor | None, block: int | None) -> Callable[[], Any]:
    if method == "blockwise":
        return lambda: seed_pixels(features, weights, block_size=block)
    if method == "naive":
        return lambda: naive_seed_pixels(features, weights)
    # The matmul runs on already-normalised rows (normalisation is O(N*D), negligible next to O(N^2*D)).
    rows = torch.nn.functional.normalize(features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1]), dim=1)
    return lambda: rows @ rows.T


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _resident_bytes(*, reset_peak: bool) -> int:
    """Current resident set (after resetting the high-water mark if asked), or the ru_maxrss fallback."""
    if reset_peak:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")  # reset VmHWM to the current VmRSS (Linux >= 4.0)
        except OSError:
            pass
    current = _status_kib("VmRSS")
    if current is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return current * 1024


def _peak_resident_bytes() -> int:
    peak = _status_kib("VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak * 1024


def _worker(args: argparse.Namespace) -> None:
    """Peak extra memory of one computation in this fresh process; prints one JSON line."""
    features, weights = _inputs(args)
    small = argparse.Namespace(**{**vars(args), "images": 3, "grid": 4})
    tiny_features, tiny_weights = _inputs(small)
    _runner(args.worker, tiny_features, tiny_weights, args.block)()
    run = _runner(args.worker, features, weights, args.block)
    if args.device.startswith("cuda"):
        _synchronize(args.device)
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        result = run()
        _synchronize(args.device)
        extra_bytes = torch.cuda.max_memory_allocated() - baseline
    else:
        gc.collect()
        baseline = _resident_bytes(reset_peak=True)
        result = run()
        extra_bytes = _peak_resident_bytes() - baseline
    del result
    print(json.dumps({"method": args.worker, "extra_peak_bytes": extra_bytes}))


def _measure_memory(args: argparse.Namespace, method: str, block: int | None) -> int:
    command = [sys.executable, __file__, "--worker", method, *_shared_flags(args)]
    if block is not None:
        command += ["--block", str(block)]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(json.loads(completed.stdout.strip().splitlines()[-1])["extra_peak_bytes"])


def _shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--images", str(args.images), "--grid", str(args.grid), "--dim", str(args.dim), "--seed", str(args.seed)]
    flags += ["--device", args.device]
    if args.weights:
        flags.append("--weights")
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    return flags


def _timed(run: Callable[[], Any], device: str) -> float:
    start = time.perf_counter()
    run()
    _synchronize(device)
    return time.perf_counter() - start


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_1m_before": os.getloadavg()[0],
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    else:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
                names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
            info["cpu"] = names[0] if names else platform.processor()
        except OSError:
            info["cpu"] = platform.processor()
        blas = [line.strip() for line in torch.__config__.parallel_info().splitlines() if "Math Kernel" in line]
        info["blas"] = blas[0] if blas else "see torch.__config__.show()"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="K, archive images")
    parser.add_argument("--grid", type=int, default=20, help="h = w, tokens per side")
    parser.add_argument("--dim", type=int, default=384, help="D, feature channels")
    parser.add_argument("--weights", action="store_true", help="gate with random column weights in [0, 1)")
    parser.add_argument(
        "--block-sizes", type=int, nargs="*", default=None, help="images per block for (a); default: the library's"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        _worker(args)
        return

    pixels = args.grid * args.grid
    total = args.images * pixels
    blocks: list[int] = args.block_sizes or [default_block_size(pixels)]
    machine = _machine(args)
    # Memory first, in subprocesses started while this process is still small.
    memory = {f"blockwise/{block}": _measure_memory(args, "blockwise", block) for block in blocks}
    memory["naive"] = _measure_memory(args, "naive", None)
    memory["matmul"] = _measure_memory(args, "matmul", None)
    features, weights = _inputs(args)

    # Correctness first: the block-wise seeds must equal the full-matrix ones.
    reference = naive_seed_pixels(features, weights)
    for block in blocks:
        got = seed_pixels(features, weights, block_size=block)
        if not torch.equal(got.indices, reference.indices):
            raise SystemExit(f"block size {block}: seed indices differ from naive_seed_pixels")
        deviation = float((got.support - reference.support).abs().max())
        if deviation > 1e-5:
            raise SystemExit(f"block size {block}: support differs from naive_seed_pixels by {deviation:.3g}")
    del reference

    runs: dict[str, Callable[[], Any]] = {
        f"blockwise/{block}": _runner("blockwise", features, weights, block) for block in blocks
    }
    runs["naive"] = _runner("naive", features, weights, None)
    runs["matmul"] = _runner("matmul", features, weights, None)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.warmup):
        for run in runs.values():
            _timed(run, args.device)
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(_timed(run, args.device))

    matmul_median = statistics.median(times["matmul"])
    matmul_min = min(times["matmul"])
    rows: list[dict[str, Any]] = []
    for name in runs:
        median, best = statistics.median(times[name]), min(times[name])
        rows.append(
            {
                "computation": name,
                "block_columns": int(name.split("/")[1]) * pixels if name.startswith("blockwise") else total,
                "median_s": median,
                "min_s": best,
                "time_vs_matmul_median": median / matmul_median,
                "time_vs_matmul_min": best / matmul_min,
                "extra_peak_bytes": memory[name],
                "naive_memory_over_this": memory["naive"] / max(memory[name], 1),
                "times_s": times[name],
            }
        )

    flops = 2 * total * total * args.dim
    print(
        f"K={args.images}, {args.grid}x{args.grid} tokens, D={args.dim}, N={total}, weights={args.weights}; "
        f"{machine.get('cpu', machine.get('gpu'))}, {machine['torch_threads']} torch threads, "
        f"torch {torch.__version__}; "
        f"median (min) of {args.repeats} runs after {args.warmup} warm-up; matmul {flops / 1e9:.0f} GFLOP at "
        f"{flops / matmul_min / 1e9:.0f} GFLOP/s (best run)\n"
    )
    print(
        "| computation | block columns | time ms, median (min) | time / matmul, median (min) | extra peak MB "
        "| naive / this memory |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['computation']} | {row['block_columns']} | {row['median_s'] * 1e3:.0f} ({row['min_s'] * 1e3:.0f}) "
            f"| {row['time_vs_matmul_median']:.3f} ({row['time_vs_matmul_min']:.3f}) "
            f"| {row['extra_peak_bytes'] / 2**20:.0f} | {row['naive_memory_over_this']:.1f}x |"
        )
    if args.out is not None:
        payload = {
            "workload": {
                "images": args.images,
                "grid": args.grid,
                "dim": args.dim,
                "pixels": total,
                "weights": args.weights,
                "seed": args.seed,
                "flops": flops,
            },
            "method": {
                "time": f"median and min of {args.repeats} rounds after {args.warmup} warm-up, round-robin",
                "memory": "VmHWM after minus VmRSS before (high-water mark reset via /proc/self/clear_refs), one fresh "
                "subprocess per computation"
                if not args.device.startswith("cuda")
                else "torch.cuda.max_memory_allocated minus memory_allocated before the run",
            },
            "machine": machine,
            "results": rows,
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
