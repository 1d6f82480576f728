"""Time PGSeg's EM prototype generation against its O(q·m·d) cost model, and a GroupViT vs PGSeg training step.

**Part 1, EM cost scaling** (``--part em``). ``seg_models.pgseg.em_prototypes(source [B, m, d], init [q, d],
iterations=T)`` on random seeded inputs (Gaussian source, unit-norm initial prototypes), ``B = 8`` and ``T = 10``
by default, over a grid that varies one of ``q`` (prototypes), ``m`` (source features) and ``d`` (channels) at a
time around the official GroupViT/PGSeg first stage (``q = 64``, ``m = 196`` = 14x14 patches, ``d = 384``). One call
runs ``T`` E-steps and ``T`` M-steps plus a final E-step: ``2T + 1`` batched products of ``B·q·m·d``
multiply-adds each, plus ``O(B·q·m)`` softmax/normalisation work and ``O(B·q·d)`` L2 normalisations. The floor is
the same ``2T + 1`` plain ``torch.bmm`` calls on ready-made operands (``[B, m, d] @ [B, d, q]`` for the E-steps,
``[B, q, m] @ [B, m, d]`` for the M-steps) with nothing else. Reported per grid point: time per call, time per
``B·T·q·m·d`` (flat if the cost is O(q·m·d)), EM / floor and the achieved GFLOP/s of the products; and least-squares
slopes of ``log time`` against ``log q``, ``log m``, ``log d``: per axis over all five sizes and over the three
largest, and one joint fit over the whole grid. Target: slopes near 1 where the products dominate; at small sizes
the fixed per-call overheads and the ``O(q·m)`` softmax flatten them (below 1).

**Part 2, training step** (``--part train``). One optimiser step as ``seg_trainers.groupvit``'s recipes run it in
the seg-train ``Trainer``: ``zero_grad``, forward and loss under the recipe's autocast (``bf16``; ``--precision``
overrides), backward, gradient clipping at the recipe's norm (5), AdamW step (the recipe's parameter groups, betas
and eps). GroupViT: ``groupvit_step`` (symmetric InfoNCE). PGSeg: ``pgseg_step(settings, start_step=0)``, so the PG
losses (I-NPR λ = 0.1, T-NPR β = 0.01, Hungarian matching and hard rejection) are on from the first step, with EM
(``T = 10``) in every forward and the momentum prototype update. Same architecture otherwise: the recipes' default
synthetic configs (``GROUPVIT_SYNTHETIC_CONFIG`` / ``PGSEG_SYNTHETIC_CONFIG``, 64 px) at ``--train-batches``
(default 64 and 128) on one batch of the world's ``pairs`` split (rendered once, outside the clock, with the
``batch_index`` key the recipe's batches carry), and with ``--official`` also ``GROUPVIT_GCC_YFCC_CONFIG`` and
``PGSegConfig(groupvit=that)`` (224 px, 4096-wide reconstruction MLPs) at ``--official-batch`` (default 8) on random
images and random caption tokens. Each model is built by ``build_model`` (seed 0) and stepped on the same batch.

Breakdown of the PGSeg step: the third model in each round is a second PGSeg whose ``em_prototypes`` (split into
image I-NPR and text T-NPR calls), ``pgseg_loss_terms`` (the forward of all PG losses: similarity matrices,
Hungarian matching on the CPU, rejection, Eq. 3) and ``batched_hungarian_match`` are wrapped by timers (the module
globals the recipe code calls are patched for its steps only), and whose I-NPR reconstruction MLPs carry forward
hooks that time their forward passes; its shares are per-step component time over that step's own total, so the
clean PGSeg timings are not disturbed. Not split out: the MLPs' backward, the PG losses' backward, the momentum
update and AdamW on the MLPs' weights (together the rest of PGSeg minus GroupViT).

Method: after warm-up, ``--em-repeats`` / ``--step-repeats`` rounds that run every computation once in turn, so load
from other processes hits all alike; tables give the median and the minimum. ``--device cuda`` synchronises before
every clock read (and inside the instrumented step, around every timed call). The JSON (``--out``) holds every time,
the machine (platform, CPU/GPU, torch, thread count) and ``os.getloadavg()`` before and after each part, since
other jobs may share the machine. On a CPU shared with other busy processes, pass ``--threads 1``: with more torch
threads than idle cores every parallel op waits at a barrier for a descheduled thread (a scheduler time slice, ms),
which swamps the arithmetic being measured.

    hatch run python tools/bench/pgseg.py [--part all|em|train] [--train-batches 64 128] [--official]
        [--device cpu] [--out runs/bench/pgseg.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import seg_losses.prototype as prototype_losses
import seg_models.pgseg as pgseg_models
import seg_trainers.groupvit as recipes
from seg_models.groupvit import GROUPVIT_GCC_YFCC_CONFIG
from seg_models.pgseg import PGSegConfig, em_prototypes, init_prototypes
from seg_train import autocast_dtype, build_optimizer, resolve_precision
from seg_trainers.clip import WorldPairBatches
from seg_trainers.groupvit import GroupViTRecipe, PGSegRecipe, build_model, groupvit_step, pgseg_step

BASE = {"q": 64, "m": 196, "d": 384}
"""The official first grouping stage: 64 prototypes, 14x14 = 196 patch tokens, 384 channels."""
AXES: dict[str, tuple[int, ...]] = {
    "q": (16, 32, 64, 128, 256),
    "m": (49, 98, 196, 392, 784),
    "d": (96, 192, 384, 768, 1536),
}
STEP_RUNS = ("groupvit", "pgseg", "pgseg_instrumented")
COMPONENTS = ("em_image", "em_text", "pg_loss_terms", "hungarian", "reconstruction_forward")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[], Any], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    run()
    _synchronize(device)
    return time.perf_counter() - start


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _summary(times: Sequence[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times)}


# ---------------------------------------------------------------------------------------------------------------
# Part 1: EM cost scaling
# ---------------------------------------------------------------------------------------------------------------


def _grid(axes: dict[str, tuple[int, ...]]) -> list[dict[str, int]]:
    """The points that vary one of q, m, d at a time around :data:`BASE` (the base point once)."""
    points: list[dict[str, int]] = []
    for axis, sizes in axes.items():
        for size in sizes:
            point = BASE | {axis: size}
            if point not in points:
                points.append(point)
    return points


def _em_runs(
    point: dict[str, int], batch: int, iterations: int, device: torch.device, seed: int
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """``(em, floor)``: one ``em_prototypes`` call and the ``2T + 1`` bare products it needs."""
    q, m, d = point["q"], point["m"], point["d"]
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, m, d, generator=generator).to(device)
    init = init_prototypes(q, d, generator=generator).to(device)
    prototypes = torch.nn.functional.normalize(torch.randn(batch, q, d, generator=generator), dim=-1).to(device)
    responsibilities = torch.rand(batch, m, q, generator=generator).softmax(dim=-1).to(device)

    def em() -> Any:
        return em_prototypes(source, init, iterations=iterations)

    def floor() -> Any:
        for _ in range(iterations):
            torch.bmm(source, prototypes.transpose(1, 2))  # E-step: [B, m, d] @ [B, d, q]
            torch.bmm(responsibilities.transpose(1, 2), source)  # M-step: [B, q, m] @ [B, m, d]
        return torch.bmm(source, prototypes.transpose(1, 2))  # the final E-step

    return em, floor


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs``."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return numerator / sum((x - mean_x) ** 2 for x in xs)


def _fits(rows: list[dict[str, Any]], key: str, axes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Per-axis slopes of log time (all sizes, the three largest) and the joint fit over the grid."""
    time_of = {(row["q"], row["m"], row["d"]): row[key] for row in rows}
    per_axis: dict[str, dict[str, float]] = {}
    for axis, sizes in axes.items():
        points = [BASE | {axis: size} for size in sizes]
        logs_x = [math.log(size) for size in sizes]
        logs_t = [math.log(time_of[(p["q"], p["m"], p["d"])]) for p in points]
        per_axis[axis] = {"all": _slope(logs_x, logs_t), "largest_3": _slope(logs_x[-3:], logs_t[-3:])}
    design = torch.tensor(
        [[1.0, math.log(row["q"]), math.log(row["m"]), math.log(row["d"])] for row in rows], dtype=torch.float64
    )
    target = torch.tensor([[math.log(row[key])] for row in rows], dtype=torch.float64)
    solution = torch.linalg.lstsq(design, target).solution.flatten().tolist()
    residual = (design @ torch.tensor(solution, dtype=torch.float64).unsqueeze(1) - target).flatten()
    joint = {
        "q": solution[1],
        "m": solution[2],
        "d": solution[3],
        "rms_log_residual": float(residual.square().mean().sqrt()),
    }
    return {"per_axis": per_axis, "joint": joint}


