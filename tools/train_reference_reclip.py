"""Train and measure ReCLIP++ on the synthetic world: MaskCLIP vs rectified vs distilled, the ablations, the biases.

    python tools/train_reference_reclip.py [--run runs/reclip-ref] [--seeds 0 1 2]
        [--variants reclip no-decoder no-decoder-x100 whole-image add] [--distill-seeds 0] [--eval-seeds 1000 1001 1002]
        [--num-images 300] [--bundle] [--rescore]

Per training seed, every variant trains the rectification stage of :class:`seg_trainers.reclip.ReCLIPRecipe` on
the unlabelled ``index`` images of world seed 0 with the bundled synthetic CLIP (frozen); ``reclip`` is then
distilled into the DeepLab student for the seeds of ``--distill-seeds``. The variants (the paper's Tables III/V):

=====================  ===========================================================================================
``reclip``             ReCLIP++: crop hypotheses, subtracted bias, 5x5 conv + BN mask decoder (the default recipe)
``no-decoder``         the rectified logits ``M`` themselves, no mask decoder
``no-decoder-x100``    the same with the Gumbel input scaled by 100 (the official factor: ``M`` is a cosine, so at
                       scale 1 the Gumbel noise swamps it)
``whole-image``        hypotheses from the whole image (ReCLIP v1's top-k) instead of crops
``add``                bias logits added instead of subtracted
=====================  ===========================================================================================

Each model, and MaskCLIP on the same CLIP (the baseline: the Query logits ``M_q`` alone), is scored on the ``val``
split of worlds it never saw (``--eval-seeds``, ``--num-images`` each) under the ``synthetic`` preset: mIoU, thing and
stuff mIoU, and the paper's two bias scores (Table VII, :mod:`seg_eval.metrics.bias`): class preference from the
confusion matrix and space preference, the slope of object IoU against the distance of the object from the image
centre (objects: the connected components of each ground-truth thing class), with the same objects' slope controlled
for class and visible area (:func:`seg_eval.metrics.bias.controlled_space_slope`, our addition) and, for each model,
95% intervals of both slopes' change against MaskCLIP from a paired bootstrap over the eval images (the per-object
records are kept in ``<stage>-objects.npz``; ``--rescore`` re-scores finished models). Also writes the hypotheses'
precision and recall, and pictures of the bias: ``docs/images/reclip-bias.png`` (query, bias and rectified logits of
one class on one image) and ``docs/images/reclip-space.svg`` (IoU against distance).

Writes ``RUN/<variant>-seed<S>/result.json`` after every model (two processes may share a RUN), then
``RUN/report.json`` and ``docs/methods/reclip-study.json``; with ``--bundle``, copies the distilled student of seed 0
(fp16, with ``training.json``) into ``apps/seg-zoo/src/seg_zoo/bundled/reclip-synthetic``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from svgplot import line_plot

from seg_core import Segmenter
from seg_eval.evaluator import image_to_tensor
from seg_eval.metrics.bias import (
    SpacePreference,
    class_preference_score,
    object_centroid_distances,
    semantic_objects,
    space_preference_score,
)
from seg_eval.metrics.confusion import ConfusionMatrix
from seg_eval.presets import get_preset, preset_concepts
from seg_eval.world import STUFF_NAMES, THING_NAMES, WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_eval.world.classes import palette
from seg_models.clip import ClipModel, load_clip
from seg_models.maskclip import MaskCLIPSegmenter
from seg_models.reclip import ReCLIPRectifier, ReCLIPSegmenter, load_reclip, load_reclip_student
from seg_trainers.reclip import ReCLIPRecipe, train_reclip
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled"
STUDY = ROOT / "docs" / "methods" / "reclip-study.json"
RESULT_FILE = "result.json"
OBJECTS_FILE = "objects.npz"
PRESET = "synthetic"

VARIANTS: dict[str, dict[str, Any]] = {
    "reclip": {},
    "no-decoder": {"model": {"decoder": False}},
    "no-decoder-x100": {"model": {"decoder": False, "logit_scale": 100.0}},
    "whole-image": {"hypotheses": "whole-image"},
    "add": {"model": {"bias": "add"}},
}


def _clip() -> ClipModel:
    return load_clip(f"local-dir:{bundled_model_dir(REFERENCE_CLIP)}")


def _recipe(variant: str, seed: int, distill: bool, args: argparse.Namespace) -> ReCLIPRecipe:
    recipe = ReCLIPRecipe()
    updates = dict(VARIANTS[variant])
    if args.num_train_images is not None:
        updates["num_images"] = args.num_train_images
    model = {**recipe.model, **updates.pop("model", {})}
    steps = {} if args.rectify_steps is None else {"max_steps": args.rectify_steps}
    train = recipe.rectify_train.model_copy(update={"seed": seed, "progress": False} | steps)
    steps = {} if args.distill_steps is None else {"max_steps": args.distill_steps}
    distill_train = recipe.distill_train.model_copy(update={"seed": seed, "progress": False} | steps)
    return ReCLIPRecipe.model_validate(
        recipe.model_dump()
        | updates
        | {
            "model": model,
            "rectify_train": train.model_dump(),
            "distill_train": distill_train.model_dump(),
            "distill": distill,
        }
    )


BOOTSTRAP_SAMPLES = 1000


def _space_scores(objects: dict[str, np.ndarray]) -> tuple[float, float]:
    """The paper's slope and the controlled slope of a set of object records."""
    result = space_preference_score(objects["distance"], objects["iou"], labels=objects["label"], areas=objects["area"])
    assert result.controlled is not None
    return result.score, result.controlled.slope


