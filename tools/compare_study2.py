"""Measure the reference synthetic CLIP the way the pre-project world study 2 measured its checkpoints.

    python tools/compare_study2.py [--world-seed 1000] [--num-images 500] [--model DIR --out FILE]

Study 2 (``shared/docs/reference/synthetic-world-study.md``) trained a CLIP of the same size on a world of 8 things
and 5 stuff and reported MaskCLIP mIoU / stuff / thing over 13 classes on 500 ``val`` images (its recommended
setting, run B, p_stuff .6: .342 / .670 / .137). This project's world has 14 things and 7 stuff, so its 21-class
numbers are not comparable. This script renders images of the project's world that hold only study 2's 8 things
(the other 6 things held out, as for unseen classes), labels study 2's 13 classes (the two extra stuff classes, road
and snow, are ignored), and segments them with the bundled reference CLIP's MaskCLIP among those 13 classes
(``synthetic`` preset: 85 templates; study 2 used one template and found the wording moved mIoU by at most .05).
The images come from the ``pairs`` split of a world seed training never used (held-out classes apply to ``index``
and ``pairs``). Writes ``docs/study2-comparison.json`` (or ``--out``), with the three classes each stuff class's
pixels are most often predicted as (study 2's finding 3: stuff taken over by a thing's text embedding).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from seg_eval.evaluator import image_to_tensor
from seg_eval.metrics.confusion import ConfusionMatrix
from seg_eval.presets import get_preset, preset_concepts
from seg_eval.world import THING_NAMES, WorldConfig
from seg_eval.world.classes import IGNORE_LABEL, label_lookup
from seg_eval.world.scene import render
from seg_models.clip import load_clip
from seg_models.maskclip import MaskCLIPSegmenter
from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

ROOT = Path(__file__).resolve().parent.parent
STUDY2_STUFF = ("sky", "grass", "water", "sand", "wall")
STUDY2_THINGS = ("tomato", "banana", "flower", "duck", "boat", "plane", "cow", "ball")
STUDY2_REPORTED = {
    "run": "B final (p_stuff .6, 12-min cosine, 1,425 steps)",
    "mIoU": 0.342,
    "stuff_mIoU": 0.670,
    "thing_mIoU": 0.137,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-seed", type=int, default=1000)
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--model", type=Path, default=None, help="a local-dir: CLIP folder (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "study2-comparison.json")
    args = parser.parse_args()
    held_out = tuple(name for name in THING_NAMES if name not in STUDY2_THINGS)
    world = WorldConfig(seed=args.world_seed, held_out=held_out)
    names = STUDY2_STUFF + STUDY2_THINGS
    lut = label_lookup(names, others="ignore")
    preset = get_preset("synthetic")
    model = args.model or bundled_model_dir(REFERENCE_CLIP)
    segmenter = MaskCLIPSegmenter(load_clip(f"local-dir:{model}"), preset)
    concepts = preset_concepts(preset, names)
    confusion = ConfusionMatrix(len(names), ignore_index=IGNORE_LABEL)
    with torch.inference_mode():
        for index in range(args.num_images):
            sample = render(world, "pairs", index)
            labels = segmenter.segment(image_to_tensor(sample.image), concepts).labels[0].cpu().numpy()
            confusion.update(labels, lut[sample.semantic])
    metrics = confusion.compute(names)
    ours = {
        "mIoU": metrics.miou,
        "stuff_mIoU": metrics.miou_over(STUDY2_STUFF),
        "thing_mIoU": metrics.miou_over(STUDY2_THINGS),
    }
    per_class = dict(metrics.per_class_iou)
    counts = confusion.counts.double()
    where_stuff_goes = {}  # study 2's finding 3: stuff pixels taken over by a thing's text embedding
    for row, name in enumerate(STUDY2_STUFF):
        shares = counts[row] / counts[row].sum().clamp(min=1)
        top = shares.argsort(descending=True)[:3].tolist()
        where_stuff_goes[name] = {names[column]: round(float(shares[column]), 3) for column in top}
    report = {
        "world": {"seed": args.world_seed, "split": "pairs", "held_out": list(held_out), "num_images": args.num_images},
        "classes": list(names),
        "model": str(model) if args.model else f"bundled:{REFERENCE_CLIP}",
        "reference_clip": ours | {"per_class_iou": per_class, "stuff_pixels_predicted_as": where_stuff_goes},
        "study2": STUDY2_REPORTED,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"reference CLIP on study 2's classes: mIoU {ours['mIoU']:.3f} stuff {ours['stuff_mIoU']:.3f} "
        f"thing {ours['thing_mIoU']:.3f}  (study 2 run B: .342 / .670 / .137)"
    )
    print({name: round(value, 3) for name, value in per_class.items() if value is not None})
    print("stuff pixels predicted as:", where_stuff_goes)


if __name__ == "__main__":
    main()
