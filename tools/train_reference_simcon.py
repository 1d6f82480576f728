"""Train and measure InfoNCE, SimCon and MV-SimCon on the same GroupViTs of the synthetic world; bundle MV-SimCon.

    python tools/train_reference_simcon.py [--run runs/simcon-ref] [--bases runs/pgseg-ref] [--seeds 0 1 2]
        [--variants infonce simcon mv-simcon] [--noise 0.0 0.5] [--steps 500] [--lr 2e-4] [--curve-every 100]
        [--eval-seeds 1000 1001 1002] [--num-images 300] [--curve-images 100] [--bundle]

The protocol of docs/methods/pgseg.md, with the objective as the variable: per training seed, every variant starts
from the same trained GroupViT (``BASES/base-seed<S>-continued/model``, the 4,000-step bases that
``python tools/train_reference_groupvit.py --run runs/pgseg-ref --continue-steps 2500`` writes) and trains
``--steps`` more steps on the world's next, unseen image-text pairs at learning rate ``--lr`` with
:class:`seg_trainers.simcon.SimConRecipe`, the same two augmented views for every objective (InfoNCE and SimCon use
the first). The world's noisy-caption fraction ``p_noise`` (captions that are junk or describe another image) is
set to each ``--noise`` value for the fine-tuning pairs (the bases saw the default 0.1). The variants (the rows of
the paper's Table 4):

====================  ===========================================================================================
``infonce``           GroupViT's InfoNCE (row 1, the baseline)
``simcon``            SimCon, one view (row 2)
``mv-simcon-views``   SimCon on two views, positives per view, no NCS view loss (row 3)
``mv-simcon-ncs``     + the negative-cosine view loss, positives per view (row 4)
``mv-simcon``         MV-SimCon: + joint image positives over the views (row 5, Eq. 10)
====================  ===========================================================================================

Every ``--curve-every`` steps a checkpoint is kept and scored on ``--curve-images`` images of each eval world
(the mIoU-against-steps curves); the final model is scored on ``--num-images`` val images of each eval world
(seeds never used for training or tuning) with ``GroupViTSegmenter`` under the ``synthetic`` preset. Writes
``RUN/<variant>-noise<P>-seed<S>/result.json`` after every run (two processes may share a RUN), then
``RUN/report.json``, ``docs/methods/simcon-study.json`` and the plot ``docs/images/simcon-curves.svg``; with
``--bundle``, copies seed 0 of ``mv-simcon`` at the first ``--noise`` value (fp16, with ``training.json``) into
``apps/seg-zoo/src/seg_zoo/bundled/simcon-synthetic``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from svgplot import line_plot
from train_reference_groupvit import _diagnostics, _scores

from seg_eval.world import WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_models.groupvit import load_groupvit
from seg_train.checkpoint import list_checkpoints, load_model_weights
from seg_trainers.groupvit import initial_grouping_model
from seg_trainers.simcon import SimConModule, SimConRecipe, train_simcon

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled"
STUDY = ROOT / "docs" / "methods" / "simcon-study.json"
RESULT_FILE = "result.json"

VARIANTS: dict[str, dict[str, Any]] = {
    "infonce": {"kind": "infonce"},
    "simcon": {"kind": "simcon"},
    "mv-simcon-views": {"kind": "mv-simcon", "view_weight": 0.0, "joint_image_positives": False},
    "mv-simcon-ncs": {"kind": "mv-simcon", "joint_image_positives": False},
    "mv-simcon": {"kind": "mv-simcon"},
}


def _recipe(variant: str, *, seed: int, noise: float, steps: int, lr: float, base: Path, offset: int) -> SimConRecipe:
    recipe = SimConRecipe()
    warmup = min(recipe.train.schedule.warmup_steps, max(steps // 20, 1))
    train = recipe.train.model_copy(
        update={
            "seed": seed,
            "max_steps": steps,
            "lr": lr,
            "schedule": recipe.train.schedule.model_copy(update={"warmup_steps": warmup}),
            "checkpoint_every": None,
            "progress": False,
        }
    )
    return recipe.model_copy(
        update={
            "world": recipe.world.model_copy(update={"p_noise": noise}),
            "loss": recipe.loss.model_copy(update=VARIANTS[variant]),
            "train": train,
            "init_from": str(base),
            "data_offset": offset,
        }
    )


def _with_curve(recipe: SimConRecipe, every: int) -> SimConRecipe:
    """Keep every ``every``-th checkpoint (the curve's points)."""
    keep = recipe.train.max_steps // every + 1
    update = {"checkpoint_every": every, "keep_checkpoints": keep}
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=update)})


def _curve(recipe: SimConRecipe, run_dir: Path, datasets: list[RenderedWorldBenchmark]) -> list[dict[str, float]]:
    """mIoU of every kept checkpoint (and of the starting GroupViT, step 0) on the curve datasets."""
    points = []
    start = initial_grouping_model(recipe.model, recipe.train.seed, recipe.init_from)
    points.append({"step": 0.0, "mIoU": _scores(start, datasets, "step0")["mIoU"]})
    for step, folder in list_checkpoints(run_dir):
        module = SimConModule(
            initial_grouping_model(recipe.model, recipe.train.seed, None), recipe.loss.predictor_hidden_dim
        )
        load_model_weights(folder, module, device=torch.device("cpu"))
        points.append({"step": float(step), "mIoU": _scores(module.model, datasets, f"step{step}")["mIoU"]})
    return points


