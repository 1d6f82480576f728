"""How retrieval and training grow with collection size and process count: the measurements behind docs/scaling.md.

    python tools/bench/scaling.py index [--sizes 10000 100000 1000000] [--dim 512] [--work runs/bench/scaling]
    python tools/bench/scaling.py rerank [--size 100000] [--reranks 200 500]    # after `index --kinds flat ivf_pq`
    python tools/bench/scaling.py index-procs [--size 1000000]
    python tools/bench/scaling.py coarse [--nlists 4096 65536] [--ef-search 16 64 128]
    python tools/bench/scaling.py curate [--concepts 10000] [--batch-size 1000] [--size 1000000]
    python tools/bench/scaling.py embed [--images 1536] [--procs 1 2]
    python tools/bench/scaling.py train [--steps 40] [--procs 1 2] [--batch 64]
    python tools/bench/scaling.py report            # markdown tables of everything measured so far

Every measurement runs in a fresh child process so that its memory is its own. Memory is reported two ways: the
peak of the process's *anonymous* resident memory (``RssAnon`` of ``/proc/self/status``, sampled every 20 ms: what
has to fit in RAM; memory-mapped store and index files are page cache the kernel can drop) and the peak total
resident set (``VmHWM``, which counts the mapped file pages that were touched). Both are deltas over the child's
resident memory after its imports.

``index``: for each size ``N``, ``N`` unit vectors of the clustered mixture of tools/bench/retrieval.py (CLIP-like
clusters; 1,000 queries drawn the same way) are written in clip-retrieval's layout (the LAION release format),
imported into a seg store (float16 shards, memory-mapped), and indexed from the store as ``flat``, ``ivf_flat``,
``ivf_pq`` (``pq_m = 64``) and ``ivf_pq`` with on-disk lists, ``nlist = min(4·√N, 1024)``, ``nprobe = 32``: build time,
memory, index bytes against :func:`seg_retrieval.index.estimate_index_bytes`, search time for 1,000 queries at
``k = 50`` and recall@50 against the exact search.

``rerank``: the IVF-PQ index of ``index`` at ``--size`` searched without and with exact re-ranking
(``IndexConfig.rerank``: ``max(50, rerank)`` candidates per query re-scored from the float16 store), and the flat
index for reference: search time of the 1,000 queries (best and median of ``--repeats`` after a warm-up search, so
the store rows read are in the page cache) and recall@50 against the exact search.

``index-procs``: the on-disk IVF-PQ build of ``--size`` vectors as 1 process x 1 thread, 1 x 2 and 2 x 1
(``torchrun``: rank 0 trains and merges, the ranks split the part adds).

``coarse``: the per-vector cost of finding its list among ``nlist`` centroids, exhaustively (the flat coarse
quantiser) or through an HNSW graph (``coarse_quantizer="hnsw"``), and how often the graph finds the exact list.

``curate``: batched archive curation (:func:`seg_retrieval.curate.curate_archive_batched`) of ``--concepts`` concept
queries over the on-disk IVF-PQ index of ``--size`` vectors, text embeddings stood in by mixture vectors (the text
encoder's cost is measured by ``embed``'s prompt rate), with the time per batch.

``embed``: :func:`seg_retrieval.store.embed_collection` of ``--images`` synthetic-world images with the bundled
synthetic CLIP under ``torchrun --nproc-per-node P`` (gloo, one thread per process), and the text-prompt rate.

``train``: ``--steps`` GroupViT steps of the synthetic-world recipe at a global batch of ``--batch`` pairs under
``torchrun --nproc-per-node P`` (``batch / P`` per process, one thread each), steps and pairs per second.

Results accumulate in ``WORK/scaling.json`` (one key per measurement, so sections can be rerun alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------
# Memory of the current process
# ---------------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


class MemoryProbe:
    """Peak anonymous RSS (sampled) and peak total RSS (``VmHWM``) since :meth:`start`, in bytes over the start."""

    def __init__(self, every: float = 0.02) -> None:
        self.every = every
        self.base_anon = self.base_total = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryProbe:
        self.base_anon = self.peak_anon = _status_kib("RssAnon")
        self.base_total = _status_kib("VmRSS")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))
            self._stop.wait(self.every)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))
        return {
            "peak_anon_bytes": (self.peak_anon - self.base_anon) * 1024,
            "peak_rss_bytes": max(_status_kib("VmHWM") - self.base_total, 0) * 1024,
        }


# ---------------------------------------------------------------------------------------------------------------
# Results file and child processes
# ---------------------------------------------------------------------------------------------------------------


def _results_path(work: Path) -> Path:
    return work / "scaling.json"


def _record(work: Path, key: str, value: dict[str, Any]) -> None:
    path = _results_path(work)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    data["_machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"{key}: {json.dumps(value)}", flush=True)


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``scaling.py ARGS`` in a fresh interpreter; its last stdout line is a JSON result."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=full_env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _threads(count: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(count)
    faiss.omp_set_num_threads(count)


# ---------------------------------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------------------------------


def _mixture(n: int, queries: int, dim: int, seed: int) -> tuple[Any, Any]:
    sys.path.insert(0, str(HERE))
    from retrieval import make_data  # the clustered CLIP-like data of the retrieval benchmark

    clusters = max(10, n // 100)
    data_args = argparse.Namespace(
        n=n, queries=queries, dim=dim, seed=seed, clusters=clusters, spread=1.0, data="mixture"
    )
    return make_data(data_args)


def _nlist(n: int) -> int:
    from seg_retrieval.index import default_nlist

    return min(default_nlist(n), 1024)


def _prepare_store(work: Path, n: int, dim: int) -> dict[str, Any]:
    """Write the clip-retrieval folder and import it into a seg store (once per size); the queries go to a file."""
    import numpy as np

    from seg_retrieval.laion import import_clip_retrieval, write_clip_retrieval_store

    folder = work / f"n{n}"
    store = folder / "store"
    if (store / "manifest.json").is_file() and (folder / "queries.npy").is_file():
        return dict(json.loads((folder / "prepare.json").read_text()))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base, queries = _mixture(n, 1000, dim, seed=0)
    np.save(folder / "queries.npy", queries)
    started = time.perf_counter()
    write_clip_retrieval_store(
        base, [f"img{row:08d}" for row in range(n)], folder / "clip-retrieval", shard_size=100_000, encoder="mixture"
    )
    written = time.perf_counter() - started
    del base
    started = time.perf_counter()
    import_clip_retrieval(folder / "clip-retrieval", store)
    imported = time.perf_counter() - started
    result = {
        "write_clip_retrieval_s": written,
        "import_s": imported,
        "store_bytes": sum(path.stat().st_size for path in store.rglob("*") if path.is_file()),
    }
    (folder / "prepare.json").write_text(json.dumps(result))
    return result


INDEX_KINDS: dict[str, dict[str, Any]] = {
    "flat": {"kind": "flat"},
    "ivf_flat": {"kind": "ivf_flat"},
    "ivf_pq": {"kind": "ivf_pq", "pq_m": 64},
    "ivf_pq_disk": {"kind": "ivf_pq", "pq_m": 64, "on_disk": True},
}


def _build_child(work: Path, n: int, name: str, threads: int) -> dict[str, Any]:
    """In the child: build one index from the store, search the queries, measure."""
    _threads(threads)
    import numpy as np

    from seg_retrieval.index import IndexConfig, build_index, estimate_index_bytes
    from seg_retrieval.store import EmbeddingStore

    folder = work / f"n{n}"
    store = EmbeddingStore.open(folder / "store")
    queries = np.load(folder / "queries.npy")
    settings = INDEX_KINDS[name]
    config = IndexConfig(device="cpu", nprobe=32, **settings)
    if config.is_ivf:
        config = config.model_copy(update={"nlist": _nlist(n)})
    out = folder / f"index-{name}"
    shutil.rmtree(out, ignore_errors=True)
    probe = MemoryProbe().start()
    started = time.perf_counter()
    index = build_index(store, config, directory=out if config.on_disk else None)
    build_s = time.perf_counter() - started
    if not config.on_disk:
        index.save(out)
    started = time.perf_counter()
    _, ids = index.search(queries, 50)
    search_s = time.perf_counter() - started
    memory = probe.stop()
    truth_file = folder / "truth.json"
    if name == "flat":
        truth_file.write_text(json.dumps(ids))
    truth = json.loads(truth_file.read_text())
    recall = sum(len(set(a) & set(b)) for a, b in zip(ids, truth, strict=True)) / (50 * len(truth))
    return {
        "n": n,
        "index": name,
        "nlist": index.config.nlist,
        "build_s": build_s,
        "search_1000_s": search_s,
        "recall_at_50": recall,
        "estimate_bytes": estimate_index_bytes(index.config, n, store.dim),
        "files_bytes": sum(path.stat().st_size for path in out.iterdir() if path.is_file()),
        **memory,
    }


def run_index(args: argparse.Namespace) -> None:
    for n in args.sizes:
        prepared = _prepare_store(args.work, n, args.dim)
        _record(args.work, f"store/n{n}", {"n": n, "dim": args.dim, **prepared})
        for name in args.kinds:
            result = _child(["_build", str(args.work), str(n), name, str(args.threads)])
            _record(args.work, f"index/n{n}/{name}", result)


def _rerank_child(work: Path, n: int, reranks: list[int], repeats: int, threads: int) -> dict[str, Any]:
    """In the child: load the IVF-PQ index of ``index``, search the queries at each ``rerank`` (0: none), measure."""
    _threads(threads)
    import numpy as np

    from seg_retrieval.index import EmbeddingIndex

    folder = work / f"n{n}"
    queries = np.load(folder / "queries.npy")
    truth = json.loads((folder / "truth.json").read_text())
    rows: list[dict[str, Any]] = []

    def measure(index: EmbeddingIndex, rerank: int | str) -> None:
        index.search(queries, 50)  # warm-up: page faults of the store rows read, thread pools
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            _, ids = index.search(queries, 50)
            times.append(time.perf_counter() - started)
        hits = sum(len(set(found) & set(exact)) for found, exact in zip(ids, truth, strict=True))
        rows.append(
            {
                "n": n,
                "index": index.config.kind,
                "nprobe": index.config.nprobe if index.config.is_ivf else "",
                "rerank": rerank,
                "threads": threads,
                "search_1000_s": min(times),
                "search_1000_median_s": sorted(times)[len(times) // 2],
                "recall_at_50": hits / (50 * len(truth)),
            }
        )

    if (folder / "index-flat" / "index.json").is_file():  # the exact search, timed the same way, for reference
        flat = EmbeddingIndex.load(folder / "index-flat")
        measure(flat, "exact")
        del flat
    index = EmbeddingIndex.load(folder / "index-ivf_pq")
    for rerank in reranks:
        index.set_search_params(rerank=rerank)
        measure(index, rerank)
    return {"rows": rows}


def run_rerank(args: argparse.Namespace) -> None:
    folder = args.work / f"n{args.size}"
    for needed in (folder / "index-ivf_pq" / "index.json", folder / "truth.json"):
        if not needed.is_file():
            raise SystemExit(f"run `index --sizes {args.size} --kinds flat ivf_pq` first: {needed} is missing")
    reranks = sorted({0, *args.reranks})
    result = _child(
        ["_rerank", str(args.work), str(args.size), ",".join(map(str, reranks)), str(args.repeats), str(args.threads)]
    )
    for row in result["rows"]:
        name = "flat" if row["rerank"] == "exact" else f"ivf_pq/r{row['rerank']:05d}"
        _record(args.work, f"rerank/n{args.size}/{name}", row)


# ---------------------------------------------------------------------------------------------------------------
# curate
# ---------------------------------------------------------------------------------------------------------------


def _curate_child(work: Path, n: int, concepts: int, batch_size: int, threads: int) -> dict[str, Any]:
    _threads(threads)
    import torch

    from seg_retrieval.curate import curate_archive_batched
    from seg_retrieval.index import EmbeddingIndex

    folder = work / f"n{n}"
    index = EmbeddingIndex.load(folder / "index-ivf_pq_disk")
    _, vectors = _mixture(10, concepts, index.dim, seed=1)
    table = torch.from_numpy(vectors)
    names = [f"concept{row:05d}" for row in range(concepts)]
    row_of = {name: row for row, name in enumerate(names)}
    batch_times: list[float] = []
    last = [time.perf_counter()]

    def embed_text(batch: Any) -> Any:
        return table[[row_of[name] for name in batch]]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        batch_times.append(now - last[0])
        last[0] = now

    parts = folder / "curate-parts"
    shutil.rmtree(parts, ignore_errors=True)
    probe = MemoryProbe().start()
    started = time.perf_counter()
    archive = curate_archive_batched(
        index,
        names,
        embed_text,
        50,
        encoder="mixture",
        store=str(folder / "store"),
        templates="imagenet85",
        batch_size=batch_size,
        parts_dir=parts,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    memory = probe.stop()
    return {
        "n": n,
        "concepts": len(archive.concepts),
        "batch_size": batch_size,
        "seconds": seconds,
        "concepts_per_s": concepts / seconds,
        "median_batch_s": sorted(batch_times)[len(batch_times) // 2] if batch_times else None,
        "parts_bytes": sum(path.stat().st_size for path in parts.rglob("*") if path.is_file()),
        **memory,
    }


def run_curate(args: argparse.Namespace) -> None:
    folder = args.work / f"n{args.size}"
    if not (folder / "index-ivf_pq_disk" / "index.json").is_file():
        raise SystemExit(f"run `index --sizes {args.size}` first: {folder / 'index-ivf_pq_disk'} is missing")
    result = _child(["_curate", str(args.work), str(args.size), str(args.concepts), str(args.batch_size), "2"])
    _record(args.work, f"curate/n{args.size}/c{args.concepts}", result)


# ---------------------------------------------------------------------------------------------------------------
# embed and train under torchrun
# ---------------------------------------------------------------------------------------------------------------

EMBED_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    sys.path.insert(0, sys.argv[3])
    from scaling import MemoryProbe
    from seg_train import init_distributed, shutdown_distributed
    from seg_eval.world import WorldConfig
    from seg_retrieval.store import embed_collection
    from seg_trainers.reco import WorldImages
    from seg_zoo import load_clip_model

    torch.set_num_threads(1)
    context = init_distributed()
    clip, _ = load_clip_model(None)
    clip.eval()
    images = int(sys.argv[2])
    collection = WorldImages(WorldConfig(seed=77), "index", images, clip.normalization)

    probe = MemoryProbe().start()
    started = time.perf_counter()
    embed_collection(clip, collection, sys.argv[1], batch_size=64, shard_size=128, progress=False)
    seconds = time.perf_counter() - started
    memory = probe.stop()
    prompts = [f"a photo of a thing number {i}." for i in range(1024)]
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(prompts), 256):
            clip.encode_text(prompts[start : start + 256])
    text_s = time.perf_counter() - started
    if context.rank == 0:
        rate = len(prompts) / text_s
        print(json.dumps({"seconds": seconds, "images": images, "prompts_per_s_rank0": rate, **memory}))
    shutdown_distributed()
    """
)

TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    sys.path.insert(0, sys.argv[4])
    from scaling import MemoryProbe
    from seg_train import init_distributed, shutdown_distributed
    from seg_trainers.groupvit import GroupViTRecipe, train_groupvit

    torch.set_num_threads(1)
    context = init_distributed()
    steps, global_batch = int(sys.argv[2]), int(sys.argv[3])
    recipe = GroupViTRecipe()
    train = recipe.train.model_copy(update={"max_steps": steps, "checkpoint_every": None, "progress": False})
    recipe = recipe.model_copy(update={"train": train, "batch_size": global_batch // context.world_size, "workers": 0})
    probe = MemoryProbe().start()
    started = time.perf_counter()
    train_groupvit(recipe, sys.argv[1])
    seconds = time.perf_counter() - started
    memory = probe.stop()
    if context.rank == 0:
        print(json.dumps({"seconds": seconds, "steps": steps, "global_batch": global_batch, **memory}))
    shutdown_distributed()
    """
)


BUILD_SCRIPT = textwrap.dedent(
    """
    import json, shutil, sys, time
    import faiss, torch
    sys.path.insert(0, sys.argv[4])
    from scaling import MemoryProbe, _nlist
    from seg_train import init_distributed, shutdown_distributed
    from seg_retrieval.index import IndexConfig, build_index
    from seg_retrieval.store import EmbeddingStore

    threads = int(sys.argv[3])
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    context = init_distributed()
    store = EmbeddingStore.open(sys.argv[1])
    out = sys.argv[2]
    config = IndexConfig(kind="ivf_pq", pq_m=64, nlist=_nlist(len(store)), nprobe=32, device="cpu", on_disk=True)
    probe = MemoryProbe().start()
    started = time.perf_counter()
    build_index(store, config, directory=out)
    seconds = time.perf_counter() - started
    memory = probe.stop()
    if context.rank == 0:
        print(json.dumps({"seconds": seconds, "n": len(store), **memory}))
    shutdown_distributed()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(script: str, procs: int, argv: list[str]) -> dict[str, Any]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"seg-scaling-{os.getpid()}.py"
    path.write_text(script)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={procs}",
        f"--master-port={_free_port()}",
        str(path),
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return {**json.loads(lines[-1]), "launch_wall_s": wall}


def run_embed(args: argparse.Namespace) -> None:
    for procs in args.procs:
        out = args.work / f"embed-p{procs}"
        shutil.rmtree(out, ignore_errors=True)
        result = _torchrun(EMBED_SCRIPT, procs, [str(out), str(args.images), str(HERE)])
        result["images_per_s"] = result["images"] / result["seconds"]
        _record(args.work, f"embed/p{procs}", {"procs": procs, **result})


def run_index_procs(args: argparse.Namespace) -> None:
    """The on-disk IVF-PQ build of ``--size`` vectors with P processes of T threads (the part adds split by rank)."""
    store = args.work / f"n{args.size}" / "store"
    if not (store / "manifest.json").is_file():
        raise SystemExit(f"run `index --sizes {args.size}` first: {store} is missing")
    for procs, threads in ((1, 1), (1, 2), (2, 1)):
        out = args.work / f"n{args.size}" / f"index-procs-p{procs}t{threads}"
        shutil.rmtree(out, ignore_errors=True)
        result = _torchrun(BUILD_SCRIPT, procs, [str(store), str(out), str(threads), str(HERE)])
        shutil.rmtree(out, ignore_errors=True)
        _record(
            args.work, f"index-procs/n{args.size}/p{procs}t{threads}", {"procs": procs, "threads": threads, **result}
        )


def run_train(args: argparse.Namespace) -> None:
    for procs in args.procs:
        out = args.work / f"train-p{procs}"
        shutil.rmtree(out, ignore_errors=True)
        result = _torchrun(TRAIN_SCRIPT, procs, [str(out), str(args.steps), str(args.batch), str(HERE)])
        result["pairs_per_s"] = result["steps"] * result["global_batch"] / result["seconds"]
        _record(args.work, f"train/p{procs}", {"procs": procs, **result})


# ---------------------------------------------------------------------------------------------------------------
# coarse quantiser
# ---------------------------------------------------------------------------------------------------------------


def run_coarse(args: argparse.Namespace) -> None:
    """The cost of finding a vector's list: ``nlist`` centroids searched exhaustively (flat) or through an HNSW graph.

    This is the part of adding a vector (and of a query) that grows with ``nlist``. Centroids are mixture vectors
    (no k-means needed to time the assignment); each row is ``--vectors`` assignments to the nearest list, one thread
    per process as in the build, and the HNSW row's agreement with the exact nearest centroid.
    """
    import faiss
    import numpy as np

    _threads(args.threads)
    for nlist in args.nlists:
        centroids, vectors = _mixture(nlist, args.vectors, args.dim, seed=2)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(centroids)
        started = time.perf_counter()
        _, exact = flat.search(vectors, 1)
        flat_s = time.perf_counter() - started
        graph = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 200
        started = time.perf_counter()
        graph.add(centroids)
        graph_build_s = time.perf_counter() - started
        for ef in args.ef_search:
            graph.hnsw.efSearch = ef
            started = time.perf_counter()
            _, found = graph.search(vectors, 1)
            hnsw_s = time.perf_counter() - started
            _record(
                args.work,
                f"coarse/nlist{nlist}/ef{ef}",
                {
                    "nlist": nlist,
                    "dim": args.dim,
                    "vectors": args.vectors,
                    "threads": args.threads,
                    "flat_us_per_vector": 1e6 * flat_s / args.vectors,
                    "hnsw_us_per_vector": 1e6 * hnsw_s / args.vectors,
                    "hnsw_build_s": graph_build_s,
                    "ef_search": ef,
                    "same_list": float(np.mean(found[:, 0] == exact[:, 0])),
                },
            )


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f}" if value >= 1e6 else f"{value / 1e6:.1f}"


def run_report(args: argparse.Namespace) -> None:
    data = json.loads(_results_path(args.work).read_text())
    lines = [
        "| N | index | nlist | build s | search 1,000 q s | recall@50 | files MB (RAM estimate) | peak anon MB | "
        "peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(k for k in data if k.startswith("index/")):
        row = data[key]
        lines.append(
            f"| {row['n']:,} | {row['index']} | {row['nlist'] or ''} | {row['build_s']:.1f} | "
            f"{row['search_1000_s']:.2f} | {row['recall_at_50']:.3f} | {_mb(row['files_bytes'])} "
            f"({_mb(row['estimate_bytes'])}) | {_mb(row['peak_anon_bytes'])} | {_mb(row['peak_rss_bytes'])} |"
        )
    lines += ["", "| N | write clip-retrieval s | import to seg store s | store MB |", "|---|---|---|---|"]
    for key in sorted(k for k in data if k.startswith("store/")):
        row = data[key]
        lines.append(
            f"| {row['n']:,} | {row['write_clip_retrieval_s']:.1f} | {row['import_s']:.1f} | "
            f"{_mb(row['store_bytes'])} |"
        )
    for section, columns in (
        (
            "rerank/",
            ("n", "index", "nprobe", "rerank", "threads", "search_1000_s", "search_1000_median_s", "recall_at_50"),
        ),
        ("curate/", ("n", "concepts", "batch_size", "seconds", "concepts_per_s", "median_batch_s", "peak_anon_bytes")),
        ("embed/", ("procs", "images", "seconds", "images_per_s", "prompts_per_s_rank0", "peak_anon_bytes")),
        ("train/", ("procs", "steps", "global_batch", "seconds", "pairs_per_s", "peak_anon_bytes")),
        ("index-procs/", ("n", "procs", "threads", "seconds", "peak_anon_bytes")),
        ("coarse/", ("nlist", "ef_search", "flat_us_per_vector", "hnsw_us_per_vector", "same_list", "hnsw_build_s")),
    ):
        rows = [data[key] for key in sorted(data) if key.startswith(section)]
        if not rows:
            continue
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            cells = []
            for column in columns:
                value = row.get(column)
                if column.endswith("bytes") and value is not None:
                    cells.append(_mb(value) + " MB")
                elif isinstance(value, float):
                    cells.append(f"{value:.3f}" if column.startswith("recall") else f"{value:,.2f}")
                else:
                    cells.append(f"{value:,}" if isinstance(value, int) else str(value))
            lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        work, n, name, threads = sys.argv[2:6]
        print(json.dumps(_build_child(Path(work), int(n), name, int(threads))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_rerank":
        work, n, reranks, repeats, threads = sys.argv[2:7]
        values = [int(value) for value in reranks.split(",")]
        print(json.dumps(_rerank_child(Path(work), int(n), values, int(repeats), int(threads))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_curate":
        work, n, concepts, batch_size, threads = sys.argv[2:7]
        print(json.dumps(_curate_child(Path(work), int(n), int(concepts), int(batch_size), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "scaling")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index")
    index.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    index.add_argument("--dim", type=int, default=512)
    index.add_argument("--kinds", nargs="+", default=list(INDEX_KINDS), choices=list(INDEX_KINDS))
    index.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    rerank = commands.add_parser("rerank")
    rerank.add_argument("--size", type=int, default=100_000)
    rerank.add_argument("--reranks", type=int, nargs="+", default=[200, 500], help="candidates re-scored (0: none)")
    rerank.add_argument("--repeats", type=int, default=3)
    rerank.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    curate = commands.add_parser("curate")
    curate.add_argument("--size", type=int, default=1_000_000)
    curate.add_argument("--concepts", type=int, default=10_000)
    curate.add_argument("--batch-size", type=int, default=1000)
    coarse = commands.add_parser("coarse")
    coarse.add_argument("--nlists", type=int, nargs="+", default=[4096, 65536])
    coarse.add_argument("--dim", type=int, default=512)
    coarse.add_argument("--vectors", type=int, default=10_000)
    coarse.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 128])
    coarse.add_argument("--threads", type=int, default=1)
    index_procs = commands.add_parser("index-procs")
    index_procs.add_argument("--size", type=int, default=1_000_000)
    embed = commands.add_parser("embed")
    embed.add_argument("--images", type=int, default=1536)
    embed.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    train = commands.add_parser("train")
    train.add_argument("--steps", type=int, default=40)
    train.add_argument("--batch", type=int, default=64)
    train.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    commands.add_parser("report")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runners: dict[str, Callable[[argparse.Namespace], None]] = {
        "index": run_index,
        "rerank": run_rerank,
        "curate": run_curate,
        "index-procs": run_index_procs,
        "coarse": run_coarse,
        "embed": run_embed,
        "train": run_train,
        "report": run_report,
    }
    runners[args.command](args)


if __name__ == "__main__":
    main()
