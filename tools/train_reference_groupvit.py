"""Train and measure GroupViT, PGSeg and PGSeg's ablations on the synthetic world; bundle the reference models.

    python tools/train_reference_groupvit.py [--run runs/groupvit-ref] [--seeds 0 1 2] [--variants groupvit pgseg]
        [--base-steps 1500] [--continue-steps 0] [--steps 500] [--lr 2e-4] [--eval-seeds 1000 1001 1002]
        [--num-images 300] [--bundle]

The official PGSeg protocol, at equal cost for every variant: per training seed, one GroupViT is trained from
scratch (``RUN/base-seed<S>``, the default :class:`seg_trainers.groupvit.GroupViTRecipe`, ``--base-steps``); with
``--continue-steps N`` it is trained N more steps on the next batches with a fresh cosine schedule at the recipe's
learning rate (``RUN/base-seed<S>-continued``: how the 4,000-step bases of docs/methods/pgseg.md were made, 1,500 +
2,500). Then every variant starts from the (continued) base (``init_from``) and trains ``--steps`` more steps on the
next, unseen batches (``data_offset``) at learning rate ``--lr`` with the PG losses on from the first step -- the
GroupViT baseline with InfoNCE alone, PGSeg and its ablations with their units (``RUN/<variant>-seed<S>``). An
interrupted run resumes, a finished one is reused. The variants:

========================  ====================================================================================
``groupvit``              GroupViT, InfoNCE only (the baseline)
``pgseg``                 PGSeg: I-NPR + T-NPR + HRS (the default PGSegRecipe)
``pgseg-inpr``            I-NPR only, no HRS (paper Table 4, row 2)
``pgseg-inpr-tnpr``       I-NPR + T-NPR, no HRS (Table 4, row 3)
``pgseg-inpr-hrs``        I-NPR + HRS, no T-NPR (Table 4, row 4)
``pgseg-q-half``          I-NPR + T-NPR, no HRS, half as many prototypes as groups (Table 5)
``pgseg-q-double``        I-NPR + T-NPR, no HRS, twice as many prototypes as groups (Table 5)
``pgseg-official-match``  PGSeg with the official code's minimising Hungarian call
``pgseg-minmax``          PGSeg with the official code's min-max normalised hard rejection
``groupvit-lr1e-4``       GroupViT, InfoNCE only, at the released config's learning rate 1e-4
``pgseg-lr1e-4-minmax``   PGSeg at the released config's learning rate 1e-4 with min-max hard rejection
========================  ====================================================================================

Each model is evaluated on the ``val`` split of worlds it never saw (``--eval-seeds``, ``--num-images`` each;
mIoU / thing / stuff averaged over the worlds) with ``GroupViTSegmenter`` under the ``synthetic`` preset, and
diagnosed on the first eval world (paper Sec. 5.3, "two benefits of NPR"):

- *richness*: for each first-stage group token, the variance of its channels (mean over images); the paper's
  Fig. 6 finds it larger with NPR; also the variance of each channel across images (dimensional collapse);
- *compactness*: the mean cosine between each first-stage input token and the mean of the tokens hard-assigned to
  the same group (higher: tighter clusters; the paper shows t-SNE plots).

Writes ``RUN/<run>/result.json`` after every run (nothing is lost when stopped; two processes may share a RUN, e.g.
one training the bases and the main variants and one the ablations with ``--wait-for-base``), then collects them
into ``RUN/report.json``, ``docs/methods/pgseg-study.json`` and the plot ``docs/images/pgseg-richness.svg``; with
``--bundle``, copies seed 0 of ``groupvit`` and ``pgseg`` (fp16) with ``training.json`` into
``apps/seg-zoo/src/seg_zoo/bundled/{groupvit-synthetic,pgseg-synthetic}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from svgplot import line_plot

from seg_eval.evaluator import evaluate, image_to_tensor
from seg_eval.presets import get_preset
from seg_eval.world import STUFF_NAMES, THING_NAMES, WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark
from seg_models.groupvit import GroupViT, GroupViTSegmenter, load_groupvit
from seg_models.inference import normalize_images
from seg_models.pgseg import load_pgseg
from seg_trainers.groupvit import GroupViTRecipe, PGSegRecipe, train_groupvit

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "apps" / "seg-zoo" / "src" / "seg_zoo" / "bundled"
STUDY = ROOT / "docs" / "methods" / "pgseg-study.json"
RESULT_FILE = "result.json"


def _pgseg(model: dict[str, Any] | None = None, pg: dict[str, Any] | None = None) -> PGSegRecipe:
    recipe = PGSegRecipe()
    return recipe.model_copy(
        update={"model": recipe.model.model_copy(update=model or {}), "pg": recipe.pg.model_copy(update=pg or {})}
    )


def _groups() -> tuple[int, ...]:
    return PGSegRecipe().groupvit_config().vision.num_output_groups


VARIANTS: dict[str, Callable[[], GroupViTRecipe]] = {
    "groupvit": GroupViTRecipe,
    "pgseg": PGSegRecipe,
    "pgseg-inpr": lambda: _pgseg({"text_npr": False}, {"reject_threshold": None}),
    "pgseg-inpr-tnpr": lambda: _pgseg(None, {"reject_threshold": None}),
    "pgseg-inpr-hrs": lambda: _pgseg({"text_npr": False}),
    "pgseg-q-half": lambda: _pgseg(
        {"num_prototypes": tuple(max(g // 2, 1) for g in _groups())}, {"reject_threshold": None}
    ),
    "pgseg-q-double": lambda: _pgseg({"num_prototypes": tuple(2 * g for g in _groups())}, {"reject_threshold": None}),
    "pgseg-official-match": lambda: _pgseg(None, {"match": "min"}),
    "pgseg-minmax": lambda: _pgseg(None, {"rejection": "minmax"}),
    "groupvit-lr1e-4": GroupViTRecipe,
    "pgseg-lr1e-4-minmax": lambda: _pgseg(None, {"rejection": "minmax"}),
}
# Variants with their own learning rate (the released PGSeg config's base_lr 1e-4); the others take ``--lr``.
VARIANT_LR: dict[str, float] = {"groupvit-lr1e-4": 1e-4, "pgseg-lr1e-4-minmax": 1e-4}


def _with_steps_and_seed(
    recipe: GroupViTRecipe, steps: int | None, seed: int, lr: float | None = None
) -> GroupViTRecipe:
    updates: dict[str, Any] = {"seed": seed}
    if steps is not None:
        warmup = min(recipe.train.schedule.warmup_steps, max(steps // 20, 1))
        updates |= {"max_steps": steps, "schedule": recipe.train.schedule.model_copy(update={"warmup_steps": warmup})}
    if lr is not None:
        updates["lr"] = lr
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=updates)})


def _fine_tune(recipe: GroupViTRecipe, base: Path, base_steps: int) -> GroupViTRecipe:
    """Start from the seed's base GroupViT on the batches after its own, PG losses on from the first step."""
    updates: dict[str, Any] = {"init_from": str(base), "data_offset": base_steps}
    if isinstance(recipe, PGSegRecipe):
        updates["pg"] = recipe.pg.model_copy(update={"start": 0.0})
    return recipe.model_copy(update=updates)