def _summary(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in runs.values():
        groups.setdefault(f"{result['variant']}@noise{result['noise']}", []).append(result)
    table: dict[str, dict[str, float]] = {}
    for key, results in sorted(groups.items()):
        row: dict[str, float] = {"seeds": float(len(results)), "noise": results[0]["noise"]}
        for metric in ("mIoU", "thing_mIoU", "stuff_mIoU"):
            values = [r["scores"][metric] for r in results]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["train_seconds_mean"] = statistics.fmean(r["train_seconds"] for r in results)
        table[key] = row
    return table


def _collect(run: Path, info: dict[str, Any]) -> dict[str, Any]:
    runs = {path.parent.name: json.loads(path.read_text()) for path in sorted(run.glob(f"*/{RESULT_FILE}"))}
    return {"protocol": info, "runs": runs, "summary": _summary(runs)}


def _plot(report: dict[str, Any], noise_levels: list[float]) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for noise in noise_levels:
        for variant in ("infonce", "simcon", "mv-simcon"):
            curves = [r["curve"] for r in report["runs"].values() if r["variant"] == variant and r["noise"] == noise]
            if not curves:
                continue
            steps = [point["step"] for point in curves[0]]
            means = [statistics.fmean(values) for values in zip(*[[p["mIoU"] for p in c] for c in curves], strict=True)]
            series[f"{variant}, p_noise {noise:g}"] = list(zip(steps, means, strict=True))
    if series:
        line_plot(
            series,
            ROOT / "docs" / "images" / "simcon-curves.svg",
            "mIoU while fine-tuning the same GroupViT (mean over seeds)",
            "steps after the 4,000-step base",
            "mIoU",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "simcon-ref")
    parser.add_argument("--bases", type=Path, default=ROOT / "runs" / "pgseg-ref")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["infonce", "simcon", "mv-simcon"], choices=list(VARIANTS))
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--curve-every", type=int, default=100)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--curve-images", type=int, default=100)
    parser.add_argument("--bundle", action="store_true", help="bundle mv-simcon, first --noise, seed 0 into seg-zoo")
    args = parser.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    final = [RenderedWorldBenchmark(WorldConfig(seed=s), "val", args.num_images) for s in args.eval_seeds]
    curve = [RenderedWorldBenchmark(WorldConfig(seed=s), "val", args.curve_images) for s in args.eval_seeds]
    info = {
        "bases": str(args.bases.relative_to(ROOT) if args.bases.is_relative_to(ROOT) else args.bases),
        "steps": args.steps,
        "lr": args.lr,
        "eval": {"world_seeds": args.eval_seeds, "split": "val", "num_images": args.num_images},
        "curve": {"every": args.curve_every, "num_images": args.curve_images},
    }
    for noise in args.noise:
        for seed in args.seeds:
            base_dir = args.bases / f"base-seed{seed}-continued"
            base_steps = int(json.loads((base_dir / RESULT_FILE).read_text())["steps"])
            for variant in args.variants:
                key = f"{variant}-noise{noise:g}-seed{seed}"
                run_dir = args.run / key
                if (run_dir / RESULT_FILE).is_file():
                    print(f"{key}: done before", flush=True)
                    continue
                recipe = _recipe(
                    variant,
                    seed=seed,
                    noise=noise,
                    steps=args.steps,
                    lr=args.lr,
                    base=base_dir / "model",
                    offset=base_steps,
                )
                recipe = _with_curve(recipe, args.curve_every)
                started = time.time()
                run = train_simcon(recipe, run_dir, resume=(run_dir / "checkpoints").is_dir(), log=print)
                seconds = time.time() - started
                model = load_groupvit(run.model_dir)
                result = {
                    "variant": variant,
                    "noise": noise,
                    "seed": seed,
                    "base_steps": base_steps,
                    "steps": run.result.final_step,
                    "train_seconds": seconds,
                    "last_record": run.result.last_record,
                    "scores": _scores(model, final, key),
                    "diagnostics": _diagnostics(model, final[0]),
                    "curve": _curve(recipe, run_dir, curve),
                }
                (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
                print(f"{key}: mIoU {result['scores']['mIoU']:.3f} in {seconds:.0f} s", flush=True)
    report = _collect(args.run, info)
    (args.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    STUDY.write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, args.noise)
    if args.bundle:
        key = f"mv-simcon-noise{args.noise[0]:g}-seed0"
        target = BUNDLED / "simcon-synthetic"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(args.run / key / "model", target)
        training = json.loads((target / "training.json").read_text())
        result = report["runs"][key]
        training |= {"train_world_seed": 0, "train_seed": 0, "eval": info["eval"] | {"scores": result["scores"]}}
        (target / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        print(f"bundled {key} -> {target}", flush=True)
    for key, row in report["summary"].items():
        print(
            f"{key:28s} mIoU {row['mIoU_mean']:.3f} +- {row['mIoU_std']:.3f}  things {row['thing_mIoU_mean']:.3f}"
            f"  stuff {row['stuff_mIoU_mean']:.3f}  ({row['seeds']:.0f} seeds)"
        )


if __name__ == "__main__":
    main()
