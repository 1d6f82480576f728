"""Train and measure ZUTIS, its ablations and its baseline on the synthetic world; bundle the reference model.

    python tools/train_reference_zutis.py [--run runs/zutis-ref] [--seeds 0 1 2] [--variants zutis no-stopgrad unseen]
        [--steps 1000] [--eval-seeds 1000 1001 1002] [--num-images 300] [--threads 1] [--bundle]
        [--study docs/methods/zutis-study.json]

Stages (each skipped when its output exists, so an interrupted run resumes):

1. ``RUN/shared``: the archives of the 14 things (retrieval from world 0's ``index`` split) and their saliency
   pseudo-masks, with the masks' IoU against the world's ground truth (``saliency.json``);
2. per variant and training seed, :func:`seg_trainers.zutis.train_zutis` in ``RUN/<variant>-seed<S>`` (the shared
   archives and masks are copied in, so every run trains on the same pseudo-labels):

   ===============  ===================================================================================
   ``zutis``        the default :class:`~seg_trainers.zutis.ZUTISRecipe`
   ``no-stopgrad``  the mask loss also trains the encoder (paper Tables 1-2)
   ``unseen``       archives only for the seen things; the unseen group (``unseen_class_names()``) is never
                    retrieved, pseudo-labelled or trained on (the zero-shot transfer experiment), but unseen things
                    still stand in the backgrounds of the seen things' archive images
   ``unseen-held-   the same with the unseen things held out of the collection itself (world 0 with
   out``            ``held_out``; archives and pseudo-masks in ``RUN/shared-held-out``): no training image shows
                    an unseen thing, the protocol of zero-shot instance segmentation (Zheng et al., CVPR 2021)
                    that the paper's Table 7 follows
   ===============  ===================================================================================

3. evaluation on the ``val`` split of worlds never trained or tuned on (``--eval-seeds``, ``--num-images`` each)
   under the ``synthetic-object`` preset (background + the 14 things, stuff is background): semantic mIoU and
   COCO mask AP / AP50 / AP75, class-aware and class-agnostic, with and without NMS; over the unseen things only
   too, and under the zero-shot protocol of the paper's Table 7 (label set: background + the unseen things). The
   baseline is MaskCLIP on the same CLIP with the "background" prompt, its instances the connected components of its
   label map (:class:`seg_models.proposals.ComponentInstances`).

Writes ``RUN/<run>/result.json`` per model, then ``RUN/report.json`` and ``docs/methods/zutis-study.json``; with
``--bundle``, copies seed 0 of ``zutis`` (fp16, with ``training.json``) into
``apps/seg-zoo/src/seg_zoo/bundled/zutis-synthetic``.
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

from seg_core import Segmenter
from seg_eval.datasets import BackgroundView
from seg_eval.evaluator import InstanceEvaluation, evaluate, image_to_tensor
from seg_eval.metrics.mask_ap import InstancePredictions
from seg_eval.presets import get_preset, preset_concepts
from seg_eval.world import THING_NAMES, WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_eval.world.classes import unseen_class_names
from seg_models.clip import ClipModel, load_clip
from seg_models.maskclip import MaskCLIPSegmenter
from seg_models.proposals import ComponentInstances
from seg_models.zutis import ZUTISSegmenter, load_zutis
from seg_trainers.reco import retrieve_world_archive
from seg_trainers.zutis import PseudoMasks, ZUTISRecipe, build_pseudo_masks, train_zutis
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_FILES = ("archive.json", "purity.json", "pseudo_masks.npz", "saliency.json")
PRESET = "synthetic-object"


def _recipe(variant: str, steps: int, seed: int) -> ZUTISRecipe:
    recipe = ZUTISRecipe()
    train = recipe.train.model_copy(update={"max_steps": steps, "seed": seed, "progress": False})
    updates: dict[str, Any] = {"train": train}
    if variant == "no-stopgrad":
        updates["model"] = recipe.model.model_copy(update={"stop_gradient": False})
    elif variant in ("unseen", "unseen-held-out"):
        unseen = set(unseen_class_names())
        updates["concepts"] = tuple(name for name in THING_NAMES if name not in unseen)
        if variant == "unseen-held-out":
            updates["world"] = recipe.world.model_copy(update={"held_out": unseen_class_names()})
    elif variant != "zutis":
        raise SystemExit(f"unknown variant {variant!r}; choose zutis, no-stopgrad, unseen or unseen-held-out")
    return recipe.model_copy(update=updates)


def _shared(run: Path, clip: ClipModel, recipe: ZUTISRecipe | None = None, folder: str = "shared") -> PseudoMasks:
    """Archives and pseudo-masks of the recipe's concepts in its world (default: every thing in world 0), built once."""
    shared = run / folder
    recipe = recipe or ZUTISRecipe()
    names = recipe.concept_names()
    if not (shared / "pseudo_masks.npz").is_file():
        retrieved = retrieve_world_archive(
            clip,
            recipe.world,
            recipe.collection_size,
            names,
            shared,
            k=recipe.k,
            clip_source=f"bundled:{REFERENCE_CLIP}",
            templates=recipe.templates,
        )
        start = time.perf_counter()
        pseudo = build_pseudo_masks(
            clip, retrieved.collection, {n: retrieved.archive[n].image_ids for n in names}, recipe.saliency
        )
        pseudo.save(shared / "pseudo_masks.npz")
        (shared / "saliency.json").write_text(json.dumps(pseudo.iou, indent=2) + "\n")
        print(f"pseudo-masks in {time.perf_counter() - start:.0f}s: {pseudo.iou['<mean>']}", flush=True)
    return PseudoMasks.load(shared / "pseudo_masks.npz", json.loads((shared / "saliency.json").read_text()))


