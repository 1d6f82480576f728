"""MV-SimCon recipe: GroupViT (or PGSeg) trained with SimCon or multi-view SimCon instead of InfoNCE.

Patel et al., "SimCon Loss with Multiple Views for Text Supervised Semantic Segmentation" (no official code). The
objective of Eq. 10::

    L = L_MV-SimCon(I, T, P_J^I) + L_MV-SimCon(T, I, P^T) + L_NCS(I_1, I_2)

with two augmented views ``I_1, I_2`` of every image, image positives joint over the views (Eq. 8), text positives
from the captions' similarity (Eq. 5), and the negative-cosine loss between the views through a SimSiam-style
prediction head (Eq. 9). The losses are :mod:`seg_losses.contrastive`'s; ``loss.kind`` picks the objective for the
paper's comparisons: ``infonce`` (GroupViT's, on the first view), ``simcon`` (Eqs. 3-5, one view), ``mv-simcon``
(Eq. 10). The threshold λ follows the paper's step schedule (0.95, −0.05 after epochs 2 and 15 of 30), expressed as
fractions of the training steps.

Views (:class:`seg_train.augment.SegAugmentConfig`): scale 0.75-1.5 with pad/crop back to 64 px, horizontal flip,
brightness/contrast jitter, no hue or saturation jitter (a thing's colour is its identity in the synthetic world, see
the ReCo+ notes), occasional blur; drawn from a generator seeded by (training seed, batch index), so batches are a
pure function of their position and resume is exact. The paper does not specify its views.

With a PGSeg model the PG losses of ``pg`` are added on the first view (:func:`seg_trainers.groupvit.pgseg_loss_terms`).
The exported model folder is the GroupViT's (or PGSeg's); the prediction head is training-only and dropped.

Under ``torchrun`` rank ``r`` of ``W`` takes batches ``r, r + W, ...`` of the one-process sequence
(:func:`seg_trainers.clip.batch_loader`), so its views are those batches' views; the contrastive terms see the global
batch, the view loss stays per rank, the step runs through the DDP wrapper
(:func:`seg_train.run_as_forward`) so the ranks' gradients are averaged, and rank 0 alone writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from seg_core import MethodConfig, Normalization, SegModel, TrainConfig
from seg_eval.world import WorldConfig, render
from seg_losses import info_nce_loss, lambda_schedule, mv_simcon_loss, negative_cosine_loss, symmetric_simcon_loss
from seg_losses.contrastive import PredictionHead
from seg_losses.distributed import gather_batch
from seg_models.groupvit import GroupViT, GroupViTConfig, groupvit_tokenizer
from seg_models.pgseg import PGSeg, PGSegConfig
from seg_train import StepOutput, Trainer, barrier, build_optimizer, init_distributed, run_as_forward
from seg_train.augment import SegAugmentConfig, augment_batch
from seg_trainers.clip import batch_loader
from seg_trainers.groupvit import (
    GROUPVIT_SYNTHETIC_CONFIG,
    GroupViTRun,
    PGLossSettings,
    _default_train,
    _parameter_groups,
    export_grouping_model,
    initial_grouping_model,
    pgseg_loss_terms,
)

__all__ = [
    "SIMCON_VIEWS",
    "SimConLossSettings",
    "SimConModule",
    "SimConRecipe",
    "SimConRun",
    "WorldViewBatches",
    "simcon_step",
    "train_simcon",
]

SIMCON_VIEWS = SegAugmentConfig(
    crop_size=64,
    scale_range=(0.75, 1.5),
    hflip_prob=0.5,
    jitter_prob=0.8,
    brightness=0.4,
    contrast=0.4,
    saturation=0.0,
    hue=0.0,
    blur_prob=0.2,
)
"""The two views' augmentation on the 64-px world (see the module docstring)."""


