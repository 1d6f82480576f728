"""Training the reference synthetic-world CLIP from scratch.

No pretrained CLIP can be downloaded where seg is built and tested, so the project trains a tiny CLIP (ViT w128 L4
patch 8 at 64 px, text w128 L4, embed 128: ``seg_models.clip.SYNTHETIC_CLIP_CONFIG``) on the synthetic world's
image-text pairs, with the seg-train engine, and saves it as an open_clip ``local-dir:`` folder, so every method
loads it exactly as it would load ``ViT-B-16``/``openai``::

    from seg_trainers.clip import SyntheticClipRecipe, train_synthetic_clip
    run = train_synthetic_clip(SyntheticClipRecipe(), "runs/clip")   # runs/clip/model: local-dir source
    clip = seg_models.clip.load_clip(f"local-dir:{run.model_dir}")

Data: batch ``b`` holds images ``b·B .. (b+1)·B − 1`` of the world's ``pairs`` split, each a pure function of
(world config, index), so every step sees fresh images and a resumed run sees exactly the batches it would have.
Under ``torchrun`` the ranks split that one sequence (:func:`batch_loader`): rank ``r`` of ``W`` takes batches
``r, r + W, ...``, and the contrastive loss sees the global batch of ``W·B`` pairs; rank 0 alone writes the files.
Loss: symmetric InfoNCE with CLIP's learnable temperature (clamped at 100). Optimiser: AdamW, betas (0.9, 0.98),
weight decay 0.1 on matrices only, cosine schedule with linear warm-up; the settings of the design study
(``docs/synthetic-world.md``), where 5 minutes on 2 CPU cores already classify the world's things zero-shot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, JsonValue, PositiveInt
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from seg_core import Normalization, ScheduleConfig, SegModel, TrainConfig
from seg_eval.world import WorldConfig, render
from seg_losses import info_nce_loss
from seg_losses.distributed import gather_batch
from seg_models.clip import (
    CONFIG_FILE_NAME,
    SYNTHETIC_CLIP_CONFIG,
    SYNTHETIC_CLIP_NAME,
    WEIGHTS_FILE_NAME,
    ClipModel,
    load_clip,
    local_dir_config,
    register_model_config,
)
from seg_models.weights import export_state_dict
from seg_train import StepOutput, Trainer, TrainResult, barrier, build_optimizer, init_distributed, unwrap_model

__all__ = [
    "SyntheticClipRecipe",
    "SyntheticClipRun",
    "WorldPairBatches",
    "batch_loader",
    "build_synthetic_clip",
    "clip_step",
    "export_local_dir",
    "train_synthetic_clip",
]

MAX_LOGIT_SCALE = math.log(100.0)


class SyntheticClipRecipe(SegModel):
    """Everything that decides the reference synthetic CLIP.

    Attributes:
        world: The world the pairs come from (its seed is the training seed; evaluate on other seeds).
        model_name: open_clip architecture name the config is registered under.
        model_cfg: open_clip model config.
        batch_size: Image-text pairs per step (the negatives of the contrastive loss).
        train: Engine settings (steps, learning rate, schedule, precision, checkpoints).
        betas: AdamW betas.
        workers: DataLoader worker processes rendering batches (0 renders in the training process).
    """

    world: WorldConfig = WorldConfig(seed=0)
    model_name: str = SYNTHETIC_CLIP_NAME
    model_cfg: dict[str, JsonValue] = Field(default_factory=lambda: dict(SYNTHETIC_CLIP_CONFIG))
    batch_size: PositiveInt = 128
    train: TrainConfig = TrainConfig(
        max_steps=3000,
        lr=1e-3,
        weight_decay=0.1,
        schedule=ScheduleConfig(kind="cosine", warmup_steps=150),
        precision="bf16",
        log_every=50,
        checkpoint_every=250,
        keep_checkpoints=2,
    )
    betas: tuple[float, float] = (0.9, 0.98)
    workers: int = Field(default=1, ge=0)


class WorldPairBatches(Dataset[dict[str, Tensor]]):
    """Batch ``b`` of the world's ``pairs`` split: normalised images and caption tokens (a map-style dataset of
    batches, so a ``DataLoader`` with ``batch_size=None`` renders them in a worker)."""

    def __init__(
        self,
        world: WorldConfig,
        batch_size: int,
        tokenize: Callable[[list[str]], Tensor],
        normalization: Normalization,
    ) -> None:
        self.world = world
        self.batch_size = batch_size
        self.tokenize = tokenize
        self.mean = torch.tensor(normalization.mean).view(3, 1, 1)
        self.std = torch.tensor(normalization.std).view(3, 1, 1)

    def __len__(self) -> int:
        return 2**31 // self.batch_size  # effectively endless: every index is a new image

    def __getitem__(self, batch_index: int) -> dict[str, Tensor]:
        start = batch_index * self.batch_size
        samples = [render(self.world, "pairs", start + i) for i in range(self.batch_size)]
        images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float().div_(255.0)
        images = (images - self.mean) / self.std
        tokens = self.tokenize([s.caption for s in samples])
        return {"images": images, "tokens": tokens}


def batch_loader(
    dataset: Dataset[dict[str, Tensor]], workers: int, *, rank: int = 0, world_size: int = 1
) -> Callable[[int], Iterator[dict[str, Tensor]]]:
    """The engine's ``batches(start_batch)`` factory over a map-style dataset of whole batches.

    Rank ``rank`` of ``world_size`` takes items ``rank, rank + world_size, ...``: its ``i``-th batch is item
    ``i * world_size + rank``, so the ranks of a ``torchrun`` job split the one-process sequence of batches between
    them, and ``start_batch`` (the batches this rank already consumed) resumes each rank where it stopped. With the
    defaults (one process) the batches are items ``start_batch, start_batch + 1, ...``. A dataset that already
    gives each rank its own items (ZUTIS's ``CopyPasteBatches``) keeps the defaults.

    The DataLoader gets its own generator: by default every new loader iterator draws its base seed from torch's
    global RNG, which a resumed run would consume at a different moment than an uninterrupted one, shifting every
    later random draw of the training step (e.g. GroupViT's Gumbel noise) and breaking exact resume.

    Args:
        dataset: Item ``b`` is batch ``b`` (a pure function of ``b``).
        workers: DataLoader worker processes (0 loads in this process).
        rank: This process's rank (``DistributedContext.rank``; 0 in one process).
        world_size: Number of processes (``DistributedContext.world_size``; 1 in one process).

    Raises:
        ValueError: ``world_size < 1`` or ``rank`` outside ``[0, world_size)``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, {world_size=}; pass the "
            "DistributedContext's rank and world_size"
        )

    def batches(start_batch: int) -> Iterator[dict[str, Tensor]]:
        loader = DataLoader(
            dataset,
            batch_size=None,
            sampler=range(start_batch * world_size + rank, len(dataset), world_size),  # type: ignore[arg-type]
            num_workers=workers,
            prefetch_factor=4 if workers > 0 else None,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(0),
        )
        yield from loader

    return batches


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (CLIP's choice): not on biases, norms, embeddings' scales or the temperature."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or "logit_scale" in name or name.endswith(("positional_embedding", "class_embedding")):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_synthetic_clip(recipe: SyntheticClipRecipe) -> ClipModel:
    """A randomly initialised CLIP of the recipe's architecture (registered with open_clip under its name)."""
    register_model_config(recipe.model_name, recipe.model_cfg)
    return load_clip(recipe.model_name, None)


def clip_step(clip_model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
    """One contrastive step on a batch of pairs.

    The forward goes through ``clip_model`` itself (open_clip's ``CLIP.forward``), so a DDP wrapper sees it and
    synchronises gradients; the temperature is read from the unwrapped model.
    """
    model: Any = unwrap_model(clip_model)  # the open_clip CLIP (untyped)
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
    outputs = clip_model(batch["images"], batch["tokens"])
    if isinstance(outputs, dict):
        image_features, text_features = outputs["image_features"], outputs["text_features"]
    else:
        image_features, text_features = outputs[0], outputs[1]
    logit_scale: Tensor = model.logit_scale
    # Under torchrun the negatives are the global batch (the gather carries gradients back to each process).
    loss = info_nce_loss(gather_batch(image_features), gather_batch(text_features), logit_scale)
    return StepOutput(
        loss=loss, metrics={"logit_scale": float(logit_scale.detach().exp())}, num_samples=len(image_features)
    )


def export_local_dir(
    clip: ClipModel, model_cfg: dict[str, JsonValue], folder: str | Path, *, fp16: bool = True
) -> Path:
    """Write ``clip`` as an open_clip ``local-dir:`` source: ``open_clip_config.json`` + safetensors weights.

    Args:
        clip: The trained model.
        model_cfg: Its open_clip model config.
        folder: Output folder (created).
        fp16: Store the weights in float16 (half the size; open_clip loads them into float32).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(export_state_dict(clip.model, fp16=fp16), str(folder / WEIGHTS_FILE_NAME))
    config = local_dir_config(model_cfg, clip.normalization)
    (folder / CONFIG_FILE_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


@dataclass(frozen=True)
class SyntheticClipRun:
    """What :func:`train_synthetic_clip` produced: the ``local-dir:`` model folder and the engine's result."""

    model_dir: Path
    result: TrainResult


def train_synthetic_clip(
    recipe: SyntheticClipRecipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> SyntheticClipRun:
    """Train the recipe with the seg-train engine and export the ``local-dir:`` model to ``out_dir/model``.

    Under ``torchrun`` every process calls it alike: the ranks train data-parallel, each on its own batches
    (:func:`batch_loader`), with the contrastive negatives gathered over all of them; rank 0 alone writes
    ``recipe.yaml``, the checkpoints and the model folder, and every rank returns once the folder is complete.

    Args:
        recipe: The recipe.
        out_dir: Run folder: ``recipe.yaml``, ``checkpoints/``, ``tensorboard/`` and ``model/``.
        resume: Continue from the newest checkpoint in ``out_dir``.
        device: Training device.
        log: Receives the engine's log lines.

    Returns:
        The exported model folder (load it with ``load_clip(f"local-dir:{folder}")``) and the training result.
    """
    # Under torchrun: join the process group now (the Trainer would later), gloo for a CPU run even where CUDA is.
    context = init_distributed("gloo" if torch.device(device).type == "cpu" else None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        recipe.save(out_dir / "recipe.yaml")
    torch.manual_seed(recipe.train.seed)
    clip = build_synthetic_clip(recipe)
    clip.train()
    optimizer = build_optimizer(
        recipe.train, _parameter_groups(clip.model, recipe.train.weight_decay), betas=recipe.betas, eps=1e-6
    )
    dataset = WorldPairBatches(recipe.world, recipe.batch_size, clip.tokenizer, clip.normalization)
    trainer = Trainer(recipe.train, clip.model, optimizer, clip_step, out_dir=out_dir, device=device, log=log)
    loader = batch_loader(dataset, recipe.workers, rank=context.rank, world_size=context.world_size)
    result = trainer.fit(loader, resume_from="latest" if resume else None)
    clip.eval()
    model_dir = out_dir / "model"
    if context.is_main:
        export_local_dir(clip, recipe.model_cfg, model_dir)
    barrier()  # every rank returns once the model folder is complete
    return SyntheticClipRun(model_dir, result)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m seg_trainers.clip OUT_DIR [--steps N] [--resume]``: train the reference model."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the reference synthetic-world CLIP.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=None, help="override train.max_steps")
    parser.add_argument("--config", type=Path, default=None, help="a recipe YAML/JSON (default: the reference one)")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    recipe = SyntheticClipRecipe.load(args.config) if args.config else SyntheticClipRecipe()
    if args.steps is not None:
        warmup = min(recipe.train.schedule.warmup_steps, max(args.steps // 20, 1))
        schedule = recipe.train.schedule.model_copy(update={"warmup_steps": warmup})
        recipe = recipe.model_copy(
            update={"train": recipe.train.model_copy(update={"max_steps": args.steps, "schedule": schedule})}
        )
    run = train_synthetic_clip(recipe, args.out_dir, resume=args.resume, log=print)
    print(f"model written to {run.model_dir} (load with load_clip('local-dir:{run.model_dir}'))")


if __name__ == "__main__":
    main()


def evaluate_synthetic_clip(
    model_dir: str | Path,
    *,
    seed: int = 1000,
    num_images: int = 300,
    variants: Sequence[str] = ("maskclip", "value", "naive"),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure a synthetic-world CLIP on a world seed it was not trained on.

    * ``zero_shot_thing_accuracy``: images of the ``val`` split that hold exactly one thing class, classified
      among all thing names from the global image embedding (chance: one over the number of things).
    * per dense variant (``maskclip``, ``naive``, ``value``): mIoU, thing mIoU and stuff mIoU of the MaskCLIP
      segmenter under the ``synthetic`` preset, over the first ``num_images`` ``val`` images.

    Args:
        model_dir: A ``local-dir:`` model folder.
        seed: World seed of the evaluation images.
        num_images: Images evaluated.
        variants: Dense variants to segment with.
        progress: Called as ``progress(stage, done, total)``.
    """
    import numpy as np

    from seg_core import ConceptSet
    from seg_eval.evaluator import evaluate, image_to_tensor
    from seg_eval.presets import get_preset
    from seg_eval.world import STUFF_NAMES, THING_NAMES, class_by_id
    from seg_eval.world.benchmark import RenderedWorldBenchmark
    from seg_models.inference import normalize_images
    from seg_models.maskclip import MaskCLIPSegmenter

    clip = load_clip(f"local-dir:{model_dir}")
    preset = get_preset("synthetic")
    world = WorldConfig(seed=seed)
    report: dict[str, Any] = {"model": str(model_dir), "world_seed": seed, "num_images": num_images}

    things = ConceptSet(names=THING_NAMES, templates=preset.templates)
    text = clip.concept_embeddings(things)
    correct = total = index = 0
    with torch.no_grad():
        while total < num_images and index < 20 * num_images:
            sample = render(world, "val", index)
            index += 1
            present = {class_by_id(int(c)).name for c in np.unique(sample.semantic) if c != 255}
            present_things = [name for name in present if name in THING_NAMES]
            if len(present_things) != 1:
                continue
            image = normalize_images(image_to_tensor(sample.image), clip.normalization.mean, clip.normalization.std)
            embedding = torch.nn.functional.normalize(clip.encode_image(image), dim=-1)
            scores = embedding @ text.embeddings.t()
            correct += int(THING_NAMES[int(scores.argmax())] == present_things[0])
            total += 1
            if progress is not None:
                progress("zero-shot", total, num_images)
    report["zero_shot_thing_accuracy"] = correct / max(total, 1)
    report["zero_shot_images"] = total
    report["zero_shot_chance"] = 1 / len(THING_NAMES)

    dataset = RenderedWorldBenchmark(world, "val", num_images)
    for variant in variants:
        segmenter = MaskCLIPSegmenter(clip, preset, variant=variant)  # type: ignore[arg-type]
        record = evaluate(
            segmenter,
            dataset,
            preset=preset,
            method=f"maskclip-{variant}",
            model=str(model_dir),
            dataset_name="synthetic",
            split="val",
            progress=None if progress is None else _stage_progress(progress, variant),
        )
        report[variant] = {
            "mIoU": record.metrics.miou,
            "thing_mIoU": record.metrics.miou_over(THING_NAMES),
            "stuff_mIoU": record.metrics.miou_over(STUFF_NAMES),
            "pixel_accuracy": record.metrics.pixel_accuracy,
            "per_class_iou": dict(record.metrics.per_class_iou),
        }
    return report


def _stage_progress(progress: Callable[[str, int, int], None], stage: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress(stage, done, total)

    return report