def _prepare(run_dir: Path, shared: Path, pseudo: PseudoMasks, names: tuple[str, ...]) -> None:
    """Give a run folder the shared archives and the pseudo-masks of its concepts (a subset for ``unseen``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("archive.json", "purity.json"):
        if not (run_dir / name).exists():
            shutil.copy(shared / name, run_dir / name)
    if not (run_dir / "store").exists():
        (run_dir / "store").symlink_to((shared / "store").resolve())
    if (run_dir / "pseudo_masks.npz").exists():
        return
    keep = [pseudo.names.index(name) + 1 for name in names]
    subset = PseudoMasks(
        names=names,
        images={new: pseudo.images[old] for new, old in enumerate(keep, start=1)},
        masks={new: pseudo.masks[old] for new, old in enumerate(keep, start=1)},
        iou={name: pseudo.iou[name] for name in names}
        | {"<mean>": {k: statistics.mean(pseudo.iou[n][k] for n in names) for k in pseudo.iou["<mean>"]}},
    )
    subset.save(run_dir / "pseudo_masks.npz")
    (run_dir / "saliency.json").write_text(json.dumps(subset.iou, indent=2) + "\n")


def _nms_off(segmenter: ZUTISSegmenter) -> ZUTISSegmenter:
    config = segmenter.config.model_copy(update={"nms": False})
    return ZUTISSegmenter(
        segmenter.model,
        segmenter.text_encoder,
        segmenter.preset,
        normalization=segmenter.preset.normalization,
        config=config,
    )


def _scores(segmenter: Segmenter, eval_seeds: list[int], num: int) -> dict[str, Any]:
    """mIoU and mask AP on the eval worlds under ``synthetic-object``; AP over the unseen things too."""
    preset = get_preset(PRESET)
    unseen = set(unseen_class_names())
    per_world: list[dict[str, Any]] = []
    for seed in eval_seeds:
        view = BackgroundView(RenderedWorldBenchmark(WorldConfig(seed=seed), "val", num), preset.class_names or ())
        record = evaluate(segmenter, view, preset=preset, method="", model="", dataset_name="synthetic")
        entry: dict[str, Any] = {
            "mIoU": record.metrics.miou,
            "thing_mIoU": record.metrics.miou_over(THING_NAMES),
            "unseen_mIoU": record.metrics.miou_over(tuple(unseen)),
            "per_class_iou": dict(record.metrics.per_class_iou),
        }
        if record.instance_metrics is not None:
            for kind, result in record.instance_metrics.items():
                entry[kind] = {"AP": result.ap, "AP50": result.ap50, "AP75": result.ap75}
            entry["unseen_class_aware"] = _unseen_ap(segmenter, view, unseen)
        per_world.append(entry)
    return {"per_world": per_world, **_average(per_world)}


def _zsi_scores(segmenter: Segmenter, eval_seeds: list[int], num: int) -> dict[str, Any]:
    """The zero-shot protocol of the paper's Table 7 (after Zheng et al., 2021): the label set is background + the
    unseen things only (seen things are background), so unseen classes do not compete with seen ones."""
    unseen = unseen_class_names()
    preset = get_preset(PRESET).model_copy(update={"name": f"{PRESET}-unseen", "class_names": ("background", *unseen)})
    per_world: list[dict[str, Any]] = []
    for seed in eval_seeds:
        view = BackgroundView(RenderedWorldBenchmark(WorldConfig(seed=seed), "val", num), preset.class_names or ())
        record = evaluate(segmenter, view, preset=preset, method="", model="", dataset_name="synthetic")
        entry: dict[str, Any] = {"mIoU": record.metrics.miou, "unseen_mIoU": record.metrics.miou_over(unseen)}
        if record.instance_metrics is not None:
            aware = record.instance_metrics["class_aware"]
            entry["class_aware"] = {"AP": aware.ap, "AP50": aware.ap50, "AP75": aware.ap75}
        per_world.append(entry)
    out: dict[str, Any] = {
        "per_world": per_world,
        "mIoU": statistics.mean(w["mIoU"] for w in per_world),
        "unseen_mIoU": statistics.mean(w["unseen_mIoU"] for w in per_world),
    }
    if "class_aware" in per_world[0]:
        out["class_aware"] = {
            metric: _mean([w["class_aware"][metric] for w in per_world]) for metric in ("AP", "AP50", "AP75")
        }
    return out


def _unseen_ap(segmenter: Segmenter, view: BackgroundView, unseen: set[str]) -> dict[str, float | None]:
    """Class-aware mask AP over the unseen things only (ground truth and detections of the other things dropped)."""
    names = view.class_names
    concepts = preset_concepts(get_preset(PRESET), names)
    keep = torch.tensor([name in unseen for name in names])
    scores = InstanceEvaluation(names)
    with torch.inference_mode():
        for index in range(len(view)):
            sample = view[index]
            assert sample.instances is not None
            output = segmenter.segment(image_to_tensor(sample.image), concepts)
            assert output.instances is not None
            pred = output.instances[0]
            kept = keep[pred.labels.cpu()]
            target_labels = torch.as_tensor(sample.instances.labels)
            target_kept = keep[target_labels].numpy()
            scores.update(
                InstancePredictions(masks=pred.masks[kept], scores=pred.scores[kept], labels=pred.labels[kept]),
                type(sample.instances)(
                    masks=sample.instances.masks[target_kept], labels=sample.instances.labels[target_kept]
                ),
            )
    result = scores.compute()["class_aware"]
    return {"AP": result.ap, "AP50": result.ap50, "AP75": result.ap75}


def _average(per_world: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("mIoU", "thing_mIoU", "unseen_mIoU"):
        out[key] = statistics.mean(world[key] for world in per_world)
    for kind in ("class_aware", "class_agnostic", "unseen_class_aware"):
        if kind in per_world[0]:
            out[kind] = {
                metric: _mean([world[kind][metric] for world in per_world]) for metric in ("AP", "AP50", "AP75")
            }
    return out


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Mean and spread over training seeds of every variant's headline numbers."""
    out: dict[str, Any] = {}
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for name, result in report["runs"].items():
        by_variant.setdefault(name.rsplit("-seed", 1)[0], []).append(result)
    for variant, results in by_variant.items():
        zsi = [r["zsi"] for r in results if "zsi" in r]
        if zsi:
            out[f"{variant} (zero-shot protocol)"] = {
                "seeds": len(zsi),
                "unseen_mIoU": _spread([z["unseen_mIoU"] for z in zsi]),
                **{
                    f"class_aware_{m}": _spread([z["class_aware"][m] for z in zsi if z["class_aware"][m] is not None])
                    for m in ("AP", "AP50", "AP75")
                    if any(z["class_aware"][m] is not None for z in zsi)
                },
            }
        for mode in ("nms", "no_nms"):
            rows = [r[mode] for r in results if mode in r]
            if not rows:
                continue
            key = variant if mode == "nms" else f"{variant} (no NMS)"
            out[key] = {"seeds": len(rows)}
            for metric in ("mIoU", "thing_mIoU", "unseen_mIoU"):
                out[key][metric] = _spread([row[metric] for row in rows])
            for kind in ("class_aware", "class_agnostic", "unseen_class_aware"):
                for metric in ("AP", "AP50", "AP75"):
                    values = [row[kind][metric] for row in rows if row.get(kind, {}).get(metric) is not None]
                    if values:
                        out[key][f"{kind}_{metric}"] = _spread(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "zutis-ref")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["zutis", "no-stopgrad", "unseen"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bundle", action="store_true")
    parser.add_argument(
        "--study",
        type=Path,
        default=ROOT / "docs" / "methods" / "zutis-study.json",
        help="where the summary goes (a side study, e.g. another --steps, writes its own file)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run: Path = args.run
    clip = load_clip(f"local-dir:{bundled_model_dir(REFERENCE_CLIP)}")
    clip.eval()
    pseudo = _shared(run, clip)
    eval_info = {"preset": PRESET, "worlds": args.eval_seeds, "split": "val", "num_images": args.num_images}

    baseline_path = run / "maskclip" / "result.json"
    if not baseline_path.is_file():
        baseline = ComponentInstances(MaskCLIPSegmenter(clip, get_preset(PRESET)))
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        scores = _scores(baseline, args.eval_seeds, args.num_images)
        zsi = _zsi_scores(baseline, args.eval_seeds, args.num_images)
        baseline_path.write_text(json.dumps({"nms": scores, "zsi": zsi, "eval": eval_info}, indent=2) + "\n")
        print("maskclip", {k: v for k, v in scores.items() if k != "per_world"}, flush=True)

    for seed in args.seeds:
        for variant in args.variants:
            run_dir = run / f"{variant}-seed{seed}"
            result_path = run_dir / "result.json"
            if result_path.is_file():
                continue
            recipe = _recipe(variant, args.steps, seed)
            if variant == "unseen-held-out":  # its own collection: world 0 without the unseen things
                held_out = _shared(run, clip, recipe, "shared-held-out")
                _prepare(run_dir, run / "shared-held-out", held_out, recipe.concept_names())
            else:
                _prepare(run_dir, run / "shared", pseudo, recipe.concept_names())
            start = time.perf_counter()
            trained = train_zutis(
                recipe, clip, run_dir, clip_source=f"bundled:{REFERENCE_CLIP}", resume=True, log=print
            )
            seconds = time.perf_counter() - start
            segmenter = load_zutis(trained.model_dir, clip, get_preset(PRESET))
            result = {
                "variant": variant,
                "seed": seed,
                "steps": args.steps,
                "train_seconds": seconds,
                "last": trained.result.last_record,
                "nms": _scores(segmenter, args.eval_seeds, args.num_images),
                "no_nms": _scores(_nms_off(segmenter), args.eval_seeds, args.num_images),
                "zsi": _zsi_scores(segmenter, args.eval_seeds, args.num_images),
                "eval": eval_info,
            }
            result_path.write_text(json.dumps(result, indent=2) + "\n")
            print(variant, seed, {k: v for k, v in result["nms"].items() if k != "per_world"}, flush=True)

    for path in sorted(run.glob("*/result.json")):  # results written before the zero-shot protocol was added
        result = json.loads(path.read_text())
        if "zsi" in result:
            continue
        scored: Segmenter
        if path.parent.name == "maskclip":
            scored = ComponentInstances(MaskCLIPSegmenter(clip, get_preset(PRESET)))
        else:
            scored = load_zutis(path.parent / "model", clip, get_preset(PRESET))
        result["zsi"] = _zsi_scores(scored, args.eval_seeds, args.num_images)
        path.write_text(json.dumps(result, indent=2) + "\n")

    runs = {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(run.glob("*/result.json"))
        if path.parent.name != "maskclip"
    }
    report = {
        "eval": eval_info,
        "saliency_iou": pseudo.iou,
        "maskclip": json.loads(baseline_path.read_text())["nms"],
        "maskclip_zsi": json.loads(baseline_path.read_text())["zsi"],
        "runs": runs,
    }
    report["summary"] = _summary(report)
    (run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    study = {key: report[key] for key in ("eval", "summary")} | {
        "saliency_iou": pseudo.iou["<mean>"],
        "maskclip": {k: v for k, v in report["maskclip"].items() if k != "per_world"},
        "maskclip_zsi": {k: v for k, v in report["maskclip_zsi"].items() if k != "per_world"},
    }
    args.study.write_text(json.dumps(study, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    if args.bundle:
        source = run / "zutis-seed0" / "model"
        target = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled" / "zutis-synthetic"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        _record_eval(target / "training.json", report)
        print(f"bundled {source} -> {target}")


def _record_eval(training_file: Path, report: dict[str, Any]) -> None:
    """Write seed 0's measured numbers into the bundle's ``training.json`` (the zoo's results and model card)."""
    scores = report["runs"]["zutis-seed0"]["nms"]
    training = json.loads(training_file.read_text())
    training["eval"] = {
        "world_seeds": report["eval"]["worlds"],
        "split": report["eval"]["split"],
        "num_images": report["eval"]["num_images"],
        "preset": report["eval"]["preset"],
        "scores": {
            "mIoU": scores["mIoU"],
            "thing_mIoU": scores["thing_mIoU"],
            "mask_AP": scores["class_aware"]["AP"],
            "mask_AP50": scores["class_aware"]["AP50"],
            "mask_AP75": scores["class_aware"]["AP75"],
        },
        "source": "tools/train_reference_zutis.py (report.json, run zutis-seed0)",
    }
    training_file.write_text(json.dumps(training, indent=2) + "\n")


if __name__ == "__main__":
    main()
