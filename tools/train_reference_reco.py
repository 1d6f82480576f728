"""Build the reference ReCo and ReCo+ models of the synthetic world, evaluate them, and bundle them into seg-zoo.

    python tools/train_reference_reco.py [--run runs/reco-ref] [--steps 3000] [--seeds 0 1 2] [--num-images 300]

1. ReCo: the default :class:`seg_trainers.reco.ReCoRecipe` (archives of k=50 from 3000 ``index`` images of world
   seed 0, retrieved and co-segmented with the bundled reference CLIP) -> ``RUN/reco/model``.
2. ReCo+: the default :class:`seg_trainers.reco.ReCoPlusRecipe` (ReCo pseudo-labels of 2000 ``test`` images of
   world seed 0, a small DeepLabv3+ trained from scratch), once per training seed -> ``RUN/reco-plus-seedS/model``.
3. Evaluation of MaskCLIP, ReCo and each ReCo+ seed (mIoU / thing / stuff; mean and spread over the ReCo+ seeds)
   on two kinds of data: ``held_out`` -- world seeds 1000-1002 (``val``, never used to build or tune anything),
   averaged over the worlds -- and ``target`` -- the first images of the ``test`` split of world seed 0, the
   images whose pseudo-labels ReCo+ was trained on (their ground truth is used only here, to score).
4. Bundles ReCo and the first seed's ReCo+ (fp16) with ``training.json`` (recipe, metrics) into
   ``apps/seg-zoo/src/seg_zoo/bundled/{reco-synthetic,reco-plus-synthetic}`` and writes the metrics to
   ``RUN/report.json``. The numbers go into ``docs/methods/reco.md`` by hand.

Interrupted runs resume: the embedding store, the pseudo-labels and the ReCo+ checkpoints are kept in ``RUN``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from seg_core import ConceptSet
from seg_eval.evaluator import evaluate
from seg_eval.presets import get_preset
from seg_eval.world import STUFF_NAMES, THING_NAMES, WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_models.clip import load_clip
from seg_models.maskclip import MaskCLIPSegmenter
from seg_trainers.reco import ReCoPlusRecipe, ReCoRecipe, build_reco, load_reco, load_reco_plus, train_reco_plus
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled"


def _scores(segmenter: Any, dataset: RenderedWorldBenchmark, name: str) -> dict[str, Any]:
    preset = get_preset("synthetic")
    metrics = evaluate(segmenter, dataset, preset=preset, method=name, model=name, dataset_name="synthetic").metrics
    return {
        "mIoU": metrics.miou,
        "thing_mIoU": metrics.miou_over(THING_NAMES),
        "stuff_mIoU": metrics.miou_over(STUFF_NAMES),
        "pixel_accuracy": metrics.pixel_accuracy,
        "per_class_iou": dict(metrics.per_class_iou),
    }


def _mean_classes(per_world: list[dict[str, Any]]) -> dict[str, float | None]:
    names = per_world[0]["per_class_iou"].keys()
    means: dict[str, float | None] = {}
    for name in names:  # a class absent from a world has IoU None there
        present = [world["per_class_iou"][name] for world in per_world if world["per_class_iou"][name] is not None]
        means[name] = statistics.fmean(present) if present else None
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "reco-ref")
    parser.add_argument("--steps", type=int, default=3000, help="ReCo+ training steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="ReCo+ training seeds")
    parser.add_argument("--num-images", type=int, default=300, help="evaluation images per world")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002], help="held-out worlds")
    args = parser.parse_args()
    started = time.time()
    clip_source = f"bundled:{REFERENCE_CLIP}"
    clip = load_clip(f"local-dir:{bundled_model_dir(REFERENCE_CLIP)}")
    preset = get_preset("synthetic")

    reco_recipe = ReCoRecipe()
    reco_run = build_reco(reco_recipe, clip, args.run / "reco", clip_source=clip_source)
    print(f"reco built in {reco_run.seconds}", flush=True)
    reco = load_reco(reco_run.model_dir, clip, preset)
    concepts = ConceptSet(names=reco.references.names, templates=reco_recipe.templates)

    plus_runs = []
    for seed in args.seeds:
        recipe = ReCoPlusRecipe()
        recipe = recipe.model_copy(
            update={"train": recipe.train.model_copy(update={"max_steps": args.steps, "seed": seed})}
        )
        run_dir = args.run / f"reco-plus-seed{seed}"
        resume = (run_dir / "checkpoints").is_dir()
        plus_runs.append((seed, recipe, train_reco_plus(recipe, reco, concepts, run_dir, resume=resume, log=print)))

    plus_recipe = plus_runs[0][1]
    eval_sets: dict[str, list[RenderedWorldBenchmark]] = {
        "held_out": [RenderedWorldBenchmark(WorldConfig(seed=s), "val", args.num_images) for s in args.eval_seeds],
        "target": [RenderedWorldBenchmark(plus_recipe.world, plus_recipe.split, args.num_images)],
    }
    report: dict[str, Any] = {
        "eval": {
            "held_out": {"world_seeds": args.eval_seeds, "split": "val", "num_images": args.num_images},
            "target": {"world_seed": plus_recipe.world.seed, "split": plus_recipe.split, "num_images": args.num_images},
            "preset": "synthetic",
        },
        "reco_purity": reco_run.purity,
    }
    models: dict[str, Any] = {"maskclip": MaskCLIPSegmenter(clip, preset), "reco": reco}
    for seed, _, run in plus_runs:
        models[f"reco_plus_seed{seed}"] = load_reco_plus(run.model_dir, preset)
    for set_name, datasets in eval_sets.items():
        scores: dict[str, Any] = {}
        for name, model in models.items():
            per_world = [_scores(model, dataset, name) for dataset in datasets]
            scores[name] = {
                key: statistics.fmean(world[key] for world in per_world)
                for key in ("mIoU", "thing_mIoU", "stuff_mIoU", "pixel_accuracy")
            } | {"per_world_mIoU": [world["mIoU"] for world in per_world], "per_class_iou": _mean_classes(per_world)}
            print(f"{set_name} {name}: mIoU {scores[name]['mIoU']:.3f}", flush=True)
        for key in ("mIoU", "thing_mIoU", "stuff_mIoU"):
            values = [scores[f"reco_plus_seed{seed}"][key] for seed, _, _ in plus_runs]
            scores[f"reco_plus_{key}_mean"] = statistics.fmean(values)
            scores[f"reco_plus_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        report[set_name] = scores
    report["seconds"] = time.time() - started
    (args.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    reco_bundle = BUNDLED / "reco-synthetic"
    shutil.rmtree(reco_bundle, ignore_errors=True)
    shutil.copytree(reco_run.model_dir, reco_bundle)
    reco_info = {
        "recipe": reco_recipe.model_dump(mode="json"),
        "train_world_seed": reco_recipe.world.seed,
        "eval": report["eval"]
        | {name: {"reco": report[name]["reco"], "maskclip": report[name]["maskclip"]} for name in eval_sets},
        "purity": reco_run.purity,
    }
    (reco_bundle / "training.json").write_text(json.dumps(reco_info, indent=2) + "\n")

    seed, recipe, run = plus_runs[0]
    plus_bundle = BUNDLED / "reco-plus-synthetic"
    shutil.rmtree(plus_bundle, ignore_errors=True)
    shutil.copytree(run.model_dir, plus_bundle)
    plus_info = {
        "recipe": recipe.model_dump(mode="json"),
        "train_world_seed": recipe.world.seed,
        "train_seed": seed,
        "steps": run.result.final_step,
        "eval": report["eval"]
        | {
            name: {"reco_plus": report[name][f"reco_plus_seed{seed}"], "reco": report[name]["reco"]}
            for name in eval_sets
        },
    }
    (plus_bundle / "training.json").write_text(json.dumps(plus_info, indent=2) + "\n")
    for name in eval_sets:
        summary = {model: round(report[name][model]["mIoU"], 3) for model in ("maskclip", "reco")}
        plus = f"{report[name]['reco_plus_mIoU_mean']:.3f} +- {report[name]['reco_plus_mIoU_std']:.3f}"
        print(f"{name}: mIoU {summary}; reco+ {plus}")


if __name__ == "__main__":
    main()
