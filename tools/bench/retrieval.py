"""Time exact and approximate top-k retrieval over 1M x 512 unit vectors against the pure matmul bound.

ReCo's archive is the top-k (k = 50) images of a collection for each concept's text embedding; at ImageNet or web
scale that is a maximum-inner-product search over a million or more CLIP embeddings. This script measures, with the
same thread count for torch and faiss:

* the matmul bound: ``queries @ base.T`` blocked over the base (1000 x 1M fp32 scores would be 4 GB), no top-k, in
  torch and in numpy: torch's BLAS is MKL, whose sgemm runs markedly slower on AMD CPUs than the OpenBLAS numpy and
  faiss use, so the faster of the two is the bound an exact search is compared with;
* ``seg_retrieval`` flat (exact) search and its ratio to the bound (target: at most 1.5x), with faiss's BLAS block
  size varied, since that block decides how large each GEMM is. These runs alternate (best and median of
  ``--repeats``), so load from other processes on a shared machine hits them alike;
* IVF-Flat over a sweep of ``nprobe`` with recall@k against the exact result, its build time and speed-up; IVF-PQ;
  optionally HNSW on a subset (its build is too slow on 2 cores for the full million).

The data are a Gaussian mixture by default, not plain Gaussian vectors: in 512-D, independent Gaussian directions
are all nearly orthogonal (cosines 0 ± 0.044) and the true top-50 of a query are barely closer than the rest, so an
IVF index needs to visit most lists; real CLIP embeddings are clustered (classes, scenes, near-duplicates) and
queries fall near clusters. ``x = normalize(c + spread · g / √D)`` with ``c`` one of ``--clusters`` random unit
centres and ``g`` standard normal; queries are drawn the same way. ``--data gaussian`` gives the unstructured
worst case. Flat search time does not depend on the data; IVF recall does, so re-measure recall on your own store.

    python tools/bench/retrieval.py --out retrieval.json [--n 1000000] [--dim 512] [--queries 1000] [--k 50]
        [--data mixture|gaussian] [--threads T] [--nlist 1024] [--nprobes 1,2,4,...] [--hnsw 100000]

Memory: the base (N·D·4 bytes, 2 GB at the defaults) plus one index copy at a time (another 2 GB for flat and
IVF-Flat); about 4.5 GB peak at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import torch

from seg_retrieval.index import EmbeddingIndex, IndexConfig, build_index

_BLOCK = 65_536


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Base ``[n, dim]`` and queries ``[queries, dim]``, float32, L2-normalised (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def fill(out: np.ndarray) -> None:
        for start in range(0, out.shape[0], _BLOCK):
            block = out[start : start + _BLOCK]
            rng.standard_normal(block.shape, dtype=np.float32, out=block)
            if args.data == "mixture":
                block *= np.float32(args.spread / np.sqrt(args.dim))
                block += centres[rng.integers(0, args.clusters, size=block.shape[0])]
            block /= np.linalg.norm(block, axis=1, keepdims=True)

    base = np.empty((args.n, args.dim), dtype=np.float32)
    fill(base)
    queries = np.empty((args.queries, args.dim), dtype=np.float32)
    fill(queries)
    return base, queries


def interleaved(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """(minimum, median) wall seconds of each run, the runs alternating so that load from other processes on a
    shared machine hits all of them alike (they are compared with each other)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, float]:
    """(minimum, median) wall seconds of ``repeats`` runs of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def matmul_bound(base: torch.Tensor, queries: torch.Tensor, *, topk: int | None) -> None:
    """``queries @ base.T`` block by block into one reused buffer; with ``topk``, keep a running top-k too."""
    buffer = torch.empty(queries.shape[0], _BLOCK * 2)
    best: torch.Tensor | None = None
    for start in range(0, base.shape[0], _BLOCK * 2):
        block = base[start : start + _BLOCK * 2]
        out = buffer[:, : block.shape[0]]
        torch.mm(queries, block.T, out=out)
        if topk is not None:
            scores = out.topk(topk, dim=1).values
            best = scores if best is None else torch.cat([best, scores], dim=1).topk(topk, dim=1).values


def numpy_matmul(base: np.ndarray, queries: np.ndarray) -> None:
    """The same blocked product with numpy's BLAS (OpenBLAS in the numpy wheels): a second, BLAS-independent bound."""
    buffers: dict[int, np.ndarray] = {}
    for start in range(0, base.shape[0], _BLOCK * 2):
        block = base[start : start + _BLOCK * 2]
        out = buffers.setdefault(block.shape[0], np.empty((queries.shape[0], block.shape[0]), dtype=np.float32))
        np.matmul(queries, block.T, out=out)


