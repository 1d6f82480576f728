"""GroupViT and PGSeg recipes: text-supervised training on the synthetic world's image-text pairs.

GroupViT (Xu et al., 2022) is trained from scratch with the symmetric InfoNCE of its Eq. 1 (learnable temperature,
init 0.07, clamp 100); PGSeg (Zhang et al., 2023) adds, after a warm-up, the PG losses of its PG units (Eq. 3 and
the total loss of Sec. 4.2)::

    L = L_IT + Σ_l [ λ · L_PG(G_l, P_l) + β · L_PG(AVG(G_l), T_l) ]        λ = 0.1, β = 0.01

with ``G_l`` a grouping stage's centres, ``P_l`` its I-NPR EM prototypes and ``T_l`` its T-NPR scalar prototypes
(:mod:`seg_models.pgseg`). The paper keeps λ = β = 0 for its first 30 of 40 epochs (:attr:`PGLossSettings.start`);
the official code instead fine-tunes a trained GroupViT with the PG loss from step 0.

Data: batch ``b`` is images ``b·B .. (b+1)·B − 1`` of the world's ``pairs`` split with their captions (as for the
reference CLIP, :class:`seg_trainers.clip.WorldPairBatches`), so a resumed run sees exactly the batches it would
have. No image augmentation: the official RandomResizedCrop (0.08-1) would cut most things out of a 64-px world
image, and flips would not change what a caption says.

Under ``torchrun`` rank ``r`` of ``W`` takes batches ``r, r + W, ...`` of that sequence
(:func:`seg_trainers.clip.batch_loader`), the InfoNCE negatives are the global batch, and rank 0 alone writes the
files; a step that needs more than the model's ``forward`` (PGSeg's) runs through the DDP wrapper with
:func:`seg_train.run_as_forward`, so that the ranks' gradients are averaged.

Model folders: GroupViT writes :func:`seg_models.groupvit.save_groupvit`'s ``config.json`` + ``model.safetensors``,
PGSeg :func:`seg_models.pgseg.save_pgseg`'s ``pgseg.json`` + ``model.safetensors`` (fp16), each with
``training.json`` (the recipe and the run's last record).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torch.utils.data import Dataset

from seg_core import CLIP_MEAN_STD, ConfigError, MethodConfig, ScheduleConfig, SegModel, TrainConfig
from seg_eval.world import WorldConfig
from seg_losses import info_nce_loss, pg_loss
from seg_losses.distributed import gather_batch
from seg_models.groupvit import (
    GroupViT,
    GroupViTConfig,
    GroupViTTextConfig,
    GroupViTVisionConfig,
    groupvit_tokenizer,
    load_groupvit,
    save_groupvit,
)
from seg_models.pgseg import PGSeg, PGSegConfig, save_pgseg
from seg_train import StepOutput, Trainer, TrainResult, barrier, build_optimizer, init_distributed, run_as_forward
from seg_trainers.clip import WorldPairBatches, batch_loader

__all__ = [
    "GROUPVIT_SYNTHETIC_CONFIG",
    "PGSEG_SYNTHETIC_CONFIG",
    "TRAINING_FILE",
    "GroupViTRecipe",
    "GroupViTRun",
    "PGLossSettings",
    "PGSegRecipe",
    "build_model",
    "export_grouping_model",
    "groupvit_step",
    "initial_grouping_model",
    "new_grouping_model",
    "pgseg_loss_terms",
    "pgseg_step",
    "train_groupvit",
]

TRAINING_FILE = "training.json"

GROUPVIT_SYNTHETIC_CONFIG = GroupViTConfig(
    vision=GroupViTVisionConfig(
        image_size=64,
        patch_size=8,
        embed_dim=128,
        depths=(2, 2, 1),
        num_heads=4,
        num_group_tokens=(16, 8, 0),
        num_output_groups=(16, 8),
    ),
    text=GroupViTTextConfig(context_length=32, width=64, layers=4, heads=2),
    projection_dim=128,
    projection_hidden_dim=512,
    normalization=CLIP_MEAN_STD,
)
"""The synthetic-world GroupViT: 64 px, patch 8 (64 patches), 128-d, depths 2/2/1, group tokens 16/8/0, output
groups 16/8 (64 patches → 16 → 8 segments, the official 196 → 64 → 8 scaled to the world); text 4 layers, 64
wide (2 heads), context 32; projection 512 → 128; pixels normalised with CLIP's statistics, like the ``synthetic``
preset. The text tower is half as wide as the reference CLIP's because its 49,408-row token embedding (the CLIP BPE
vocabulary, of which the world uses a few hundred words) is most of the checkpoint: 10 MB in fp16 instead of 18."""

PGSEG_SYNTHETIC_CONFIG = PGSegConfig(groupvit=GROUPVIT_SYNTHETIC_CONFIG, reconstruction_hidden_dim=512)
"""PGSeg on :data:`GROUPVIT_SYNTHETIC_CONFIG`: 16/8 image and text prototypes, T = 10, γ = 0.9."""


def _default_train() -> TrainConfig:
    return TrainConfig(
        max_steps=1500,
        lr=1e-3,
        weight_decay=0.05,
        schedule=ScheduleConfig(kind="cosine", warmup_steps=75),
        precision="bf16",
        grad_clip_norm=5.0,
        log_every=50,
        checkpoint_every=250,
        keep_checkpoints=2,
    )


class GroupViTRecipe(MethodConfig):
    """Everything that decides a GroupViT trained on the synthetic world.

    Attributes:
        world: The world the pairs come from (evaluate on other seeds).
        model: The architecture.
        batch_size: Image-text pairs per step (the contrastive negatives).
        train: Engine settings (official: AdamW, weight decay 0.05, gradient clip 5, cosine with warm-up).
        betas: AdamW betas (official: PyTorch's defaults).
        workers: DataLoader worker processes rendering batches.
        init_from: A GroupViT model folder to start from instead of random weights (a PGSeg recipe takes the
            GroupViT part from it and initialises its PG units; the official PGSeg release fine-tunes a trained
            GroupViT this way). ``None``: train from scratch.
        data_offset: Batches of the ``pairs`` split to skip, so a run started ``init_from`` a model trained on the
            first batches sees new images (e.g. that run's ``max_steps``; a run on ``W`` torchrun processes used
            ``max_steps × grad_accum_steps × W`` batches).
    """

    method: Literal["groupvit"] = "groupvit"
    world: WorldConfig = WorldConfig(seed=0)
    model: GroupViTConfig = GROUPVIT_SYNTHETIC_CONFIG
    batch_size: PositiveInt = 64
    train: TrainConfig = Field(default_factory=_default_train)
    betas: tuple[float, float] = (0.9, 0.999)
    workers: int = Field(default=1, ge=0)
    init_from: str | None = None
    data_offset: int = Field(default=0, ge=0)

    def groupvit_config(self) -> GroupViTConfig:
        """The GroupViT architecture (a PGSeg recipe's underlying one)."""
        model: GroupViTConfig | PGSegConfig = self.model
        return model.groupvit if isinstance(model, PGSegConfig) else model


class PGLossSettings(SegModel):
    """The PG losses' settings.

    Attributes:
        image_weight: λ of the I-NPR PG loss (paper 0.1).
        text_weight: β of the T-NPR PG loss (paper 0.01).
        tau: Temperature of Eq. 3 (paper 0.1; the official code learns it from 0.1).
        reject_threshold: φ of the hard rejection strategy (paper 0.1); ``None`` turns HRS off.
        rejection: ``"cosine"``: reject matched pairs whose cosine is at most φ (the paper's wording; T-NPR's
            scalar pairs, compared by ``-|a - b|``, are then not filtered); ``"minmax"``: compare the min-max
            normalised similarity instead (the official code; both units).
        match: ``"max"``: Hungarian matching maximising similarity (the paper); ``"min"``: the official code's
            minimising call (a bug, kept for ablation).
        start: Fraction of the training steps before the PG losses switch on (paper: 30 of 40 epochs, 0.75).
    """

    image_weight: float = Field(default=0.1, ge=0)
    text_weight: float = Field(default=0.01, ge=0)
    tau: float = Field(default=0.1, gt=0)
    reject_threshold: float | None = 0.1
    rejection: Literal["cosine", "minmax"] = "cosine"
    match: Literal["max", "min"] = "max"
    start: float = Field(default=0.75, ge=0, le=1)


class PGSegRecipe(GroupViTRecipe):
    """A :class:`GroupViTRecipe` with PG units and their losses.

    Attributes:
        model: The PGSeg architecture (which units are on, prototype counts, EM iterations, momentum).
        pg: The PG losses.
    """

    method: Literal["pgseg"] = "pgseg"  # type: ignore[assignment]
    model: PGSegConfig = PGSEG_SYNTHETIC_CONFIG  # type: ignore[assignment]
    pg: PGLossSettings = PGLossSettings()


def new_grouping_model(config: GroupViTConfig | PGSegConfig, seed: int) -> GroupViT:
    """A randomly initialised GroupViT, or PGSeg for a :class:`PGSegConfig` (its prototypes seeded by ``seed``),
    after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    if isinstance(config, PGSegConfig):
        return PGSeg(config.model_copy(update={"seed": seed}))
    return GroupViT(config)


def export_grouping_model(model: GroupViT, folder: Path, method: str, recipe: SegModel, result: TrainResult) -> Path:
    """Write a trained GroupViT/PGSeg (fp16) to ``folder`` with ``training.json`` (method, recipe, last record)."""
    model.eval()
    if isinstance(model, PGSeg):
        save_pgseg(model, folder, fp16=True)
    else:
        save_groupvit(model, folder, fp16=True)
    info = {"method": method, "recipe": recipe.model_dump(mode="json"), "last_record": result.last_record}
    (folder / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return folder


def build_model(recipe: GroupViTRecipe) -> GroupViT:
    """A GroupViT, or PGSeg for a :class:`PGSegRecipe`, seeded by ``recipe.train.seed``: random, or with the
    weights of ``recipe.init_from`` (a GroupViT folder of the same architecture; a PGSeg's units stay random).

    Raises:
        ConfigError: ``init_from`` holds another architecture.
    """
    return initial_grouping_model(recipe.model, recipe.train.seed, recipe.init_from)


def initial_grouping_model(config: GroupViTConfig | PGSegConfig, seed: int, init_from: str | None) -> GroupViT:
    """:func:`new_grouping_model`, then the GroupViT weights of the folder ``init_from`` when it is given (the
    starting point of every grouping recipe: GroupViT, PGSeg, SimCon).

    Raises:
        ConfigError: ``init_from`` holds another architecture than ``config``'s GroupViT.
    """
    model = new_grouping_model(config, seed)
    if init_from is None:
        return model
    start = load_groupvit(init_from)
    expected = config.groupvit if isinstance(config, PGSegConfig) else config
    if start.config != expected:
        raise ConfigError(
            f"init_from: {init_from} holds a GroupViT of another architecture than the recipe's model; "
            "train from it with the same model settings (or set init_from: null)"
        )
    missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
    new = [key for key in missing if not key.startswith(_PG_UNIT_KEYS)]
    if new or unexpected:  # pragma: no cover - same config, same keys
        raise ConfigError(f"init_from: {init_from}: missing {new}, unexpected {unexpected}")
    return model


_PG_UNIT_KEYS = ("reconstructions.", "image_prototypes_", "text_prototypes_")


class _IndexedBatches(Dataset[dict[str, Tensor]]):
    """The world's pair batches from ``offset`` on, with their index in this run's one-process sequence of batches
    (batch ``b`` belongs to optimiser step ``b // (grad_accum_steps × world_size)``)."""

    def __init__(self, batches: WorldPairBatches, offset: int = 0) -> None:
        self.batches = batches
        self.offset = offset

    def __len__(self) -> int:
        return len(self.batches) - self.offset

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.batches[index + self.offset] | {"batch_index": torch.tensor(index)}


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, the temperature, positional embeddings or group tokens."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or "logit_scale" in name or name.endswith(("pos_embed", "group_tokens"))
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def groupvit_step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
    """One InfoNCE step (GroupViT Eq. 1) through ``model.forward``, so a DDP wrapper synchronises gradients."""
    images, texts, scale = model(batch["images"], batch["tokens"])
    # Under torchrun the negatives are the global batch (GroupViT's dist_collect; gradients flow back to each rank).
    loss = info_nce_loss(gather_batch(images), gather_batch(texts), scale.log())
    return StepOutput(loss=loss, metrics={"logit_scale": float(scale.detach())}, num_samples=len(images))


def pgseg_loss_terms(forward: Any, settings: PGLossSettings) -> dict[str, Tensor]:
    """The PG loss terms of one :class:`seg_models.pgseg.PGSegForward`, unweighted.

    Returns:
        ``{"pg_image_<l>": ..., "pg_text_<l>": ...}`` per grouping stage and enabled unit, and the kept fractions
        of the hard rejection as ``"kept_image_<l>"`` (0-d tensors, no gradient).
    """
    terms: dict[str, Tensor] = {}
    centres = forward.centres()
    options: dict[str, Any] = {
        "tau": settings.tau,
        "reject_threshold": settings.reject_threshold,
        "rejection": settings.rejection,
        "match": settings.match,
    }
    for index, em in enumerate(forward.image_em):
        result = pg_loss(centres[index], em.prototypes, **options)
        terms[f"pg_image_{index}"] = result.loss
        terms[f"kept_image_{index}"] = torch.tensor(result.kept_fraction)
    for index, em in enumerate(forward.text_em):
        groups = centres[index].mean(dim=-1, keepdim=True)  # AVG over the channels: [B, G_l, 1]
        # A raw similarity threshold means nothing for -|a - b| (never positive); min-max rejection is scale-free.
        text_options = options | {
            "reject_threshold": settings.reject_threshold if settings.rejection == "minmax" else None
        }
        result = pg_loss(groups, em.prototypes, similarity="neg_abs", **text_options)
        terms[f"pg_text_{index}"] = result.loss
    return terms


def pgseg_step(
    settings: PGLossSettings, start_step: int, grad_accum_steps: int = 1, world_size: int = 1
) -> Callable[..., StepOutput]:
    """The PGSeg step: InfoNCE plus, from optimiser step ``start_step`` on, λ/β-weighted PG losses.

    A batch's optimiser step is its ``batch_index`` (its place in the one-process sequence of batches) divided by
    ``grad_accum_steps × world_size``. The step runs through the DDP wrapper (:func:`seg_train.run_as_forward`). Every
    parameter gets a gradient in every step, before ``start_step`` too (the I-NPR reconstructions are part of the
    vision forward), so DDP needs no ``find_unused_parameters``.

    Args:
        settings: The PG losses.
        start_step: First optimiser step with the PG losses on.
        grad_accum_steps: Micro-batches per optimiser step.
        world_size: Processes the batches are split over (1 in one process).

    Raises:
        ValueError: ``grad_accum_steps`` or ``world_size`` below 1.
    """
    if grad_accum_steps < 1 or world_size < 1:
        raise ValueError(
            f"grad_accum_steps and world_size must be >= 1, got {grad_accum_steps=}, {world_size=}; pass the "
            "recipe's train.grad_accum_steps and the DistributedContext's world_size"
        )
    batches_per_step = grad_accum_steps * world_size

    def step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        def compute(pgseg: Any, batch: dict[str, Tensor]) -> StepOutput:
            forward = pgseg.training_forward(batch["images"], batch["tokens"])
            contrastive = info_nce_loss(
                gather_batch(forward.image_embeddings),
                gather_batch(forward.text_embeddings),
                forward.logit_scale.log(),
            )
            terms = pgseg_loss_terms(forward, settings)
            active = int(batch["batch_index"]) // batches_per_step >= start_step
            loss = contrastive
            if active:
                for name, value in terms.items():
                    if name.startswith("pg_image_"):
                        loss = loss + settings.image_weight * value
                    elif name.startswith("pg_text_"):
                        loss = loss + settings.text_weight * value
            metrics = {"info_nce": float(contrastive.detach()), "logit_scale": float(forward.logit_scale.detach())}
            metrics |= {name: float(value.detach()) for name, value in terms.items()}
            return StepOutput(loss=loss, metrics=metrics, num_samples=len(forward.image_embeddings))

        return run_as_forward(model, compute, batch)

    return step


@dataclass(frozen=True)
class GroupViTRun:
    """What :func:`train_groupvit` (and ``seg_trainers.simcon.train_simcon``) produced: the model folder and the
    engine's result."""

    model_dir: Path
    result: TrainResult


def train_groupvit(
    recipe: GroupViTRecipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> GroupViTRun:
    """Train a GroupViT or PGSeg recipe with the seg-train engine; write the model folder to ``out_dir/model``.

    Under ``torchrun`` every process calls it alike: the ranks train data-parallel, each on its own batches
    (:func:`seg_trainers.clip.batch_loader`), with the InfoNCE negatives gathered over all of them; rank 0 alone
    writes ``recipe.yaml``, the checkpoints and the model folder, and every rank returns once the folder is complete.
    The replicas stay identical but for buffers each rank updates from its own batch (BatchNorm statistics, PGSeg's
    momentum prototypes), which DDP resets to rank 0's at every forward; the export has rank 0's.

    Args:
        recipe: A :class:`GroupViTRecipe` or :class:`PGSegRecipe`.
        out_dir: Run folder: ``recipe.yaml``, ``checkpoints/``, ``tensorboard/`` and ``model/``.
        resume: Continue from the newest checkpoint in ``out_dir``.
        device: Training device.
        log: Receives the engine's log lines.
    """
    # Under torchrun: join the process group now (the Trainer would later), gloo for a CPU run even where CUDA is.
    context = init_distributed("gloo" if torch.device(device).type == "cpu" else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        recipe.save(out / "recipe.yaml")
    model = build_model(recipe)
    model.train()
    optimizer = build_optimizer(
        recipe.train, _parameter_groups(model, recipe.train.weight_decay), betas=recipe.betas, eps=1e-8
    )
    tokenizer = groupvit_tokenizer(recipe.groupvit_config().text.context_length)
    pairs = WorldPairBatches(recipe.world, recipe.batch_size, tokenizer, recipe.groupvit_config().normalization)
    if isinstance(recipe, PGSegRecipe):
        start = round(recipe.pg.start * recipe.train.max_steps)
        step_fn = pgseg_step(recipe.pg, start, recipe.train.grad_accum_steps, context.world_size)
    else:
        step_fn = groupvit_step
    trainer = Trainer(recipe.train, model, optimizer, step_fn, out_dir=out, device=device, log=log)
    loader = batch_loader(
        _IndexedBatches(pairs, recipe.data_offset), recipe.workers, rank=context.rank, world_size=context.world_size
    )
    result = trainer.fit(loader, resume_from="latest" if resume else None)
    model_dir = out / "model"
    if context.is_main:
        export_grouping_model(model, model_dir, recipe.method, recipe, result)
    model.eval()
    barrier()  # every rank returns once the model folder is complete
    return GroupViTRun(model_dir, result)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m seg_trainers.groupvit {groupvit,pgseg} OUT_DIR [--steps N] [--seed S] [--config FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Train GroupViT or PGSeg on the synthetic world.")
    parser.add_argument("method", choices=["groupvit", "pgseg"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    kind = PGSegRecipe if args.method == "pgseg" else GroupViTRecipe
    recipe = kind.load(args.config) if args.config else kind()
    updates: dict[str, Any] = {}
    if args.steps is not None:
        warmup = min(recipe.train.schedule.warmup_steps, max(args.steps // 20, 1))
        updates |= {
            "max_steps": args.steps,
            "schedule": recipe.train.schedule.model_copy(update={"warmup_steps": warmup}),
        }
    if args.seed is not None:
        updates["seed"] = args.seed
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update=updates)})
    run = train_groupvit(recipe, args.out_dir, resume=args.resume, log=print)
    print(f"model written to {run.model_dir}")


if __name__ == "__main__":
    main()