def _space_readings(objects: Path) -> dict[str, float]:
    """Two more readings of the same objects: the slope fitted to the objects themselves (not to bin means) and
    the mean IoU of objects beyond half the half-diagonal over that of the objects within it."""
    table = dict(np.load(objects))
    keep = np.isfinite(table["iou"]) & np.isfinite(table["distance"])
    distance, iou = table["distance"][keep], table["iou"][keep]
    centred = distance - distance.mean()
    near, far = iou[distance < 0.5], iou[distance >= 0.5]
    return {
        "space_per_object_slope": float(centred @ (iou - iou.mean()) / (centred @ centred)),
        "space_far_near_ratio": float(far.mean() / near.mean()) if near.size and far.size else float("nan"),
    }


def _bootstrap_draws(*objects: Path) -> list[np.ndarray]:
    """Both space slopes (the paper's, the controlled one) of each records file over ``BOOTSTRAP_SAMPLES``
    resamples of the eval images: ``[samples, 2]`` per file, every file resampled by the same draws (paired)."""
    tables = [dict(np.load(path)) for path in objects]
    images = np.unique(tables[0]["image"])
    rows = [{i: np.flatnonzero(table["image"] == i) for i in images} for table in tables]
    generator = np.random.default_rng(0)
    draws: list[list[tuple[float, float]]] = [[] for _ in tables]
    for _ in range(BOOTSTRAP_SAMPLES):
        drawn = generator.choice(images, size=images.size)
        for table, index, out in zip(tables, rows, draws, strict=True):
            pick = np.concatenate([index[i] for i in drawn])
            out.append(_space_scores({k: v[pick] for k, v in table.items()}))
    return [np.asarray(values) for values in draws]


def _interval(draws: np.ndarray, name: str) -> dict[str, list[float]]:
    """95% percentile intervals of the two slopes in ``draws`` (``[samples, 2]``)."""
    low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    return {
        f"space_preference{name}_ci95": [float(low[0]), float(high[0])],
        f"space_controlled{name}_ci95": [float(low[1]), float(high[1])],
    }


def _scores(
    segmenter: Segmenter, datasets: list[RenderedWorldBenchmark], objects: Path | None = None
) -> dict[str, Any]:
    """mIoU, the bias scores and the IoU-distance curve over the eval worlds (pooled objects and pixels).

    With ``objects``, also writes every scored object (eval image, class, distance, area, IoU) there as ``.npz``.
    """
    preset = get_preset(PRESET)
    per_world: list[dict[str, Any]] = []
    space = SpacePreference()
    class_scores: list[float] = []
    image_of_object: list[np.ndarray] = []
    for world, dataset in enumerate(datasets):
        names = tuple(dataset.class_names)
        concepts = preset_concepts(preset, names)
        confusion = ConfusionMatrix(len(names), ignore_index=dataset.ignore_index)
        stuff = [names.index(name) for name in STUFF_NAMES]  # objects are things (the paper's VOC objects)
        with torch.inference_mode():
            for index in range(len(dataset)):
                sample = dataset[index]
                labels = segmenter.segment(image_to_tensor(sample.image), concepts).labels[0].cpu().numpy()
                confusion.update(labels, sample.label)
                before = space.num_objects
                space.update_from_semantic(
                    labels, sample.label, ignore_index=dataset.ignore_index, exclude_classes=stuff
                )
                image_of_object.append(np.full(space.num_objects - before, world * 100_000 + index))
        metrics = confusion.compute(names)
        class_scores.append(class_preference_score(confusion).score)
        per_world.append(
            {
                "mIoU": metrics.miou,
                "thing_mIoU": metrics.miou_over(THING_NAMES),
                "stuff_mIoU": metrics.miou_over(STUFF_NAMES),
                "class_preference": class_scores[-1],
            }
        )
    result = space.compute()
    scores: dict[str, Any] = {
        key: statistics.fmean(world[key] for world in per_world)
        for key in ("mIoU", "thing_mIoU", "stuff_mIoU", "class_preference")
    }
    scores["space_preference"] = result.score
    assert result.controlled is not None
    scores["space_controlled"] = result.controlled.slope
    scores["space_area_coefficient"] = result.controlled.area_coefficient
    scores["space_objects"] = space.num_objects
    scores["space_curve"] = [
        [float(x), float(y)] for x, y in zip(result.bin_centres, result.bin_iou, strict=True) if np.isfinite(y)
    ]
    scores["per_world_mIoU"] = [world["mIoU"] for world in per_world]
    if objects is not None:
        np.savez_compressed(
            objects,
            image=np.concatenate(image_of_object),
            label=space.labels,
            distance=space.distances,
            area=space.areas,
            iou=space.ious,
        )
    return scores