class SimConLossSettings(SegModel):
    """The contrastive objective and its open choices (paper defaults where it states them).

    Attributes:
        kind: ``infonce`` (GroupViT's baseline), ``simcon`` (one view, Eqs. 3-5) or ``mv-simcon`` (Eq. 10).
        threshold: Initial λ of Eqs. 5 and 8 (paper 0.95).
        threshold_step: Decrease of λ at each milestone (paper 0.05).
        milestones: Fractions of the training steps where λ decreases (paper: after epochs 2 and 15 of 30).
        mask_self_in_intra: Drop an anchor's similarity to itself from the intra-modal terms (the paper's Eq. 3
            keeps it, where it dominates every row; see :func:`seg_losses.simcon_loss`).
        use_intra: Put the intra-modal exponentials in the loss (the paper); ``False`` keeps only the cross-modal
            ones with the positives (then λ above every off-diagonal similarity gives InfoNCE back).
        joint_image_positives: Eq. 8's image positives over both views (the paper); ``False``: per view (Table 4).
        view_weight: Weight of the negative-cosine view loss (paper: 1, a plain sum).
        predictor_hidden_dim: Hidden width of the prediction head; ``None``: SimSiam's ``D // 4``.
    """

    kind: Literal["infonce", "simcon", "mv-simcon"] = "mv-simcon"
    threshold: float = Field(default=0.95, gt=-1, le=1)
    threshold_step: float = Field(default=0.05, ge=0)
    milestones: tuple[float, ...] = (2 / 30, 15 / 30)
    mask_self_in_intra: bool = True
    use_intra: bool = True
    joint_image_positives: bool = True
    view_weight: float = Field(default=1.0, ge=0)
    predictor_hidden_dim: int | None = Field(default=None, ge=1)

    def threshold_at(self, step: int, max_steps: int) -> float:
        """λ at optimiser step ``step`` of ``max_steps``."""
        milestones = [round(fraction * max_steps) for fraction in self.milestones]
        return lambda_schedule(step, initial=self.threshold, step=self.threshold_step, milestones=milestones)


class SimConRecipe(MethodConfig):
    """Everything that decides a GroupViT/PGSeg trained with (MV-)SimCon on the synthetic world.

    Attributes:
        world: The world the pairs come from (its ``p_noise`` is the fraction of unrelated captions).
        model: A GroupViT or a PGSeg architecture.
        batch_size: Image-text pairs per step.
        train: Engine settings (as the GroupViT recipe).
        betas: AdamW betas.
        workers: DataLoader worker processes rendering batches.
        loss: The contrastive objective.
        views: The views' augmentation.
        pg: PG losses (used when ``model`` is a PGSeg; switched on after ``pg.start`` of the steps).
        init_from: A GroupViT model folder to start from instead of random weights (as the GroupViT recipe's:
            the SimCon study fine-tunes trained GroupViTs with each objective). ``None``: from scratch.
        data_offset: Batches of the ``pairs`` split to skip (e.g. the steps ``init_from`` was trained for, times
            its gradient accumulation and torchrun processes), so the run sees new images; the λ schedule and the
            views' seeds count this run's batches.
    """

    method: Literal["simcon"] = "simcon"
    world: WorldConfig = WorldConfig(seed=0)
    model: GroupViTConfig | PGSegConfig = GROUPVIT_SYNTHETIC_CONFIG
    batch_size: int = Field(default=64, ge=2)
    train: TrainConfig = Field(default_factory=_default_train)
    betas: tuple[float, float] = (0.9, 0.999)
    workers: int = Field(default=1, ge=0)
    loss: SimConLossSettings = SimConLossSettings()
    views: SegAugmentConfig = SIMCON_VIEWS
    pg: PGLossSettings = PGLossSettings()
    init_from: str | None = None
    data_offset: int = Field(default=0, ge=0)

    def groupvit_config(self) -> GroupViTConfig:
        """The GroupViT architecture (a PGSeg's underlying one)."""
        return self.model.groupvit if isinstance(self.model, PGSegConfig) else self.model


