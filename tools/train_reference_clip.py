"""Train (or re-evaluate) the reference synthetic-world CLIP and bundle it into seg-zoo.

    python tools/train_reference_clip.py [--run runs/clip-ref] [--steps 1500] [--skip-train] [--num-images 300]
        [--eval-seed 1000] [--candidate]

Trains ``seg_trainers.clip.SyntheticClipRecipe`` (resuming an interrupted run), evaluates it on world seed 1000
(never seen in training: the pairs come from seed 0), and writes the fp16 ``local-dir:`` model, its recipe and its
metrics to ``apps/seg-zoo/src/seg_zoo/bundled/synthetic-clip/``. The metrics go into ``docs/benchmarks.md`` by hand.
With ``--candidate`` nothing is bundled: the run's metrics go to ``RUN/eval.json`` (train and compare a candidate
reference CLIP on a selection seed, e.g. ``--eval-seed 900``, before replacing the bundled one, which every
CLIP-based method's bundle was trained with).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from seg_core import ScheduleConfig
from seg_trainers.clip import SyntheticClipRecipe, evaluate_synthetic_clip, train_synthetic_clip

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled" / "synthetic-clip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "clip-ref")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--skip-train", action="store_true", help="bundle the model the run already exported")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--eval-seed", type=int, default=1000, help="world seed of the evaluation images")
    parser.add_argument("--candidate", action="store_true", help="evaluate into RUN/eval.json; bundle nothing")
    args = parser.parse_args()
    recipe = SyntheticClipRecipe()
    recipe = recipe.model_copy(
        update={
            "train": recipe.train.model_copy(
                update={
                    "max_steps": args.steps,
                    "schedule": ScheduleConfig(kind="cosine", warmup_steps=max(args.steps // 20, 1)),
                }
            )
        }
    )
    started = time.time()
    if not args.skip_train:
        resume = (args.run / "checkpoints").is_dir()
        train_synthetic_clip(recipe, args.run, resume=resume, log=print)
    model_dir = args.run / "model"
    trained = SyntheticClipRecipe.load(args.run / "recipe.yaml")
    report = evaluate_synthetic_clip(model_dir, seed=args.eval_seed, num_images=args.num_images)
    if args.candidate:
        report["train_steps"] = trained.train.max_steps
        report["seconds"] = round(time.time() - started, 1)
        (args.run / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        for variant in ("maskclip", "naive", "value"):
            row = report.get(variant, {})
            print(variant, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
        print(f"zero-shot thing accuracy {report['zero_shot_thing_accuracy']:.3f}; metrics in {args.run / 'eval.json'}")
        return
    BUNDLE.mkdir(parents=True, exist_ok=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy2(model_dir / name, BUNDLE / name)
    info = {
        "name": "synthetic-clip",
        "recipe": json.loads(trained.to_json()),
        "train_world_seed": trained.world.seed,
        "eval": report,
        "seconds": round(time.time() - started, 1),
        "regenerate": "python tools/train_reference_clip.py",
    }
    (BUNDLE / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if not isinstance(v, dict)}
    for variant in ("maskclip", "naive", "value"):
        if variant in report:
            summary[variant] = {k: v for k, v in report[variant].items() if k != "per_class_iou"}
    print(json.dumps(summary, indent=2))
    print(f"bundled into {BUNDLE}")


if __name__ == "__main__":
    main()