def _baseline(run: Path, clip: ClipModel, datasets: list[RenderedWorldBenchmark]) -> dict[str, Any]:
    path = run / "maskclip" / RESULT_FILE
    if not path.is_file() or not (run / "maskclip" / OBJECTS_FILE).is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        scores = _scores(MaskCLIPSegmenter(clip, get_preset(PRESET)), datasets, run / "maskclip" / OBJECTS_FILE)
        path.write_text(json.dumps({"variant": "maskclip", "scores": scores}, indent=2) + "\n")
        print(f"maskclip: mIoU {scores['mIoU']:.3f}", flush=True)
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _rescore(run_dir: Path, result: dict[str, Any], datasets: list[RenderedWorldBenchmark]) -> bool:
    """Score a finished model again (this script's current scores, with per-object records); False if up to date."""
    done = False
    for stage, folder in (("rectified", "rectifier"), ("distilled", "model")):
        objects = run_dir / f"{stage}-{OBJECTS_FILE}"
        if stage not in result or objects.is_file():
            continue
        model = (
            load_reclip(run_dir / folder, _clip()) if stage == "rectified" else load_reclip_student(run_dir / folder)
        )
        result[stage] = _scores(ReCLIPSegmenter(model, get_preset(PRESET)), datasets, objects)
        done = True
    return done