class WorldViewBatches(Dataset[dict[str, Tensor]]):
    """Batch ``b`` of the world's ``pairs`` split as two augmented, normalised views plus caption tokens.

    Returns ``{"view1", "view2": [B, 3, 64, 64], "tokens": [B, L], "batch_index": []}``; the views are drawn from a
    generator seeded by ``(seed, b)``. With ``offset``, index ``b`` renders the world's batch ``offset + b`` (the
    images after a model's own) and keeps ``b`` as its ``batch_index`` (its place in this run's one-process
    sequence of batches: optimiser step ``b // (grad_accum_steps × world_size)``).
    """

    def __init__(
        self,
        world: WorldConfig,
        batch_size: int,
        tokenize: Callable[[list[str]], Tensor],
        normalization: Normalization,
        *,
        views: SegAugmentConfig,
        seed: int,
        offset: int = 0,
    ) -> None:
        self.world, self.batch_size, self.tokenize, self.views, self.seed = world, batch_size, tokenize, views, seed
        self.offset = offset
        self.mean = torch.tensor(normalization.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(normalization.std).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return 2**31 // self.batch_size - self.offset

    def __getitem__(self, batch_index: int) -> dict[str, Tensor]:
        start = (self.offset + batch_index) * self.batch_size
        samples = [render(self.world, "pairs", start + i) for i in range(self.batch_size)]
        images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float().div_(255.0)
        labels = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_index)
        view1, _ = augment_batch(images, labels, self.views, generator)
        view2, _ = augment_batch(images, labels, self.views, generator)
        return {
            "view1": (view1 - self.mean) / self.std,
            "view2": (view2 - self.mean) / self.std,
            "tokens": self.tokenize([s.caption for s in samples]),
            "batch_index": torch.tensor(batch_index),
        }


class SimConModule(nn.Module):
    """The trained model plus the training-only prediction head of Eq. 9."""

    def __init__(self, model: GroupViT, predictor_hidden_dim: int | None) -> None:
        super().__init__()
        self.model = model
        self.predictor = PredictionHead(model.config.projection_dim, predictor_hidden_dim)


def _image_embeddings(model: GroupViT, images: Tensor) -> Tensor:
    out: Tensor = model.encode_image(images)
    return out


