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


def _svg_lines(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """A small dependency-free line plot (x: k, y: precision in [0, 1])."""
    width, height, margin = 560, 320, 48
    xs = sorted({x for points in series.values() for x, _ in points})
    x_max = max(xs)

    def px(x: float) -> float:
        return margin + (width - 2 * margin) * x / x_max

    def py(y: float) -> float:
        return height - margin - (height - 2 * margin) * y

    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{margin}" y1="{py(0)}" x2="{width - margin}" y2="{py(0)}" stroke="black"/>',
        f'<line x1="{margin}" y1="{py(0)}" x2="{margin}" y2="{py(1)}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">k (archive size)</text>',
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">'
        "precision@k</text>",
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{margin - 6}" y="{py(tick) + 4}" text-anchor="end">{tick:.2f}</text>')
        parts.append(f'<line x1="{margin}" y1="{py(tick)}" x2="{width - margin}" y2="{py(tick)}" stroke="#ddd"/>')
    for x in xs:
        parts.append(f'<text x="{px(x)}" y="{py(0) + 16}" text-anchor="middle">{x}</text>')
    for number, (name, points) in enumerate(series.items()):
        colour = colours[number % len(colours)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - margin + 4}" y="{py(points[-1][1]) + 4 + 12 * number}" fill="{colour}">')
        parts.append(f"{name}</text>")
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


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
    _svg_lines(series, ROOT / "docs" / "images" / "reco-purity.svg", "ReCo archive purity vs k (world seed 0)")
    for row, scores in summary.items():
        print(f"{row:32s} {scores['mIoU']:.3f} ± {scores['mIoU_std']:.3f}  thing {scores['thing_mIoU']:.3f}")


if __name__ == "__main__":
    main()
