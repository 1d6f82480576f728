"""Results read from a training record, and the model card (``README.md``) of a zoo checkpoint.

The card is a Hub model card: YAML metadata (``library_name: seg``, ``pipeline_tag: image-segmentation``,
``license``, ``tags``, ``datasets``, ``base_model`` where an upstream model is on the Hub, and a ``model-index`` of
its results with the protocol signature as each metric's ``config``) and sections saying how to load it, what it
was trained on, how it was measured and what it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seg_core import CheckpointManifest, ZooResult
from seg_zoo.papers import PAPERS

__all__ = ["SYNTHETIC_DATASET", "model_card", "results_from_training"]

SYNTHETIC_DATASET = "seg-synthetic-world"
"""The dataset id results on seg's synthetic world are recorded under."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _world_split(evaluation: Mapping[str, Any]) -> str:
    seeds = evaluation.get("world_seeds")
    split = str(evaluation.get("split", "val"))
    if isinstance(seeds, list) and seeds:
        images = evaluation.get("num_images")
        each = f", {images} images each" if isinstance(images, int) else ""
        return f"{split}, worlds {seeds[0]}-{seeds[-1]}{each}"
    return split


def results_from_training(training: Mapping[str, Any] | None, kind: str) -> tuple[ZooResult, ...]:
    """The evaluation numbers a trainer recorded in ``training.json``: mIoU and, where present, thing/stuff mIoU and
    COCO mask AP / AP50.

    Each recipe writes its evaluation its own way; this reads all of seg's: ``eval.scores`` (GroupViT, PGSeg,
    SimCon, ReCLIP++, ZUTIS), ``eval.held_out.<method>`` (ReCo, ReCo+) and ``eval.maskclip`` (the reference CLIP).
    Returns ``()`` when there is none.
    """
    if not training or not isinstance(training.get("eval"), Mapping):
        return ()
    evaluation: Mapping[str, Any] = training["eval"]
    preset = evaluation.get("preset", "synthetic")
    scores: Any = None
    split = "val"
    if isinstance(evaluation.get("scores"), Mapping):
        scores, split = evaluation["scores"], _world_split(evaluation)
    elif isinstance(evaluation.get("held_out"), Mapping):
        key = {"reco": "reco", "reco-plus": "reco_plus"}.get(kind, kind)
        # ReCo's recipe: "held out" averages the val splits of worlds 1000-1002, 300 images each.
        scores, split = evaluation["held_out"].get(key), "val, worlds 1000-1002, 300 images each"
    elif kind == "clip" and isinstance(evaluation.get("maskclip"), Mapping):
        scores = evaluation["maskclip"]
        seed, images = evaluation.get("world_seed"), evaluation.get("num_images")
        split = f"val, world {seed}, {images} images" if seed is not None else "val"
    if not isinstance(scores, Mapping):
        return ()
    results = []
    metrics = (
        ("mIoU", "mean_iou"),
        ("thing_mIoU", "thing_mean_iou"),
        ("stuff_mIoU", "stuff_mean_iou"),
        ("mask_AP", "mask_ap"),
        ("mask_AP50", "mask_ap50"),
    )
    for key, metric in metrics:
        value = _number(scores.get(key))
        if value is not None:
            results.append(
                ZooResult(
                    dataset=SYNTHETIC_DATASET,
                    split=split,
                    metric=metric,
                    value=value,
                    preset=preset if isinstance(preset, str) else None,
                )
            )
    return tuple(results)


def model_card(manifest: CheckpointManifest, *, repo_id: str | None = None, license: str = "apache-2.0") -> str:
    """The ``README.md`` of a zoo checkpoint: Hub YAML metadata, then how to load, results and provenance.

    Args:
        manifest: The checkpoint's manifest (name, method, results, upstream, training).
        repo_id: The Hub repository it is pushed to (shown in the loading examples).
        license: SPDX id of the weights' license.
    """
    from huggingface_hub import EvalResult, ModelCardData

    name = manifest.name or f"{manifest.method} checkpoint"
    hub_upstream = [
        source.removeprefix("hf-hub:").split("@", 1)[0]
        for source in manifest.upstream.values()
        if source.startswith("hf-hub:")
    ]
    eval_results = [
        EvalResult(
            task_type="image-segmentation",
            dataset_type=result.dataset,
            dataset_name=result.dataset,
            dataset_split=result.split,
            metric_type=result.metric,
            metric_value=result.value,
            metric_name=result.metric,
            metric_config=result.signature or result.preset,
        )
        for result in manifest.results
    ]
    datasets = sorted({result.dataset for result in manifest.results}) or None
    data = ModelCardData(
        license=license,
        library_name="seg",
        pipeline_tag="image-segmentation",
        tags=["seg", manifest.method, "language-guided-segmentation", "open-vocabulary", "safetensors"],
        datasets=datasets,
        base_model=hub_upstream or None,
        model_name=name,
        eval_results=eval_results or None,
    )
    source = f"hf-hub:{repo_id}" if repo_id else (manifest.name or "local-dir:PATH")
    paper = PAPERS.get(manifest.method)
    names = list(manifest.label_names[:3]) or ["cow", "grass", "sky"]
    lines = [f"---\n{data.to_yaml()}\n---", f"# {name}", ""]
    lines.append(
        f"A **{manifest.method}** segmenter of [seg](https://github.com/seg-toolkit/seg), the toolkit for "
        "language-guided segmentation without pixel labels."
        + (f" Method: *{paper.title}* ([arXiv:{paper.arxiv}]({paper.url}))." if paper else "")
    )
    lines += [
        "",
        "## Load it",
        "",
        "```python",
        "import seg_zoo",
        "from seg_core import ConceptSet",
        "",
        f'segmenter = seg_zoo.load("{source}")',
        f"output = segmenter.segment(images, ConceptSet(names={tuple(names)!r}))  # images: [B, 3, H, W] in [0, 1]",
        "labels = output.labels  # [B, H, W] indices into the names",
        "```",
        "",
        f"or from the command line: `seg predict IMAGE --method {manifest.method} --model {source}`.",
        "",
    ]
    if manifest.results:
        lines += ["## Results", "", "| dataset | split | metric | value | protocol |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.dataset} | {r.split} | {r.metric} | {r.value:.3f} | {r.preset or ''} {r.signature or ''} |"
            for r in manifest.results
        ]
        lines.append("")
    if manifest.upstream:
        lines += ["## Upstream weights", ""]
        lines += [f"- {role}: `{source}`" for role, source in sorted(manifest.upstream.items())]
        lines += ["", "They are loaded by name when this checkpoint is loaded; their licenses apply to them.", ""]
    if manifest.label_names:
        lines += ["## Classes", "", ", ".join(manifest.label_names), ""]
    training = manifest.training or {}
    seeds = {key: training[key] for key in ("train_world_seed", "train_seed", "steps") if key in training}
    lines += [
        "## Files",
        "",
        "- `model.safetensors`: the weights.",
        "- `config.json`: what rebuilds the model (architecture, preprocessing, labels, protocol), how it was trained"
        + (f" ({', '.join(f'{k} {v}' for k, v in seeds.items())})" if seeds else "")
        + ", and the sha256 of the weights, checked on load.",
        "",
    ]
    return "\n".join(lines)