def recall_at_k(found: Sequence[Sequence[str]], exact: np.ndarray) -> float:
    hits = sum(len({int(i) for i in row} & set(truth.tolist())) for row, truth in zip(found, exact, strict=True))
    return hits / exact.size


def index_bytes(index: EmbeddingIndex) -> int:
    return int(faiss.serialize_index(index.faiss_index).size)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--data", choices=("mixture", "gaussian"), default="mixture")
    parser.add_argument("--clusters", type=int, default=10_000, help="mixture components (about 100 vectors each)")
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm relative to the unit centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and faiss threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobes", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--blas-bs", default="1024,4096,16384,65536", help="faiss BLAS database block sizes to try")
    parser.add_argument("--no-pq", action="store_true", help="skip the IVF-PQ row")
    parser.add_argument("--pq-m", type=int, default=64)
    parser.add_argument("--hnsw", type=int, default=0, help="HNSW rows on the first N vectors (0: skip)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    k = args.k
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "faiss_compile": faiss.get_compile_options().strip(),
        "torch_blas": "mkl" if "BLAS_INFO=mkl" in torch.__config__.show() else "other",
    }
    try:
        with open("/proc/cpuinfo") as handle:
            machine["cpu"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    started = time.perf_counter()
    base, queries = make_data(args)
    print(f"data: {args.data} {args.n} x {args.dim} in {time.perf_counter() - started:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []

    def add(method: str, params: str, search: tuple[float, float], **extra: Any) -> None:
        row = {"method": method, "params": params, "search_s": search[0], "search_median_s": search[1], **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    base_t, queries_t = torch.from_numpy(base), torch.from_numpy(queries)
    started = time.perf_counter()
    flat = build_index(base, IndexConfig(kind="flat", device="cpu"))
    flat_build = time.perf_counter() - started
    exact_scores, exact_rows = flat.faiss_index.search(queries, k)
    default_bs = faiss.cvar.distance_compute_blas_database_bs

    def flat_search(block_size: int) -> Callable[[], object]:
        def run() -> object:
            faiss.cvar.distance_compute_blas_database_bs = block_size
            return flat.search(queries, k)

        return run

    runs: dict[str, Callable[[], object]] = {
        "torch": lambda: matmul_bound(base_t, queries_t, topk=None),
        "torch+topk": lambda: matmul_bound(base_t, queries_t, topk=k),
        "numpy": lambda: numpy_matmul(base, queries),
    }
    block_sizes = [int(value) for value in args.blas_bs.split(",")]
    runs.update({f"flat{size}": flat_search(size) for size in block_sizes})
    for run in runs.values():  # warm-up (page faults, thread pools, BLAS buffers)
        run()
    timings = interleaved(args.repeats, runs)
    faiss.cvar.distance_compute_blas_database_bs = default_bs
    bound = min(timings["torch"][0], timings["numpy"][0])
    add(
        "torch matmul (bound, as asked)", f"torch {machine['torch_blas']}, blocks of 131072, no top-k", timings["torch"]
    )
    add("torch matmul + top-k", "blocks of 131072, running top-k", timings["torch+topk"])
    add("numpy matmul (bound)", "numpy's OpenBLAS, blocks of 131072, no top-k", timings["numpy"])
    for size in block_sizes:
        add(
            "seg_retrieval flat (exact)",
            f"faiss BLAS database block {size}" + (" (default)" if size == default_bs else ""),
            timings[f"flat{size}"],
            build_s=flat_build,
            ratio_to_bound=timings[f"flat{size}"][0] / bound,
            recall=1.0,
            index_mb=args.n * args.dim * 4 / 2**20,
        )
    flat_best = min(row["search_s"] for row in rows if row["method"].startswith("seg_retrieval flat"))
    # Sanity: faiss's exact result agrees with torch on a few queries.
    check = (queries_t[:8] @ base_t.T).topk(k, dim=1)
    assert np.allclose(check.values.numpy(), exact_scores[:8], atol=1e-4), "faiss flat disagrees with torch"
    flat.faiss_index.reset()  # frees its 2 GB before the next index is built

    def approximate(method: str, index: EmbeddingIndex, build: float, sweep: str, values: list[int]) -> None:
        size = index_bytes(index) / 2**20
        for value in values:
            index.set_search_params(**{sweep: value})
            index.search(queries[:100], k)
            timing = best_of(args.repeats, lambda: index.search(queries, k))
            found = index.search(queries, k)[1]
            add(
                method,
                f"{index.config.kind} nlist={index.config.nlist} {sweep}={value}"
                if index.config.is_ivf
                else f"M={index.config.hnsw_m} efConstruction={index.config.ef_construction} {sweep}={value}",
                timing,
                build_s=build,
                speedup_vs_flat=flat_best / timing[0],
                recall=recall_at_k(found, exact_rows),
                index_mb=size,
            )

    nprobes = [int(value) for value in args.nprobes.split(",") if int(value) <= args.nlist]
    started = time.perf_counter()
    ivf = build_index(base, IndexConfig(kind="ivf_flat", nlist=args.nlist, nprobe=1, device="cpu"))
    approximate("seg_retrieval IVF-Flat", ivf, time.perf_counter() - started, "nprobe", nprobes)
    del ivf
    if not args.no_pq:
        started = time.perf_counter()
        config = IndexConfig(kind="ivf_pq", nlist=args.nlist, nprobe=1, pq_m=args.pq_m, device="cpu")
        pq = build_index(base, config)
        approximate("seg_retrieval IVF-PQ", pq, time.perf_counter() - started, "nprobe", nprobes)
        del pq
    if args.hnsw:
        subset = base[: args.hnsw]
        sub_exact = faiss.IndexFlatIP(args.dim)
        sub_exact.add(subset)
        _, exact_rows = sub_exact.search(queries, k)
        sub_flat_best = best_of(args.repeats, lambda: sub_exact.search(queries, k))[0]
        del sub_exact
        flat_best = sub_flat_best  # the closure `approximate` reads these two names: HNSW is compared on the subset
        started = time.perf_counter()
        hnsw = build_index(subset, IndexConfig(kind="hnsw", hnsw_m=32, ef_construction=100, device="cpu"))
        approximate(f"seg_retrieval HNSW ({args.hnsw} vectors)", hnsw, time.perf_counter() - started, "ef_search",
                    [64, 128, 256])  # fmt: skip

    print_table(args, machine, rows)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"machine": machine, "args": vars(args), "rows": rows}, handle, indent=2)
        print(f"wrote {args.out}")


def print_table(args: argparse.Namespace, machine: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{args.n:,} x {args.dim} {args.data} vectors"
        + (f" ({args.clusters} clusters, spread {args.spread})" if args.data == "mixture" else "")
        + f", {args.queries} queries, top-{args.k}; {machine['cpu']}, {machine['cores']} cores, "
        f"{args.threads} threads; torch {machine['torch']} ({machine['torch_blas']}), faiss {machine['faiss']}; "
        f"best of {args.repeats}."
    )
    print()
    print("| method | parameters | build s | search s (best / median) | ms / query | vs best bound | "
          f"speed-up vs flat | recall@{args.k} | index MB |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        build = f"{row['build_s']:.1f}" if "build_s" in row else ""
        ratio = f"{row['ratio_to_bound']:.2f}x" if "ratio_to_bound" in row else ""
        speedup = f"{row['speedup_vs_flat']:.1f}x" if "speedup_vs_flat" in row else ""
        recall = f"{row['recall']:.3f}" if "recall" in row else ""
        size = f"{row['index_mb']:.0f}" if "index_mb" in row else ""
        print(
            f"| {row['method']} | {row['params']} | {build} | {row['search_s']:.2f} / {row['search_median_s']:.2f} | "
            f"{1000 * row['search_s'] / args.queries:.2f} | {ratio} | {speedup} | {recall} | {size} |"
        )


if __name__ == "__main__":
    main()
