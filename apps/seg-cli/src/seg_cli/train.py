"""``seg train``: train one method with its recipe from seg-trainers."""

from pathlib import Path
from typing import Annotated, Any

import typer

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.params import validate_repo_id
from seg_cli.unavailable import not_available

__all__ = ["TRAINABLE_METHODS", "train"]

TRAINABLE_METHODS = ("reco", "reco-plus", "reclip", "groupvit", "pgseg", "simcon", "zutis")
"""Methods with a recipe ``seg train`` can run."""


def train(
    method: Annotated[
        str,
        typer.Argument(
            callback=validate_method, help=f"Method: {', '.join(METHOD_NAMES)}.", metavar="METHOD", show_default=False
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Recipe config (YAML or JSON); default: the recipe's defaults.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Run folder for checkpoints and logs (default: runs/METHOD).", file_okay=False
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in the run folder.")
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            callback=lambda value: None if value is None else validate_repo_id(value),
            help="After training, publish the model to this Hub repo (namespace/name) as a zoo checkpoint.",
            metavar="REPO_ID",
        ),
    ] = None,
) -> None:
    """Train METHOD with its recipe and write a model folder that `seg eval --model` takes.

    reco: retrieve archives for every concept from the synthetic world's unlabelled split, co-segment them into
    reference embeddings (no gradient steps). reco-plus: pseudo-label the target images with a ReCo model and train
    a DeepLabv3+ on them. reclip: multi-label hypotheses from CLIP on the world's unlabelled images, rectification
    of the frozen CLIP's biases, then distillation into a DeepLab student. groupvit: train GroupViT from scratch on
    the world's image-text pairs (InfoNCE). pgseg: the same with PGSeg's prototype-guidance units and losses.
    simcon: GroupViT (or PGSeg) with the SimCon or multi-view SimCon loss instead of InfoNCE (the recipe's
    loss.kind; init_from fine-tunes a trained GroupViT). zutis: retrieve archives of the world's things, make
    saliency pseudo-masks, and train the text-aligned encoder and the instance decoder on copy-paste images.

    Data-parallel: `torchrun --nproc-per-node N $(which seg) train METHOD ...` (batch_size is per process; rank 0
    writes the run folder, prints and pushes).
    """
    if method not in TRAINABLE_METHODS:
        not_available(f"seg train {method}", f"the {method} issue (its recipe in seg-trainers)")
    from seg_core import ConfigError

    run_dir = out if out is not None else Path("runs") / method
    try:
        if method == "reco":
            model_dir = _train_reco(config, run_dir)
        elif method == "reco-plus":
            model_dir = _train_reco_plus(config, run_dir, resume)
        elif method == "zutis":
            model_dir = _train_zutis(config, run_dir, resume)
        elif method == "reclip":
            model_dir = _train_reclip(config, run_dir, resume)
        else:
            model_dir = _train_grouping(method, config, run_dir, resume)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        stderr_console().print(f"[bold red]seg train {method}:[/] {error}")
        raise typer.Exit(code=1) from None
    from seg_train import distributed_context, shutdown_distributed

    # Under torchrun every rank trained; rank 0 wrote the model folder and alone reports and publishes it.
    is_main = distributed_context().rank == 0
    shutdown_distributed()
    if not is_main:
        return
    stdout_console().print(
        f"{method}: model written to {model_dir}; evaluate it with "
        f"`seg eval --method {method} --model local-dir:{model_dir} --dataset DIR --out results.json`"
    )
    if push_to_hub is not None:
        _publish(method, model_dir, push_to_hub)


def _publish(method: str, model_dir: Path, repo_id: str) -> None:
    """Push a trained model folder to the Hub; the trained folder stays whatever happens."""
    from huggingface_hub.errors import HfHubHTTPError

    import seg_zoo
    from seg_core import ConfigError

    try:
        commit = seg_zoo.push_to_hub(model_dir, repo_id)
    except (ConfigError, HfHubHTTPError, OSError) as error:
        stderr_console().print(
            f"[bold red]seg train {method}:[/] the model is in {model_dir}, but pushing it to {repo_id} failed: "
            f"{error}; retry with `seg zoo push {model_dir} {repo_id}`"
        )
        raise typer.Exit(code=1) from None
    stdout_console().print(
        f"{method}: pushed to {repo_id} (commit {commit[:12]}); load it with --model hf-hub:{repo_id}"
    )