def _bench_em(args: argparse.Namespace, device: torch.device, axes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for point in _grid(axes):
        em, floor = _em_runs(point, args.batch, args.iterations, device, args.seed)
        for _ in range(args.em_warmup):
            _timed(em, device)
            _timed(floor, device)
        em_times: list[float] = []
        floor_times: list[float] = []
        for _ in range(args.em_repeats):
            em_times.append(_timed(em, device))
            floor_times.append(_timed(floor, device))
        cost = args.batch * args.iterations * point["q"] * point["m"] * point["d"]
        flops = (2 * args.iterations + 1) * 2 * args.batch * point["q"] * point["m"] * point["d"]
        em_median, em_min = statistics.median(em_times), min(em_times)
        floor_median, floor_min = statistics.median(floor_times), min(floor_times)
        rows.append(
            {
                **point,
                "em_median_s": em_median,
                "em_min_s": em_min,
                "floor_median_s": floor_median,
                "floor_min_s": floor_min,
                "em_over_floor_median": em_median / floor_median,
                "em_over_floor_min": em_min / floor_min,
                "em_ns_per_bTqmd_median": em_median / cost * 1e9,
                "em_ns_per_bTqmd_min": em_min / cost * 1e9,
                "em_gflops_best": flops / em_min / 1e9,
                "floor_gflops_best": flops / floor_min / 1e9,
                "em_times_s": em_times,
                "floor_times_s": floor_times,
            }
        )
        print(
            f"  q={point['q']:4d} m={point['m']:4d} d={point['d']:5d}: EM {em_median * 1e3:8.2f} ms "
            f"({em_min * 1e3:.2f}), floor {floor_median * 1e3:8.2f} ms ({floor_min * 1e3:.2f})",
            flush=True,
        )
    return {
        "rows": rows,
        "fits_min": _fits(rows, "em_min_s", axes),
        "fits_median": _fits(rows, "em_median_s", axes),
        "floor_fits_min": _fits(rows, "floor_min_s", axes),
    }


def _print_em(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nEM, B={args.batch}, T={args.iterations}; median (min) of {args.em_repeats} after {args.em_warmup} warm-up\n"
    )
    print(
        "| q | m | d | EM ms, median (min) | floor ms, median (min) | EM / floor, median (min) "
        "| EM ns per B·T·q·m·d, median (min) | GFLOP/s EM / floor (best) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["rows"]:
        print(
            f"| {row['q']} | {row['m']} | {row['d']} | {row['em_median_s'] * 1e3:.2f} ({row['em_min_s'] * 1e3:.2f}) "
            f"| {row['floor_median_s'] * 1e3:.2f} ({row['floor_min_s'] * 1e3:.2f}) "
            f"| {row['em_over_floor_median']:.2f} ({row['em_over_floor_min']:.2f}) "
            f"| {row['em_ns_per_bTqmd_median']:.3f} ({row['em_ns_per_bTqmd_min']:.3f}) "
            f"| {row['em_gflops_best']:.0f} / {row['floor_gflops_best']:.0f} |"
        )
    print("\n| fit of log time | slope q | slope m | slope d |")
    print("|---|---:|---:|---:|")
    for label, key in (("EM, min", "fits_min"), ("EM, median", "fits_median"), ("floor, min", "floor_fits_min")):
        fits = result[key]
        per_axis = fits["per_axis"]
        print(f"| {label}, per axis, all 5 sizes | " + " | ".join(f"{per_axis[a]['all']:.2f}" for a in "qmd") + " |")
        print(
            f"| {label}, per axis, largest 3 | " + " | ".join(f"{per_axis[a]['largest_3']:.2f}" for a in "qmd") + " |"
        )
        joint = fits["joint"]
        print(
            f"| {label}, joint (rms log residual {joint['rms_log_residual']:.2f}) | "
            + " | ".join(f"{joint[a]:.2f}" for a in "qmd")
            + " |"
        )


# ---------------------------------------------------------------------------------------------------------------
# Part 2: training steps
# ---------------------------------------------------------------------------------------------------------------


def _recipes(config: str, batch: int) -> tuple[GroupViTRecipe, PGSegRecipe]:
    if config == "synthetic":
        return GroupViTRecipe(batch_size=batch), PGSegRecipe(batch_size=batch)
    official = GROUPVIT_GCC_YFCC_CONFIG
    return (
        GroupViTRecipe(model=official, batch_size=batch),
        PGSegRecipe(model=PGSegConfig(groupvit=official), batch_size=batch),
    )


def _batch(config: str, recipe: GroupViTRecipe, seed: int) -> dict[str, Tensor]:
    """One batch as the recipe's data yields it: the world's first pair batch, or random official-size inputs."""
    model = recipe.groupvit_config()
    if config == "synthetic":
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(context_length=model.text.context_length)
        pairs = WorldPairBatches(recipe.world, recipe.batch_size, tokenizer, model.normalization)
        return pairs[0] | {"batch_index": torch.tensor(0)}
    generator = torch.Generator().manual_seed(seed)
    size, length, vocab = model.vision.image_size, model.text.context_length, model.text.vocab_size
    images = torch.randn(recipe.batch_size, 3, size, size, generator=generator)
    tokens = torch.zeros(recipe.batch_size, length, dtype=torch.long)
    lengths = torch.randint(4, length - 1, (recipe.batch_size,), generator=generator).tolist()
    for row, words in enumerate(lengths):
        tokens[row, 0] = vocab - 2  # start of text
        tokens[row, 1 : words + 1] = torch.randint(1, vocab - 2, (words,), generator=generator)
        tokens[row, words + 1] = vocab - 1  # end of text (the highest id, where the text tower pools)
    return {"images": images, "tokens": tokens, "batch_index": torch.tensor(0)}


class _Stepper:
    """One model, its AdamW and the recipe's step, run as the seg-train ``Trainer`` runs a step (no accumulation)."""

    def __init__(self, recipe: GroupViTRecipe, batch: dict[str, Tensor], device: torch.device, precision: str) -> None:
        self.model = build_model(recipe).to(device).train()
        groups = recipes._parameter_groups(self.model, recipe.train.weight_decay)  # the recipe's own groups
        self.optimizer = build_optimizer(recipe.train, groups, betas=recipe.betas, eps=1e-8)
        self.parameters = [parameter for group in self.optimizer.param_groups for parameter in group["params"]]
        self.step_fn = pgseg_step(recipe.pg, start_step=0) if isinstance(recipe, PGSegRecipe) else groupvit_step
        self.batch = {key: value.to(device) for key, value in batch.items()}
        self.device = device
        resolved = resolve_precision(recipe.train.precision if precision == "recipe" else precision, device)
        self.precision = resolved
        self.dtype = autocast_dtype(resolved)
        self.clip_norm = recipe.train.grad_clip_norm
        self.num_parameters = sum(parameter.numel() for parameter in self.model.parameters())

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        autocast: AbstractContextManager[Any] = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()
        )
        with autocast:
            output = self.step_fn(self.model, self.batch)
        torch.autograd.backward(output.loss.float())
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        self.optimizer.step()


@contextmanager
def _instrumented(totals: dict[str, float], device: torch.device) -> Iterator[None]:
    """Time ``em_prototypes``, ``pgseg_loss_terms`` and ``batched_hungarian_match`` into ``totals`` (seconds).

    Patches the module globals the recipe code looks up at call time, and restores them on exit.
    """
    targets: list[tuple[Any, str, Callable[[dict[str, Any]], str]]] = [
        (pgseg_models, "em_prototypes", lambda kwargs: "em_text" if kwargs.get("kernel") == "gaussian" else "em_image"),
        (recipes, "pgseg_loss_terms", lambda _: "pg_loss_terms"),
        (prototype_losses, "batched_hungarian_match", lambda _: "hungarian"),
    ]
    originals = [getattr(module, name) for module, name, _ in targets]

    def timer(function: Callable[..., Any], name_of: Callable[[dict[str, Any]], str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _synchronize(device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            _synchronize(device)
            totals[name_of(kwargs)] += time.perf_counter() - start
            return result

        return wrapper

    for (module, name, name_of), original in zip(targets, originals, strict=True):
        setattr(module, name, timer(original, name_of))
    try:
        yield
    finally:
        for (module, name, _), original in zip(targets, originals, strict=True):
            setattr(module, name, original)


def _time_forwards(modules: Iterable[nn.Module], totals: dict[str, float], key: str, device: torch.device) -> None:
    """Add the forward time of each of ``modules`` to ``totals[key]`` on every call (hooks stay registered)."""
    starts: list[float] = []

    def before(module: nn.Module, inputs: Any) -> None:
        _synchronize(device)
        starts.append(time.perf_counter())

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        _synchronize(device)
        totals[key] += time.perf_counter() - starts.pop()

    for module in modules:
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def _bench_train(args: argparse.Namespace, device: torch.device, config: str, batch_size: int) -> dict[str, Any]:
    groupvit_recipe, pgseg_recipe = _recipes(config, batch_size)
    batch = _batch(config, groupvit_recipe, args.seed)
    steppers = {
        "groupvit": _Stepper(groupvit_recipe, batch, device, args.precision),
        "pgseg": _Stepper(pgseg_recipe, batch, device, args.precision),
        "pgseg_instrumented": _Stepper(pgseg_recipe, batch, device, args.precision),
    }
    times: dict[str, list[float]] = {name: [] for name in STEP_RUNS}
    components: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    totals = dict.fromkeys(COMPONENTS, 0.0)
    reconstructions: Any = steppers["pgseg_instrumented"].model
    _time_forwards(reconstructions.reconstructions, totals, "reconstruction_forward", device)
    load_before = _load()

    def run_round(record: bool) -> None:
        for name in STEP_RUNS:
            if name == "pgseg_instrumented":
                totals.update(dict.fromkeys(COMPONENTS, 0.0))
                with _instrumented(totals, device):
                    elapsed = _timed(steppers[name], device)
                if record:
                    for key, value in totals.items():
                        components[key].append(value)
            else:
                elapsed = _timed(steppers[name], device)
            if record:
                times[name].append(elapsed)

    for _ in range(args.step_warmup):
        run_round(record=False)
    for index in range(args.step_repeats):
        run_round(record=True)
        print(
            f"  {config} batch {batch_size}, round {index + 1}: "
            + ", ".join(f"{name} {times[name][-1]:.3f} s" for name in STEP_RUNS),
            flush=True,
        )

    groupvit, pgseg = _summary(times["groupvit"]), _summary(times["pgseg"])
    instrumented = times["pgseg_instrumented"]
    shares = {
        key: statistics.median(value / total for value, total in zip(components[key], instrumented, strict=True))
        for key in COMPONENTS
    }
    pg_parts = [
        sum(components[key][i] for key in ("em_image", "em_text", "pg_loss_terms")) for i in range(len(instrumented))
    ]
    shares["em_plus_pg_loss_terms"] = statistics.median(
        part / total for part, total in zip(pg_parts, instrumented, strict=True)
    )
    overhead = pgseg["median_s"] - groupvit["median_s"]
    return {
        "config": config,
        "batch_size": batch_size,
        "precision": steppers["pgseg"].precision,
        "parameters": {"groupvit": steppers["groupvit"].num_parameters, "pgseg": steppers["pgseg"].num_parameters},
        "groupvit": groupvit,
        "pgseg": pgseg,
        "pgseg_instrumented": _summary(instrumented),
        "ratio_median": pgseg["median_s"] / groupvit["median_s"],
        "ratio_min": pgseg["min_s"] / groupvit["min_s"],
        "overhead_median_s": overhead,
        "components_median_s": {key: statistics.median(value) for key, value in components.items()},
        "component_shares_of_pgseg_step": shares,
        "em_plus_pg_loss_terms_over_overhead": statistics.median(pg_parts) / overhead if overhead > 0 else None,
        "times_s": times,
        "components_s": components,
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def _print_train(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nTraining step, median (min) of {args.step_repeats} rounds after {args.step_warmup} warm-up\n")
    print(
        "| config | batch | precision | GroupViT s/step | PGSeg s/step | PGSeg / GroupViT | PGSeg - GroupViT ms "
        "| EM image + text ms | PG loss terms ms (Hungarian) | reconstruction MLPs, forward ms "
        "| EM + PG loss terms, share of PGSeg step |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        comp, share = row["components_median_s"], row["component_shares_of_pgseg_step"]
        print(
            f"| {row['config']} | {row['batch_size']} | {row['precision']} "
            f"| {row['groupvit']['median_s']:.3f} ({row['groupvit']['min_s']:.3f}) "
            f"| {row['pgseg']['median_s']:.3f} ({row['pgseg']['min_s']:.3f}) "
            f"| {row['ratio_median']:.2f} ({row['ratio_min']:.2f}) "
            f"| {row['overhead_median_s'] * 1e3:.0f} "
            f"| {comp['em_image'] * 1e3:.0f} + {comp['em_text'] * 1e3:.0f} "
            f"| {comp['pg_loss_terms'] * 1e3:.0f} ({comp['hungarian'] * 1e3:.0f}) "
            f"| {comp['reconstruction_forward'] * 1e3:.0f} "
            f"| {share['em_plus_pg_loss_terms']:.1%} |"
        )


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_start": _load(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "em", "train"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/pgseg.json"), help="JSON results")
    em = parser.add_argument_group("EM scaling")
    em.add_argument("--batch", type=int, default=8, help="B, images per EM call")
    em.add_argument("--iterations", type=int, default=10, help="T, EM iterations")
    for axis in "qmd":
        em.add_argument(f"--{axis}", type=int, nargs="+", default=list(AXES[axis]), help=f"sizes of {axis}")
    em.add_argument("--em-warmup", type=int, default=1)
    em.add_argument("--em-repeats", type=int, default=9)
    train = parser.add_argument_group("training step")
    train.add_argument("--train-batches", type=int, nargs="*", default=[64, 128], help="synthetic-config batches")
    train.add_argument("--official", action="store_true", help="also the official 224-px GroupViT/PGSeg")
    train.add_argument("--official-batch", type=int, default=8)
    train.add_argument("--precision", choices=("recipe", "fp32", "bf16"), default="recipe")
    train.add_argument("--step-warmup", type=int, default=2)
    train.add_argument("--step-repeats", type=int, default=9)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    axes = {axis: tuple(sorted(getattr(args, axis))) for axis in "qmd"}
    for axis, sizes in axes.items():
        if BASE[axis] not in sizes or len(sizes) < 3:
            parser.error(f"--{axis} {list(sizes)}: give at least 3 sizes including the base size {BASE[axis]}")

    machine = _machine(device)
    print(
        f"{machine.get('gpu', machine['cpu'])}, {machine['torch_threads']} torch threads, torch {torch.__version__}, "
        f"load average {machine['load_average_start']}",
        flush=True,
    )
    payload: dict[str, Any] = {"machine": machine, "arguments": {k: str(v) for k, v in vars(args).items()}}
    if args.part in ("all", "em"):
        print("EM scaling:", flush=True)
        load_before = _load()
        em_result = _bench_em(args, device, axes)
        payload["em"] = {
            "workload": {"batch": args.batch, "iterations": args.iterations, "base": BASE, "axes": axes},
            "method": f"median and min of {args.em_repeats} rounds (EM, floor alternating) after {args.em_warmup} "
            "warm-up; floor = the 2T+1 bare torch.bmm products",
            "load_average_before": load_before,
            "load_average_after": _load(),
            **em_result,
        }
        _print_em(em_result, args)
    if args.part in ("all", "train"):
        configs = [("synthetic", batch) for batch in args.train_batches]
        if args.official:
            configs.append(("official", args.official_batch))
        train_rows = []
        for config, batch_size in configs:
            print(f"training step, {config} config, batch {batch_size}:", flush=True)
            train_rows.append(_bench_train(args, device, config, batch_size))
        payload["train"] = {
            "method": f"median and min of {args.step_repeats} rounds (GroupViT, PGSeg, instrumented PGSeg in turn) "
            f"after {args.step_warmup} warm-up rounds",
            "rows": train_rows,
        }
        _print_train(train_rows, args)
    payload["machine"]["load_average_end"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
