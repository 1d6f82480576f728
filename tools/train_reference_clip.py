"""Train (or re-evaluate) the reference synthetic-world CLIP and bundle it into seg-zoo.

    python tools/train_reference_clip.py [--run runs/clip-ref] [--steps 1500] [--skip-train] [--num-images 300]
        [--eval-seed 1000] [--candidate] [--precision bf16|fp32] [--train-seed N] [--p-stuff P]
        [--select-every N [--select-seed 900] [--plot FILE.svg]]

Trains ``seg_trainers.clip.SyntheticClipRecipe`` (resuming an interrupted run), evaluates it on world seed 1000
(never seen in training: the pairs come from seed 0), and writes the fp16 ``local-dir:`` model, its recipe and its
metrics to ``apps/seg-zoo/src/seg_zoo/bundled/synthetic-clip/``. The metrics go into ``docs/benchmarks.md`` by hand.
With ``--candidate`` nothing is bundled: the run's metrics go to ``RUN/eval.json`` (train and compare a candidate
reference CLIP on a selection seed, e.g. ``--eval-seed 900``, before replacing the bundled one, which every
CLIP-based method's bundle was trained with).
With ``--select-every N`` a checkpoint is kept every N steps, each is measured (MaskCLIP, 21 classes) on world
``--select-seed`` and the best one is evaluated and bundled instead of the last (``RUN/selection.json``), as design
study 2 advised; docs/synthetic-world.md reports what that gave. ``--precision fp32`` trains at full speed on a CPU
without native bf16 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from seg_core import ScheduleConfig
from seg_train.checkpoint import list_checkpoints, load_model_weights
from seg_trainers.clip import (
    SyntheticClipRecipe,
    build_synthetic_clip,
    evaluate_synthetic_clip,
    export_local_dir,
    train_synthetic_clip,
)

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
    parser.add_argument(
        "--select-every",
        type=int,
        default=None,
        help="keep a checkpoint every N steps and bundle the one with the best held-out MaskCLIP mIoU",
    )
    parser.add_argument(
        "--p-stuff", type=float, default=None, help="override the training world's share of captions naming the stuff"
    )
    parser.add_argument("--train-seed", type=int, default=None, help="override the recipe's training seed (0)")
    parser.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default=None,
        help="override the recipe's bf16 autocast (fp32 on a CPU without native bf16: AVX512-BF16 or AMX)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="draw the selection curve into this .svg")
    parser.add_argument("--select-seed", type=int, default=900, help="world seed the checkpoint is selected on")
    args = parser.parse_args()
    recipe = SyntheticClipRecipe()
    train_update: dict[str, object] = {
        "max_steps": args.steps,
        "schedule": ScheduleConfig(kind="cosine", warmup_steps=max(args.steps // 20, 1)),
    }
    if args.precision is not None:
        train_update["precision"] = args.precision
    if args.train_seed is not None:
        train_update["seed"] = args.train_seed
    if args.select_every is not None:
        if args.select_seed == args.eval_seed:
            parser.error(f"--select-seed {args.select_seed} equals --eval-seed: select on another world seed")
        train_update["checkpoint_every"] = args.select_every
        train_update["keep_checkpoints"] = args.steps // args.select_every + 1
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update=train_update)})
    if args.p_stuff is not None:
        world = recipe.world.model_validate(recipe.world.model_dump() | {"p_stuff": args.p_stuff})
        recipe = recipe.model_copy(update={"world": world})
    started = time.time()
    if not args.skip_train:
        resume = (args.run / "checkpoints").is_dir()
        train_synthetic_clip(recipe, args.run, resume=resume, log=print)
    model_dir = args.run / "model"
    trained = SyntheticClipRecipe.load(args.run / "recipe.yaml")
    selection: dict[str, Any] | None = None
    if args.select_every is not None:
        model_dir, selection = select_checkpoint(args.run, trained, seed=args.select_seed, num_images=args.num_images)
        if args.plot is not None:
            plot_selection(selection, args.plot)
    report = evaluate_synthetic_clip(model_dir, seed=args.eval_seed, num_images=args.num_images)
    if selection is not None:
        report["selection"] = selection
    if args.candidate:
        report["train_steps"] = trained.train.max_steps
        report["model_dir"] = str(model_dir)
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


def select_checkpoint(
    run: Path, recipe: SyntheticClipRecipe, *, seed: int, num_images: int
) -> tuple[Path, dict[str, Any]]:
    """Export every checkpoint of ``run``, measure its MaskCLIP on world ``seed`` and pick the best mIoU.

    Design study 2 found dense quality swinging by about .1 mIoU between checkpoints of one run and advised picking
    the reference checkpoint by a held-out dense metric. The selection seed must differ from the reported one.
    Returns the chosen ``local-dir:`` folder and the curve (written to ``RUN/selection.json`` as well).
    """
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise SystemExit(f"no checkpoints under {run / 'checkpoints'}: train with --select-every N first")
    curve: list[dict[str, float | int]] = []
    folders: dict[int, Path] = {}
    for step, path in checkpoints:
        clip = build_synthetic_clip(recipe)
        load_model_weights(path, clip.model, device=torch.device("cpu"))
        clip.eval()
        folders[step] = export_local_dir(clip, recipe.model_cfg, run / "selection" / f"step-{step:06d}")
        measured = evaluate_synthetic_clip(folders[step], seed=seed, num_images=num_images, variants=("maskclip",))
        row = measured["maskclip"]
        curve.append(
            {
                "step": step,
                "mIoU": row["mIoU"],
                "thing_mIoU": row["thing_mIoU"],
                "stuff_mIoU": row["stuff_mIoU"],
                "zero_shot_thing_accuracy": measured["zero_shot_thing_accuracy"],
            }
        )
        print(
            f"step {step:5d}: MaskCLIP mIoU {row['mIoU']:.3f} stuff {row['stuff_mIoU']:.3f} "
            f"thing {row['thing_mIoU']:.3f} zero-shot {measured['zero_shot_thing_accuracy']:.3f}"
        )
    best = max(curve, key=lambda entry: entry["mIoU"])
    selection: dict[str, Any] = {
        "metric": "MaskCLIP mIoU (21 classes, val split)",
        "world_seed": seed,
        "num_images": num_images,
        "selected_step": best["step"],
        "curve": curve,
    }
    (run / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    print(f"selected step {best['step']} (MaskCLIP mIoU {best['mIoU']:.3f} on world {seed})")
    return folders[int(best["step"])], selection


def plot_selection(selection: dict[str, Any], path: Path) -> None:
    """The held-out MaskCLIP mIoU, stuff and thing mIoU of every checkpoint, and the one selected."""
    from svgplot import line_plot

    curve = selection["curve"]
    series = {
        label: [(float(entry["step"]), float(entry[key])) for entry in curve]
        for label, key in (("mIoU", "mIoU"), ("stuff mIoU", "stuff_mIoU"), ("thing mIoU", "thing_mIoU"))
    }
    line_plot(
        series,
        path,
        f"Reference CLIP checkpoints, MaskCLIP on world {selection['world_seed']} (selected: step "
        f"{selection['selected_step']})",
        "training step",
        "IoU (21 classes, val)",
        y_range=(0.0, 0.6),
    )


if __name__ == "__main__":
    main()