def simcon_step(recipe: SimConRecipe, world_size: int = 1) -> Callable[[nn.Module, dict[str, Tensor]], StepOutput]:
    """The step of ``recipe``'s objective (see the module docstring).

    A batch's optimiser step (of the λ schedule and the PG start) is its ``batch_index`` divided by
    ``grad_accum_steps × world_size``. The step runs through the DDP wrapper
    (:func:`seg_train.run_as_forward`); outside ``mv-simcon`` the prediction head gets no gradient, so
    under ``torchrun`` the engine then needs ``ddp_kwargs={"find_unused_parameters": True}`` (as
    :func:`train_simcon` passes).

    Args:
        recipe: The recipe.
        world_size: Processes the batches are split over (1 in one process).

    Raises:
        ValueError: ``world_size`` below 1.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}; pass the DistributedContext's world_size")
    settings, max_steps = recipe.loss, recipe.train.max_steps
    pg_start = round(recipe.pg.start * max_steps)
    batches_per_step = recipe.train.grad_accum_steps * world_size

    def step(module: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        def compute(wrapper: Any, batch: dict[str, Tensor]) -> StepOutput:
            model: GroupViT = wrapper.model
            step_index = int(batch["batch_index"]) // batches_per_step
            metrics: dict[str, float] = {}
            pg_terms: dict[str, Tensor] = {}
            if isinstance(model, PGSeg):
                forward = model.training_forward(batch["view1"], batch["tokens"])
                raw1 = model.image_projector(forward.vision.tokens.mean(dim=1))
                text, scale = forward.text_embeddings, forward.logit_scale
                pg_terms = pgseg_loss_terms(forward, recipe.pg) if step_index >= pg_start else {}
            else:
                raw1 = _image_embeddings(model, batch["view1"])
                text = F.normalize(model.encode_text(batch["tokens"]), dim=-1)
                scale = model.clamped_logit_scale()
            # Under torchrun the contrastive terms see the global batch (gathered with gradients); the view loss is
            # per sample and stays local.
            image1 = gather_batch(F.normalize(raw1, dim=-1))
            text = gather_batch(text)
            log_scale = scale.log()
            threshold = settings.threshold_at(step_index, max_steps)
            options = {"mask_self_in_intra": settings.mask_self_in_intra, "use_intra": settings.use_intra}
            if settings.kind == "infonce":
                loss = info_nce_loss(image1, text, log_scale)
            elif settings.kind == "simcon":
                loss = symmetric_simcon_loss(image1, text, log_scale, threshold=threshold, **options)
            else:
                raw2 = _image_embeddings(model, batch["view2"])
                image2 = gather_batch(F.normalize(raw2, dim=-1))
                loss = mv_simcon_loss(
                    image1,
                    image2,
                    text,
                    log_scale,
                    threshold=threshold,
                    joint_image_positives=settings.joint_image_positives,
                    **options,
                )
                predictor = wrapper.predictor
                view = negative_cosine_loss(predictor(raw1), raw2, predictor(raw2), raw1)
                metrics["view_loss"] = float(view.detach())
                loss = loss + settings.view_weight * view
            for name, value in pg_terms.items():
                if name.startswith("pg_image_"):
                    loss = loss + recipe.pg.image_weight * value
                elif name.startswith("pg_text_"):
                    loss = loss + recipe.pg.text_weight * value
            metrics |= {"threshold": threshold, "logit_scale": float(scale.detach())}
            metrics |= {name: float(value.detach()) for name, value in pg_terms.items()}
            return StepOutput(loss=loss, metrics=metrics, num_samples=len(raw1))

        return run_as_forward(module, compute, batch)

    return step


SimConRun = GroupViTRun
"""What :func:`train_simcon` produced (the same record as GroupViT's)."""


def train_simcon(
    recipe: SimConRecipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> GroupViTRun:
    """Train ``recipe`` with the seg-train engine; write the GroupViT/PGSeg folder (fp16) to ``out_dir/model``.

    Under ``torchrun`` every process calls it alike: the ranks train data-parallel, each on its own batches, with
    the contrastive terms over the global batch; rank 0 alone writes ``recipe.yaml``, the checkpoints and the model
    folder, and every rank returns once the folder is complete.

    Args:
        recipe: The recipe.
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
    model = initial_grouping_model(recipe.model, recipe.train.seed, recipe.init_from)
    module = SimConModule(model, recipe.loss.predictor_hidden_dim)
    module.train()
    optimizer = build_optimizer(
        recipe.train, _parameter_groups(module, recipe.train.weight_decay), betas=recipe.betas, eps=1e-8
    )
    groupvit = recipe.groupvit_config()
    tokenizer = groupvit_tokenizer(groupvit.text.context_length)
    views = WorldViewBatches(
        recipe.world,
        recipe.batch_size,
        tokenizer,
        groupvit.normalization,
        views=recipe.views,
        seed=recipe.train.seed,
        offset=recipe.data_offset,
    )
    # Only mv-simcon uses the prediction head; DDP must be told when it goes without gradient (the PG units are in
    # the vision forward, so a PGSeg's get gradients from the first step).
    unused = recipe.loss.kind != "mv-simcon"
    trainer = Trainer(
        recipe.train,
        module,
        optimizer,
        simcon_step(recipe, context.world_size),
        out_dir=out,
        device=device,
        log=log,
        ddp_kwargs={"find_unused_parameters": True} if unused else None,
    )
    loader = batch_loader(views, recipe.workers, rank=context.rank, world_size=context.world_size)
    result = trainer.fit(loader, resume_from="latest" if resume else None)
    model_dir = out / "model"
    if context.is_main:
        export_grouping_model(model, model_dir, "simcon", recipe, result)
    model.eval()
    barrier()  # every rank returns once the model folder is complete
    return GroupViTRun(model_dir, result)