def _bias_picture(rectifier: ReCLIPRectifier, dataset: RenderedWorldBenchmark, target: Path) -> None:
    """Query, bias and rectified logits of the image's largest thing class on the first eval image with a thing."""
    from PIL import Image

    names = tuple(dataset.class_names)
    things = [names.index(name) for name in THING_NAMES]
    sample = next(dataset[i] for i in range(len(dataset)) if np.isin(dataset[i].label, things).any())
    present = [c for c in things if (sample.label == c).any()]
    cls = max(present, key=lambda c: int((sample.label == c).sum()))
    channel = rectifier.class_names.index(names[cls])
    image = image_to_tensor(sample.image)
    norm = rectifier.normalization
    pixels = (image - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        output = rectifier(pixels)
    maps = [output.query_logits[0, channel], output.bias_logits[0, channel], output.rectified_logits[0, channel]]
    size = sample.image.shape[0] * 2
    tiles = [Image.fromarray(sample.image).resize((size, size), Image.Resampling.NEAREST)]
    for values in maps:
        array = values.float().numpy()
        scaled = (array - array.min()) / max(float(array.max() - array.min()), 1e-8)
        heat = np.stack([scaled, np.zeros_like(scaled), 1 - scaled], axis=-1)
        tile = Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
        tiles.append(tile)
    canvas = Image.new("RGB", (size * len(tiles) + 8 * (len(tiles) - 1), size), "white")
    for index, tile in enumerate(tiles):
        canvas.paste(tile, (index * (size + 8), 0))
    canvas.save(target)
    print(f"bias picture ({names[cls]}): image | query | bias | rectified -> {target}", flush=True)


def _space_examples(
    segmenters: dict[str, Segmenter], dataset: RenderedWorldBenchmark, target: Path, count: int = 4
) -> None:
    """Image, ground truth and each segmenter's labels for the first ``count`` eval images with an off-centre thing.

    "Off-centre": a ground-truth thing whose centroid is more than 0.6 half-diagonals from the image centre (the
    distances where the space-preference curve falls). The images are the first such ones, not chosen by result.
    """
    from PIL import Image, ImageDraw

    names = tuple(dataset.class_names)
    stuff = [names.index(name) for name in STUFF_NAMES]
    concepts = preset_concepts(get_preset(PRESET), names)
    colors = np.frombuffer(palette(), dtype=np.uint8).reshape(256, 3)
    rows: list[list[np.ndarray]] = []
    shown_labels: list[np.ndarray] = []
    for index in range(len(dataset)):
        sample = dataset[index]
        masks, _ = semantic_objects(sample.label, ignore_index=dataset.ignore_index, exclude_classes=stuff)
        if not masks.size or object_centroid_distances(masks).max() <= 0.6:
            continue
        row = [sample.image, colors[sample.label]]
        shown_labels.append(sample.label)
        with torch.inference_mode():
            for segmenter in segmenters.values():
                labels = segmenter.segment(image_to_tensor(sample.image), concepts).labels[0].cpu().numpy()
                row.append(colors[labels.astype(np.uint8)])
                shown_labels.append(labels)
        rows.append(row)
        if len(rows) == count:
            break
    if not rows:
        print(f"space examples: no eval image with a thing past 0.6 half-diagonals; {target} not written", flush=True)
        return
    scale, gap, header, line = 3, 6, 18, 16
    side = rows[0][0].shape[0] * scale
    columns = len(rows[0])
    shown = sorted({int(c) for labels in shown_labels for c in np.unique(labels) if int(c) < len(names)})
    per_line = max(1, (columns * (side + gap)) // 110)
    legend_height = line * -(-len(shown) // per_line) + 6
    width = columns * side + (columns - 1) * gap
    canvas = Image.new("RGB", (width, header + len(rows) * (side + gap) + legend_height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("image", "ground truth", *segmenters)):
        draw.text((c * (side + gap) + 2, 3), title, fill=(20, 20, 20))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            picture = Image.fromarray(np.ascontiguousarray(tile)).resize((side, side), Image.Resampling.NEAREST)
            canvas.paste(picture, (c * (side + gap), header + r * (side + gap)))
    top = header + len(rows) * (side + gap)
    for i, cls in enumerate(shown):
        x, y = (i % per_line) * 110 + 2, top + (i // per_line) * line + 2
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=tuple(int(v) for v in colors[cls]))
        draw.text((x + 14, y), names[cls], fill=(20, 20, 20))
    canvas.save(target)
    print(f"space examples: image | ground truth | {' | '.join(segmenters)} -> {target}", flush=True)


def _summary(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in runs.values():
        for stage in ("rectified", "distilled"):
            if stage in result:
                groups.setdefault(f"{result['variant']} ({stage})", []).append(result[stage])
    table: dict[str, dict[str, float]] = {}
    for key, results in sorted(groups.items()):
        row: dict[str, float] = {"seeds": float(len(results))}
        for metric in ("mIoU", "thing_mIoU", "stuff_mIoU", "class_preference", "space_preference", "space_controlled"):
            values = [r[metric] for r in results if metric in r]
            if not values:
                continue
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table[key] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "reclip-ref")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--distill-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--bundle", action="store_true", help="bundle the distilled student of seed 0 into seg-zoo")
    parser.add_argument(
        "--rescore", action="store_true", help="score finished models again (models without per-object records)"
    )
    parser.add_argument("--num-train-images", type=int, default=None, help="override the recipe's (smoke tests)")
    parser.add_argument("--rectify-steps", type=int, default=None, help="override the recipe's (smoke tests)")
    parser.add_argument("--distill-steps", type=int, default=None, help="override the recipe's (smoke tests)")
    args = parser.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    datasets = [RenderedWorldBenchmark(WorldConfig(seed=s), "val", args.num_images) for s in args.eval_seeds]
    eval_info = {"world_seeds": args.eval_seeds, "split": "val", "num_images": args.num_images, "preset": PRESET}
    clip = _clip()
    baseline = _baseline(args.run, clip, datasets)
    for seed in args.seeds:
        for variant in args.variants:
            key = f"{variant}-seed{seed}"
            run_dir = args.run / key
            distill = variant == "reclip" and seed in args.distill_seeds
            path = run_dir / RESULT_FILE
            result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
            if result and ("distilled" in result or not distill):
                if args.rescore and _rescore(run_dir, result, datasets):
                    path.write_text(json.dumps(result, indent=2) + "\n")
                    print(f"{key}: re-scored", flush=True)
                else:
                    print(f"{key}: done before", flush=True)
                continue
            recipe = _recipe(variant, seed, distill, args)
            started = time.time()
            run = train_reclip(
                recipe, _clip(), run_dir, clip_source=f"bundled:{REFERENCE_CLIP}", resume=True, log=print
            )
            seconds = time.time() - started
            if "rectified" not in result:
                rectifier = load_reclip(run.rectifier_dir, _clip())
                result = {
                    "variant": variant,
                    "seed": seed,
                    "hypotheses": run.hypotheses,
                    "rectified": _scores(
                        ReCLIPSegmenter(rectifier, get_preset(PRESET)), datasets, run_dir / f"rectified-{OBJECTS_FILE}"
                    ),
                }
                if variant == "reclip" and seed == 0:
                    _bias_picture(rectifier, datasets[0], ROOT / "docs" / "images" / "reclip-bias.png")
            result.setdefault("seconds", {}).update(run.seconds | {"total": seconds})
            if distill:
                assert run.model_dir is not None
                student = load_reclip_student(run.model_dir)
                result["distilled"] = _scores(
                    ReCLIPSegmenter(student, get_preset(PRESET)), datasets, run_dir / f"distilled-{OBJECTS_FILE}"
                )
            path.write_text(json.dumps(result, indent=2) + "\n")
            stages = ", ".join(f"{s} {result[s]['mIoU']:.3f}" for s in ("rectified", "distilled") if s in result)
            print(f"{key}: mIoU {stages} in {seconds:.0f} s", flush=True)
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(args.run.glob(f"*-seed*/{RESULT_FILE}"))}
    for key, result in runs.items():
        for stage in ("rectified", "distilled"):
            objects = args.run / key / f"{stage}-{OBJECTS_FILE}"
            if stage in result and objects.is_file():
                before, after = _bootstrap_draws(args.run / "maskclip" / OBJECTS_FILE, objects)
                result[stage] |= _interval(after - before, "_change")
                result[stage] |= _space_readings(objects)
    baseline["scores"] |= _space_readings(args.run / "maskclip" / OBJECTS_FILE)
    baseline["scores"] |= _interval(_bootstrap_draws(args.run / "maskclip" / OBJECTS_FILE)[0], "")
    report = {"eval": eval_info, "maskclip": baseline["scores"], "runs": runs, "summary": _summary(runs)}
    (args.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    STUDY.write_text(json.dumps(report, indent=2) + "\n")
    if (args.run / "reclip-seed0" / "rectifier").is_dir():
        segmenters: dict[str, Segmenter] = {
            "MaskCLIP": MaskCLIPSegmenter(clip, get_preset(PRESET)),
            "ReCLIP++ rectified": ReCLIPSegmenter(
                load_reclip(args.run / "reclip-seed0" / "rectifier", _clip()), get_preset(PRESET)
            ),
        }
        _space_examples(segmenters, datasets[0], ROOT / "docs" / "images" / "reclip-space-examples.png")
    curves = {"MaskCLIP": [tuple(p) for p in baseline["scores"]["space_curve"]]}
    for stage in ("rectified", "distilled"):
        if "reclip-seed0" in runs and stage in runs["reclip-seed0"]:
            curves[f"ReCLIP++ ({stage})"] = [tuple(p) for p in runs["reclip-seed0"][stage]["space_curve"]]
    line_plot(
        curves,
        ROOT / "docs" / "images" / "reclip-space.svg",
        "Object IoU against distance from the image centre (seed 0)",
        "centroid distance / half-diagonal",
        "mean object IoU",
    )
    if args.bundle:
        target = BUNDLED / "reclip-synthetic"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(args.run / "reclip-seed0" / "model", target)
        info = json.loads((target / "training.json").read_text())
        info |= {
            "train_world_seed": 0,
            "train_seed": 0,
            "eval": eval_info | {"scores": runs["reclip-seed0"]["distilled"]},
        }
        (target / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"bundled reclip-seed0 student -> {target}", flush=True)
    base = baseline["scores"]
    print(
        f"{'maskclip':28s} mIoU {base['mIoU']:.3f}  class-pref {base['class_preference']:.3f}"
        f"  space-pref {base['space_preference']:.3f}  controlled {base['space_controlled']:.3f}"
    )
    for key, row in report["summary"].items():
        print(
            f"{key:28s} mIoU {row['mIoU_mean']:.3f} +- {row['mIoU_std']:.3f}  class-pref "
            f"{row['class_preference_mean']:.3f}  space-pref {row['space_preference_mean']:.3f}  controlled "
            f"{row.get('space_controlled_mean', float('nan')):.3f}  ({row['seeds']:.0f})"
        )


if __name__ == "__main__":
    main()