def _continue_base(
    *,
    run: Path,
    base_dir: Path,
    base_steps: int,
    seed: int,
    steps: int,
    datasets: list[RenderedWorldBenchmark],
    wait: bool,
) -> tuple[Path, int]:
    """Train the seed's base ``steps`` more on the batches after its own; its folder and total steps."""
    target = run / f"base-seed{seed}-continued"
    while wait and not (target / RESULT_FILE).is_file():
        time.sleep(30)
    if not (target / RESULT_FILE).is_file():
        recipe = _with_steps_and_seed(GroupViTRecipe(), steps, seed)
        recipe = recipe.model_copy(update={"init_from": str(base_dir / "model"), "data_offset": base_steps})
        started = time.time()
        train_groupvit(recipe, target, resume=(target / "checkpoints").is_dir(), log=print)
        seconds = time.time() - started
        result: dict[str, Any] = {
            "variant": "base-continued",
            "seed": seed,
            "steps": base_steps + steps,
            "train_seconds": seconds,
            "scores": _scores(load_groupvit(target / "model"), datasets, f"base-seed{seed}-continued"),
        }
        (target / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
        print(f"base-seed{seed}-continued: mIoU {result['scores']['mIoU']:.3f} in {seconds:.0f} s", flush=True)
    return target, base_steps + steps


def _load(variant: str, folder: Path) -> GroupViT:
    return load_pgseg(folder) if isinstance(VARIANTS[variant](), PGSegRecipe) else load_groupvit(folder)


def _mean_present(values: list[float | None]) -> float | None:
    """Mean over the worlds where the class occurs (its IoU is ``None`` where it does not)."""
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _scores(model: GroupViT, datasets: list[RenderedWorldBenchmark], name: str) -> dict[str, Any]:
    preset = get_preset("synthetic").model_copy(update={"normalization": model.config.normalization})
    segmenter = GroupViTSegmenter(model, preset)
    per_world: list[dict[str, Any]] = []
    for dataset in datasets:
        metrics = evaluate(segmenter, dataset, preset=preset, method=name, model=name, dataset_name="synthetic").metrics
        per_world.append(
            {
                "mIoU": metrics.miou,
                "thing_mIoU": metrics.miou_over(THING_NAMES),
                "stuff_mIoU": metrics.miou_over(STUFF_NAMES),
                "per_class_iou": dict(metrics.per_class_iou),
            }
        )
    scores: dict[str, Any] = {
        key: statistics.fmean(world[key] for world in per_world) for key in ("mIoU", "thing_mIoU", "stuff_mIoU")
    }
    scores["per_world_mIoU"] = [world["mIoU"] for world in per_world]
    names = per_world[0]["per_class_iou"].keys()
    scores["per_class_iou"] = {name: _mean_present([w["per_class_iou"][name] for w in per_world]) for name in names}
    return scores


@torch.no_grad()
def _diagnostics(model: GroupViT, dataset: RenderedWorldBenchmark, batch: int = 50) -> dict[str, Any]:
    """Richness of the first-stage group tokens and compactness of the first-stage token clusters.

    - ``richness_per_group``: for each first-stage group token (after the stage's blocks), the variance over its
      channels, averaged over the images (the paper's Fig. 6 reading); ``richness`` is its mean over the tokens.
    - ``dimension_variance``: the variance of each channel of a group token across images, averaged over channels
      and tokens (the dimensional-collapse reading: larger is less collapsed).
    - ``compactness``: mean cosine between each first-stage input token and the mean direction of the tokens
      hard-assigned to the same group.
    """
    model.eval()
    normalization = model.config.normalization
    tokens_per_image: list[torch.Tensor] = []
    compactness: list[float] = []
    for start in range(0, len(dataset), batch):
        images = torch.cat([image_to_tensor(dataset[i].image) for i in range(start, min(start + batch, len(dataset)))])
        vision = model.vision_features(normalize_images(images, normalization.mean, normalization.std))
        stage = vision.stages[0]
        assert stage.group_tokens is not None
        assert stage.assignment is not None
        tokens_per_image.append(stage.group_tokens)  # [B, S, C]
        tokens = F.normalize(stage.input_tokens, dim=-1)  # [B, N, C]
        hard = stage.assignment  # [B, N, G], one-hot in eval
        means = F.normalize(hard.transpose(1, 2) @ tokens, dim=-1)  # [B, G, C] group mean directions
        own = (hard @ means * tokens).sum(dim=-1)  # [B, N]: cosine to the own group's mean
        compactness.append(float(own.mean()))
    group_tokens = torch.cat(tokens_per_image)  # [images, S, C]
    richness = group_tokens.var(dim=-1).mean(dim=0)  # [S]
    return {
        "richness_per_group": richness.tolist(),
        "richness": float(richness.mean()),
        "dimension_variance": float(group_tokens.var(dim=0).mean()),
        "compactness": statistics.fmean(compactness),
    }


def _summary(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for result in runs.values():
        by_variant.setdefault(result["variant"], []).append(result)
    for variant, results in by_variant.items():
        row: dict[str, float] = {"seeds": float(len(results))}
        for key in ("mIoU", "thing_mIoU", "stuff_mIoU", "richness", "dimension_variance", "compactness"):
            values = [r["scores"][key] if key in r["scores"] else r["diagnostics"][key] for r in results]
            row[f"{key}_mean"] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table[variant] = row
    return table


def _collect(run: Path, eval_info: dict[str, Any]) -> dict[str, Any]:
    """Every finished run's ``result.json`` under ``run``, with the summary table."""
    runs: dict[str, dict[str, Any]] = {}
    base: dict[str, dict[str, Any]] = {}
    for path in sorted(run.glob(f"*/{RESULT_FILE}")):
        result = json.loads(path.read_text())
        if result["variant"] == "base":
            base[str(result["seed"])] = result
        elif result["variant"] == "base-continued":
            base[f"{result['seed']}-continued"] = result
        else:
            runs[path.parent.name] = result
    return {"eval": eval_info, "base": base, "runs": runs, "summary": _summary(runs)}


def _bundle(variant: str, name: str, run_dir: Path, result: dict[str, Any], eval_info: dict[str, Any]) -> None:
    target = BUNDLED / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run_dir / "model", target)
    info = json.loads((target / "training.json").read_text())
    info |= {"train_world_seed": 0, "train_seed": result["seed"], "eval": eval_info | {"scores": result["scores"]}}
    (target / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"bundled {variant} seed {result['seed']} -> {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "groupvit-ref")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["groupvit", "pgseg"], choices=sorted(VARIANTS))
    parser.add_argument("--base-steps", type=int, default=None, help="base GroupViT steps (default: the recipe's)")
    parser.add_argument(
        "--continue-steps", type=int, default=0, help="continue each base this many steps (fresh schedule)"
    )
    parser.add_argument("--steps", type=int, default=500, help="steps of every variant after the base")
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate of the variants")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--bundle", action="store_true", help="bundle seed 0 of groupvit and pgseg into seg-zoo")
    parser.add_argument(
        "--wait-for-base", action="store_true", help="wait for another process to train each seed's base model"
    )
    args = parser.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    datasets = [RenderedWorldBenchmark(WorldConfig(seed=s), "val", args.num_images) for s in args.eval_seeds]
    eval_info = {"world_seeds": args.eval_seeds, "split": "val", "num_images": args.num_images, "preset": "synthetic"}
    for seed in args.seeds:
        base_recipe = _with_steps_and_seed(GroupViTRecipe(), args.base_steps, seed)
        base_dir = args.run / f"base-seed{seed}"
        if args.wait_for_base:
            while not (base_dir / RESULT_FILE).is_file():
                time.sleep(30)
        elif not (base_dir / RESULT_FILE).is_file():
            started = time.time()
            train_groupvit(base_recipe, base_dir, resume=(base_dir / "checkpoints").is_dir(), log=print)
            seconds = time.time() - started
            base = {
                "variant": "base",
                "seed": seed,
                "steps": base_recipe.train.max_steps,
                "train_seconds": seconds,
                "scores": _scores(load_groupvit(base_dir / "model"), datasets, f"base-seed{seed}"),
            }
            (base_dir / RESULT_FILE).write_text(json.dumps(base, indent=2) + "\n")
            print(f"base-seed{seed}: mIoU {base['scores']['mIoU']:.3f} in {seconds:.0f} s", flush=True)
        base_steps = base_recipe.train.max_steps
        if args.continue_steps:
            base_dir, base_steps = _continue_base(
                run=args.run,
                base_dir=base_dir,
                base_steps=base_steps,
                seed=seed,
                steps=args.continue_steps,
                datasets=datasets,
                wait=args.wait_for_base,
            )
        for variant in args.variants:
            key = f"{variant}-seed{seed}"
            run_dir = args.run / key
            if (run_dir / RESULT_FILE).is_file():
                print(f"{key}: done before", flush=True)
                continue
            recipe = _with_steps_and_seed(VARIANTS[variant](), args.steps, seed, VARIANT_LR.get(variant, args.lr))
            recipe = _fine_tune(recipe, base_dir / "model", base_steps)
            started = time.time()
            run = train_groupvit(recipe, run_dir, resume=(run_dir / "checkpoints").is_dir(), log=print)
            seconds = time.time() - started
            model = _load(variant, run.model_dir)
            result = {
                "variant": variant,
                "seed": seed,
                "base_steps": base_steps,
                "steps": run.result.final_step,
                "train_seconds": seconds,
                "last_record": run.result.last_record,
                "scores": _scores(model, datasets, key),
                "diagnostics": _diagnostics(model, datasets[0]),
            }
            (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            print(f"{key}: mIoU {result['scores']['mIoU']:.3f} in {seconds:.0f} s", flush=True)
    report = _collect(args.run, eval_info)
    (args.run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    STUDY.write_text(json.dumps(report, indent=2) + "\n")
    series = {}
    for variant in ("groupvit", "pgseg"):
        curves = [r["diagnostics"]["richness_per_group"] for r in report["runs"].values() if r["variant"] == variant]
        if curves:
            mean = [statistics.fmean(values) for values in zip(*curves, strict=True)]
            series[variant] = [(float(index), value) for index, value in enumerate(mean)]
    if series:
        line_plot(
            series,
            ROOT / "docs" / "images" / "pgseg-richness.svg",
            "Channel variance of each first-stage group token (mean over seeds)",
            "group token",
            "variance over channels",
        )
    if args.bundle:
        for variant, name in (("groupvit", "groupvit-synthetic"), ("pgseg", "pgseg-synthetic")):
            result = report["runs"][f"{variant}-seed0"]
            _bundle(variant, name, args.run / f"{variant}-seed0", result, eval_info)
    for variant, row in report.get("summary", {}).items():
        print(
            f"{variant:22s} mIoU {row['mIoU_mean']:.3f} +- {row['mIoU_std']:.3f}  things {row['thing_mIoU_mean']:.3f}"
            f"  stuff {row['stuff_mIoU_mean']:.3f}  richness {row['richness_mean']:.4f}"
            f"  compactness {row['compactness_mean']:.3f}  ({row['seeds']:.0f} seeds)"
        )


if __name__ == "__main__":
    main()