def _stage_bars() -> Any:
    """A ``progress(stage, done, total)`` callback showing one bar per stage."""
    from contextlib import ExitStack

    stack = ExitStack()
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = stack.enter_context(progress_bar(stage, total))
        bars[stage](done, total)

    return stack, progress


def _train_reco(config: Path | None, run_dir: Path) -> Path:
    from seg_cli.segmenters import load_clip_source
    from seg_trainers.reco import ReCoRecipe, build_reco

    recipe = ReCoRecipe() if config is None else ReCoRecipe.load(config)
    clip, recorded = load_clip_source(recipe.clip)
    stack, progress = _stage_bars()
    with stack:
        run = build_reco(recipe, clip, run_dir, clip_source=recorded, progress=progress)
    purity = run.purity.get("<mean>", {})
    stdout_console().print(
        f"archives: {len(run.archive.concepts)} concepts x {recipe.k} images, mean purity "
        + ", ".join(f"P@{k} {value:.2f}" for k, value in sorted(purity.items()))
    )
    return run.model_dir


def _train_reco_plus(config: Path | None, run_dir: Path, resume: bool) -> Path:
    import seg_zoo
    from seg_core import ConceptSet
    from seg_eval.presets import get_preset
    from seg_models.reco import ReCoSegmenter
    from seg_trainers.reco import ReCoPlusRecipe, train_reco_plus

    recipe = ReCoPlusRecipe() if config is None else ReCoPlusRecipe.load(config)
    resolved = seg_zoo.resolve(recipe.reco_model, method="reco")
    reco = seg_zoo.build_resolved(resolved, preset=get_preset("synthetic"))
    assert isinstance(reco, ReCoSegmenter)
    templates = resolved.description().get("recipe", {}).get("templates", "imagenet85")
    concepts = ConceptSet(names=reco.references.names, templates=templates)
    stack, progress = _stage_bars()
    with stack:
        run = train_reco_plus(
            recipe, reco, concepts, run_dir, resume=resume, log=stdout_console().print, progress=progress
        )
    return run.model_dir


def _train_reclip(config: Path | None, run_dir: Path, resume: bool) -> Path:
    from seg_cli.segmenters import load_clip_source
    from seg_trainers.reclip import ReCLIPRecipe, train_reclip

    recipe = ReCLIPRecipe() if config is None else ReCLIPRecipe.load(config)
    clip, recorded = load_clip_source(recipe.clip)
    stack, progress = _stage_bars()
    with stack:
        run = train_reclip(
            recipe, clip, run_dir, clip_source=recorded, resume=resume, log=stdout_console().print, progress=progress
        )
    assert run.model_dir is not None  # every stage ran
    return run.model_dir


def _train_zutis(config: Path | None, run_dir: Path, resume: bool) -> Path:
    from seg_cli.segmenters import load_clip_source
    from seg_trainers.zutis import ZUTISRecipe, train_zutis

    recipe = ZUTISRecipe() if config is None else ZUTISRecipe.load(config)
    recipe.concept_names()  # a bad class name fails here, before any work
    clip, recorded = load_clip_source(recipe.clip)
    stack, progress = _stage_bars()
    with stack:
        run = train_zutis(
            recipe, clip, run_dir, clip_source=recorded, resume=resume, log=stdout_console().print, progress=progress
        )
    iou = run.saliency_iou["<mean>"]
    stdout_console().print(
        f"pseudo-masks: mean IoU {iou['concept']:.3f} against the concepts' ground truth "
        f"(a full-image mask: {iou['all_foreground_concept']:.3f})"
    )
    return run.model_dir


def _train_grouping(method: str, config: Path | None, run_dir: Path, resume: bool) -> Path:
    from seg_trainers.groupvit import GroupViTRecipe, PGSegRecipe, train_groupvit

    if method == "simcon":
        from seg_trainers.simcon import SimConRecipe, train_simcon

        simcon = SimConRecipe() if config is None else SimConRecipe.load(config)
        return train_simcon(simcon, run_dir, resume=resume, log=stdout_console().print).model_dir

    kind = PGSegRecipe if method == "pgseg" else GroupViTRecipe
    recipe = kind() if config is None else kind.load(config)
    run = train_groupvit(recipe, run_dir, resume=resume, log=stdout_console().print)
    return run.model_dir
