"""ReCo on the synthetic world: the paper's Table 1 ablation, context elimination per class, archive purity vs k.

    python tools/reco_study.py [--run runs/reco-study] [--eval-seeds 1000 1001 1002] [--num-images 300]

Builds ReCo three times from world seed 0 (plain co-segmentation; + language guidance; + context elimination) with
the bundled reference CLIP, then evaluates on worlds never used to build or tune anything:

1. without DenseCLIP (Eq. 2 only), plain co-segmentation;
2. with DenseCLIP (Eq. 3);
3. + language-guided co-segmentation;
4. + context elimination (the world's stuff classes are the context concepts);
5. + dense CRF.

Writes ``docs/methods/reco-study.json`` and the purity plot ``docs/images/reco-purity.svg``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from svgplot import line_plot

from seg_core import ProtocolPreset
from seg_coseg.context import CoSegConfig
from seg_eval.evaluator import evaluate
from seg_eval.presets import get_preset
from seg_eval.world import STUFF_NAMES, THING_NAMES, WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_models.clip import load_clip
from seg_models.maskclip import MaskCLIPSegmenter
from seg_models.reco import ReCoOptions
from seg_trainers.reco import ReCoRecipe, build_reco, load_reco
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

ROOT = Path(__file__).resolve().parent.parent


def _scores(segmenter: Any, dataset: RenderedWorldBenchmark, preset: ProtocolPreset) -> dict[str, Any]:
    metrics = evaluate(segmenter, dataset, preset=preset, method="x", model="x", dataset_name="synthetic").metrics
    return {
        "mIoU": metrics.miou,
        "thing_mIoU": metrics.miou_over(THING_NAMES),
        "stuff_mIoU": metrics.miou_over(STUFF_NAMES),
        "per_class_iou": dict(metrics.per_class_iou),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "reco-study")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--num-images", type=int, default=300)
    args = parser.parse_args()
    clip = load_clip(f"local-dir:{bundled_model_dir(REFERENCE_CLIP)}")
    preset = get_preset("synthetic")
    crf = preset.model_copy(update={"refinement": "crf"})
    builds = {
        "plain": CoSegConfig(language_guided=False, context_elimination=False),
        "language": CoSegConfig(context_elimination=False),
        "context": CoSegConfig(context_concepts=STUFF_NAMES),
    }
    folders = {}
    purity: dict[str, Any] = {}
    for name, coseg in builds.items():
        run = build_reco(ReCoRecipe(coseg=coseg), clip, args.run / name, clip_source=f"bundled:{REFERENCE_CLIP}")
        folders[name] = run.model_dir
        purity = run.purity
        print(f"built {name}", flush=True)
    rows: dict[str, tuple[str, ReCoOptions, ProtocolPreset]] = {
        "1 w/o DenseCLIP": ("plain", ReCoOptions(dense_clip=False), preset),
        "2 + DenseCLIP": ("plain", ReCoOptions(), preset),
        "3 + language-guided co-seg": ("language", ReCoOptions(), preset),
        "4 + context elimination": ("context", ReCoOptions(), preset),
        "5 + CRF": ("context", ReCoOptions(), crf),
    }
    results: dict[str, Any] = {"eval_seeds": args.eval_seeds, "num_images": args.num_images, "rows": {}}
    for seed in args.eval_seeds:
        dataset = RenderedWorldBenchmark(WorldConfig(seed=seed), "val", args.num_images)
        per_seed = {"maskclip": _scores(MaskCLIPSegmenter(clip, preset), dataset, preset)}
        for row, (build, options, row_preset) in rows.items():
            per_seed[row] = _scores(load_reco(folders[build], clip, row_preset, options=options), dataset, row_preset)
            print(seed, row, round(per_seed[row]["mIoU"], 3), flush=True)
        results["rows"][str(seed)] = per_seed
    summary: dict[str, dict[str, Any]] = {}
    for row in ["maskclip", *rows]:
        summary[row] = {}
        for key in ("mIoU", "thing_mIoU", "stuff_mIoU"):
            values = [results["rows"][str(seed)][row][key] for seed in args.eval_seeds]
            summary[row][key] = statistics.fmean(values)
            summary[row][f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        classes = results["rows"][str(args.eval_seeds[0])][row]["per_class_iou"]
        summary[row]["per_class_iou"] = {
            name: statistics.fmean(results["rows"][str(seed)][row]["per_class_iou"][name] for seed in args.eval_seeds)
            for name in classes
        }
    results["summary"] = summary
    results["purity"] = purity
    out = ROOT / "docs" / "methods" / "reco-study.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    ks = sorted(int(k) for k in purity["<mean>"])
    series: dict[str, list[tuple[int, float]]] = {}
    for name in ("<mean>", "water", "plane", "snow", "cow"):
        table = {int(k): float(v) for k, v in purity[name].items()}
        series[name.strip("<>")] = [(k, table[k]) for k in ks]
    line_plot(
        {name: [(float(k), value) for k, value in points] for name, points in series.items()},
        ROOT / "docs" / "images" / "reco-purity.svg",
        "ReCo archive purity vs k (world seed 0)",
        "k (archive size)",
        "precision@k",
        y_range=(0.0, 1.0),
    )
    for row, scores in summary.items():
        print(f"{row:32s} {scores['mIoU']:.3f} ± {scores['mIoU_std']:.3f}  thing {scores['thing_mIoU']:.3f}")


if __name__ == "__main__":
    main()
