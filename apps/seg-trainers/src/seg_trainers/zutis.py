"""ZUTIS recipe: retrieval archives, saliency pseudo-masks, copy-paste, a text-aligned encoder and a query decoder.

Shin, Albanie & Xie, "Zero-shot Unsupervised Transfer Instance Segmentation", CVPR-W 2023.

:func:`train_zutis` runs the whole pipeline on the synthetic world:

1. **archives** -- the world's ``index`` split is embedded with CLIP and the ``k`` images nearest to each concept's
   prompt-ensembled text embedding are kept (:func:`seg_trainers.reco.retrieve_world_archive`, shared with ReCo);
2. **pseudo-masks** -- one category-agnostic saliency mask per archive image from the training-free spectral
   bipartition of :mod:`seg_coseg.saliency` (the paper uses a trained SelfMask); their IoU against the world's
   ground truth is measured and written to ``saliency.json`` (never used to build anything);
3. **copy-paste** -- every training image is composed from ``1..10`` archive images (half of the time all from one
   archive), each augmented, the first one the canvas whose non-salient pixels are background
   (:func:`seg_coseg.copy_paste.copy_paste`);
4. **training** -- :class:`seg_models.zutis.ZUTIS`: the CLIP vision tower (fine-tuned at a tenth of the learning
   rate) projects its patch tokens into the frozen text space; a per-pixel softmax over the text embeddings of
   ``("background", *concepts)`` (bare names, the official classifier) is trained with cross-entropy on the
   copy-paste semantic map; the query decoder on stop-gradient tokens with the Hungarian-matched dice + BCE of every
   decoder layer (:func:`seg_losses.set_criterion_loss`). ``L = L_ce + λ_mask L_mask``, ``λ_mask = 1``;
5. **export** -- :func:`seg_models.zutis.save_zutis` writes ``zutis.json`` + fp16 ``model.safetensors`` (the vision
   tower and the decoder; the text tower stays in the CLIP named by ``zutis.json``), with ``training.json``.

Synthetic-world settings that differ from the paper's (all recipe fields): archives of 100 images from a
3,000-image collection (paper: 500 from 2.6M), 64-px crops, no hue/saturation jitter and no grayscale (a thing's
colour is much of its identity in the world: ReCo+ lost a third of its thing IoU to hue jitter), a smaller decoder
(20 queries, width 128, 4 heads), cosine logits scaled by 10 (official: 1), 1,000 steps at a 10x larger learning
rate (paper: 20k at 5e-5).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torch.utils.data import Dataset

from seg_core import ConfigError, MethodConfig, ScheduleConfig, SegModel, TrainConfig
from seg_coseg.copy_paste import CopyPasteConfig, PasteSource, copy_paste, sample_sources
from seg_coseg.saliency import ForegroundRule, SpectralSaliency, colour_features, concat_features, mask_iou
from seg_eval.world import WorldConfig, render
from seg_eval.world.classes import STUFF_NAMES, THING_NAMES, class_by_name
from seg_losses import set_criterion_loss
from seg_models.clip import ClipModel
from seg_models.dense_clip import DenseVariant, dense_clip_features
from seg_models.inference import normalize_images
from seg_models.zutis import ZUTIS, ZUTISConfig, save_zutis, semantic_logits
from seg_retrieval.index import IndexConfig
from seg_train import StepOutput, Trainer, TrainResult, barrier, build_optimizer, init_distributed, unwrap_model
from seg_trainers.clip import batch_loader
from seg_trainers.reco import WorldImages, archive_indices, retrieve_world_archive

__all__ = [
    "ZUTIS_SYNTHETIC_CONFIG",
    "CopyPasteBatches",
    "PseudoMasks",
    "SaliencySettings",
    "ZUTISRecipe",
    "ZUTISRun",
    "build_pseudo_masks",
    "saliency_detector",
    "text_embeddings",
    "train_zutis",
    "zutis_step",
]

Progress = Callable[[str, int, int], None]

ZUTIS_SYNTHETIC_CONFIG = ZUTISConfig(
    num_queries=20,
    decoder_layers=6,
    decoder_heads=4,
    decoder_dim=128,
    decoder_ffn=512,
    ffn_hidden=128,
    logit_scale=10.0,
)
"""ZUTIS for 64-px world images: a smaller decoder (official: 100 queries, width 256, 8 heads, FFN 2048; 6 layers
kept) and cosine logits scaled by 10 in the cross-entropy and at inference (official: plain cosines, scale 1; on the
world's tuning split after 500 steps scale 10 gave mIoU 0.223 and mask AP 0.041, scale 1 0.165 and 0.019)."""


class SaliencySettings(SegModel):
    """The training-free saliency detector of the archive images (:mod:`seg_coseg.saliency`).

    Attributes:
        features: What the patch affinity graph is built from: ``"clip+colour"`` (CLIP dense features and the mean
            colour of ``cell``-pixel blocks, concatenated on the colour grid), ``"clip"`` or ``"colour"``.
        clip_variant: The CLIP dense features (``"value"``: MaskCLIP's pure value path localises things best on the
            world; ``"maskclip"``, ``"naive"``).
        colour_weight: Weight of the colour cue against CLIP's in ``"clip+colour"``.
        cell: Colour block side in pixels (4: a 16x16 grid on 64-px images).
        tau: TokenCut's affinity threshold.
        foreground_rule: Which side of the cut is the object.
    """

    features: Literal["clip+colour", "clip", "colour"] = "clip+colour"
    clip_variant: DenseVariant = "value"
    colour_weight: float = Field(default=1.0, ge=0.0)
    cell: PositiveInt = 4
    tau: float = Field(default=0.2, ge=-1.0, le=1.0)
    foreground_rule: ForegroundRule = "less_border"


def _zutis_train_default() -> TrainConfig:
    # Official: AdamW lr 5e-5 (encoder 5e-6), wd 0.05, poly 0.9, 20k iterations. Ten times the learning rate and a
    # tenth of the steps for the world's small CLIP and 64-px crops.
    return TrainConfig(
        max_steps=1000,
        lr=5e-4,
        weight_decay=0.05,
        schedule=ScheduleConfig(kind="poly", power=0.9),
        grad_clip_norm=1.0,
        log_every=50,
        checkpoint_every=500,
    )


class ZUTISRecipe(MethodConfig):
    """Everything that decides a ZUTIS model.

    Attributes:
        clip: The CLIP source (``None``: the bundled synthetic-world CLIP), resolved by the caller, recorded in the
            model folder.
        world: The world whose ``index`` split is the unlabelled collection.
        collection_size: Images of that split to retrieve from.
        concepts: Concepts to build archives for and train on (default: the world's 14 things). Background is not a
            concept: it is the literal class "background" at label 0.
        k: Archive size per concept (paper: 500).
        templates: Prompt templates of the retrieval text embeddings (paper: the 85 ImageNet ones). The classifier
            uses bare names (the official code).
        index: The nearest-neighbour index.
        saliency: The pseudo-mask detector.
        copy_paste: Copy-paste synthesis (the official settings at 64 px without hue, saturation and grayscale).
        model: The ZUTIS network (its ``stop_gradient`` is the paper's Table 1-2 switch).
        train: Optimiser, schedule and steps.
        encoder_lr_mult: Learning rate of the CLIP vision tower relative to the rest (official 0.1).
        batch_size: Images per step (official 8 at 384 px).
        mask_loss_weight: ``λ_mask`` (official 1).
        mask_loss_reduction: ``"official"`` (sum over instances and layers, / batch) or ``"mean"``.
        workers: DataLoader worker processes composing copy-paste batches (0: in the training process).
        embed_batch_size: Images per forward pass when embedding the collection and computing saliency.
    """

    method: Literal["zutis"] = "zutis"
    clip: str | None = None
    world: WorldConfig = WorldConfig(seed=0)
    collection_size: PositiveInt = 3000
    concepts: tuple[str, ...] | None = None
    k: PositiveInt = 100
    templates: str | tuple[str, ...] = "imagenet85"
    index: IndexConfig = IndexConfig()
    saliency: SaliencySettings = SaliencySettings()
    copy_paste: CopyPasteConfig = CopyPasteConfig(crop_size=64, hue=0.0, saturation=0.0, grayscale_prob=0.0)
    model: ZUTISConfig = ZUTIS_SYNTHETIC_CONFIG
    train: TrainConfig = Field(default_factory=_zutis_train_default)
    encoder_lr_mult: float = Field(default=0.1, ge=0.0)
    batch_size: PositiveInt = 16
    mask_loss_weight: float = Field(default=1.0, ge=0.0)
    mask_loss_reduction: Literal["official", "mean"] = "official"
    workers: int = Field(default=0, ge=0)
    embed_batch_size: PositiveInt = 128

    def concept_names(self) -> tuple[str, ...]:
        """The concepts (default: the world's things); checked against the world's class table."""
        names = self.concepts if self.concepts is not None else THING_NAMES
        if not names:
            raise ConfigError("concepts: the list is empty; name at least one class, or leave it out for all things")
        if "background" in names:
            raise ConfigError(
                "concepts: 'background' is not a concept of ZUTIS (it is always label 0); remove it from the list"
            )
        for name in names:
            class_by_name(name)  # ConfigError naming the unknown class and the known ones
        return tuple(names)


# ---------------------------------------------------------------------------------------------------------------
# Pseudo-masks
# ---------------------------------------------------------------------------------------------------------------


def saliency_detector(clip: ClipModel, settings: SaliencySettings) -> SpectralSaliency:
    """The recipe's :class:`SpectralSaliency` on ``clip``'s dense features and/or the images' colours."""

    def clip_features(images: Tensor) -> Tensor:
        norm = clip.normalization
        with torch.no_grad():
            return dense_clip_features(
                clip.visual, normalize_images(images, norm.mean, norm.std), variant=settings.clip_variant
            ).float()

    def features(images: Tensor) -> Tensor:
        images = images.to(clip.device)
        if settings.features == "clip":
            return clip_features(images)
        colours = colour_features(images, settings.cell)
        if settings.features == "colour":
            return colours
        return concat_features([colours, clip_features(images)], [settings.colour_weight, 1.0])

    return SpectralSaliency(features, tau=settings.tau, foreground_rule=settings.foreground_rule)


@dataclass(frozen=True, eq=False)
class PseudoMasks:
    """Every archive image with its saliency mask, per category id (1 = the first concept).

    Attributes:
        names: The concepts, category ``c`` is ``names[c - 1]``.
        images: Category id -> ``[k, 3, S, S]`` uint8 RGB.
        masks: Category id -> ``[k, S, S]`` bool saliency masks.
        iou: Measured quality: per concept, the mean IoU of the masks against the concept's ground-truth pixels and
            against all thing pixels, and the same means over concepts (``"<mean>"``).
    """

    names: tuple[str, ...]
    images: dict[int, Tensor]
    masks: dict[int, Tensor]
    iou: dict[str, dict[str, float]]

    def source(self, category: int, index: int) -> PasteSource:
        """Archive image ``index`` of ``category`` as a :class:`PasteSource`."""
        return PasteSource(self.images[category][index].float() / 255.0, self.masks[category][index], category)

    def save(self, path: Path) -> None:
        """Write ``pseudo_masks.npz`` (atomically)."""
        arrays: dict[str, Any] = {}
        for category in self.images:
            arrays[f"images_{category}"] = self.images[category].numpy()
            arrays[f"masks_{category}"] = self.masks[category].numpy()
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(tmp, names=np.array(self.names), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, iou: dict[str, dict[str, float]]) -> PseudoMasks:
        """Read a file written by :meth:`save`."""
        with np.load(path) as data:
            names = tuple(str(name) for name in data["names"])
            images = {c: torch.from_numpy(data[f"images_{c}"]) for c in range(1, len(names) + 1)}
            masks = {c: torch.from_numpy(data[f"masks_{c}"]) for c in range(1, len(names) + 1)}
        return cls(names=names, images=images, masks=masks, iou=iou)


def build_pseudo_masks(
    clip: ClipModel,
    collection: WorldImages,
    archive_ids: Mapping[str, Sequence[str]],
    settings: SaliencySettings,
    *,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> PseudoMasks:
    """Saliency masks of every archive image and their IoU against the world's ground truth.

    Args:
        clip: The CLIP whose dense features the detector uses.
        collection: The world collection the archive ids index.
        archive_ids: Concept -> its archive's image ids, in the concepts' order.
        settings: The detector.
        batch_size: Images per detector call.
        progress: Called as ``progress(done, total)`` per concept.
    """
    detector = saliency_detector(clip, settings)
    names = tuple(archive_ids)
    images: dict[int, Tensor] = {}
    masks: dict[int, Tensor] = {}
    iou: dict[str, dict[str, float]] = {}
    for category, name in enumerate(names, start=1):
        indices = archive_indices(archive_ids[name], collection)
        samples = [render(collection.world, collection.split, i) for i in indices]
        pixels = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1) for s in samples])
        predicted = torch.cat(
            [
                detector.masks(pixels[i : i + batch_size].float() / 255.0).cpu()
                for i in range(0, len(indices), batch_size)
            ]
        )
        class_id = class_by_name(name).id
        semantic = torch.from_numpy(np.stack([s.semantic for s in samples]).astype(np.int64))
        ignore = semantic == 255
        concept_truth = semantic == class_id
        thing_truth = (semantic >= len(STUFF_NAMES)) & ~ignore
        iou[name] = {
            "concept": float(mask_iou(predicted, concept_truth, ignore).mean()),
            "things": float(mask_iou(predicted, thing_truth, ignore).mean()),
            "all_foreground_concept": float(mask_iou(torch.ones_like(predicted), concept_truth, ignore).mean()),
            "foreground_fraction": float(predicted.float().mean()),
        }
        images[category] = pixels
        masks[category] = predicted
        if progress is not None:
            progress(category, len(names))
    keys = next(iter(iou.values())).keys()
    iou["<mean>"] = {key: float(np.mean([iou[name][key] for name in names])) for key in keys}
    return PseudoMasks(names=names, images=images, masks=masks, iou=iou)


# ---------------------------------------------------------------------------------------------------------------
# Copy-paste batches
# ---------------------------------------------------------------------------------------------------------------


class CopyPasteBatches(Dataset[dict[str, Tensor]]):
    """Batch ``b``: ``batch_size`` copy-paste images drawn with a generator seeded by ``(seed, b)``.

    Each item is a dict of tensors: ``images`` ``[B, 3, S, S]`` normalised, ``semantic`` ``[B, S, S]`` int64 (0
    background, ``c`` the category, ``ignore_index`` on padding), ``instances`` ``[B, N, S, S]`` bool padded to
    ``N = max_sources`` and ``valid`` ``[B, N]`` bool (a pasted instance with a non-empty visible mask). Under
    ``torchrun`` item ``i`` of rank ``r`` (of ``world_size``) is batch ``b = i * world_size + r``: the ranks split one
    sequence of batches.

    Args:
        pseudo: The archives and their masks.
        config: Copy-paste settings.
        batch_size: Images per batch (per rank).
        num_batches: Length of the dataset (the run's steps times gradient accumulation, per rank).
        seed: The training seed.
        normalization: ``(mean, std)`` of the encoder's input.
        rank: This process's rank (0 in one process).
        world_size: Number of processes (1 in one process).
    """

    def __init__(
        self,
        pseudo: PseudoMasks,
        config: CopyPasteConfig,
        *,
        batch_size: int,
        num_batches: int,
        seed: int,
        normalization: tuple[tuple[float, ...], tuple[float, ...]],
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, {world_size=}")
        self.pseudo = pseudo
        self.config = config
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = seed
        self.normalization = normalization
        self.rank = rank
        self.world_size = world_size
        self._archives = {category: range(int(images.shape[0])) for category, images in pseudo.images.items()}

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index * self.world_size + self.rank)
        size, slots = self.config.crop_size, self.config.max_sources
        images, semantic = [], []
        instances = torch.zeros(self.batch_size, slots, size, size, dtype=torch.bool)
        valid = torch.zeros(self.batch_size, slots, dtype=torch.bool)
        for row in range(self.batch_size):
            draw = sample_sources(self._archives, self.config, generator)
            sample = copy_paste([self.pseudo.source(c, i) for c, i in draw.picks], self.config, generator)
            images.append(sample.image)
            semantic.append(sample.semantic)
            count = int(sample.instances.shape[0])
            instances[row, :count] = sample.instances
            valid[row, :count] = sample.visible
        mean, std = self.normalization
        return {
            "images": normalize_images(torch.stack(images), mean, std),
            "semantic": torch.stack(semantic),
            "instances": instances,
            "valid": valid,
        }


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def text_embeddings(clip: ClipModel, names: Sequence[str]) -> Tensor:
    """``[1 + N, D]`` L2-normalised text embeddings of ``("background", *names)``, bare names (official)."""
    with torch.no_grad():
        embeddings = clip.encode_text(["background", *names]).float()
    return F.normalize(embeddings, dim=-1)


def zutis_step(
    text: Tensor,
    *,
    logit_scale: float,
    mask_loss_weight: float,
    reduction: Literal["official", "mean"] = "official",
    ignore_index: int = 255,
) -> Callable[[nn.Module, dict[str, Tensor]], StepOutput]:
    """The training step ``L = L_ce + λ_mask · L_mask`` over a copy-paste batch (ZUTIS Sec. 3.3, 4.1).

    Args:
        text: ``[C, D]`` frozen text embeddings, background first.
        logit_scale: Multiplies the cosine logits of the cross-entropy (official 1).
        mask_loss_weight: ``λ_mask``.
        reduction: The set criterion's reduction.
        ignore_index: Semantic label skipped by the cross-entropy.
    """

    def step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        images = batch["images"]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        output = model(images)
        logits = semantic_logits(output.embeddings, text.to(images.device), logit_scale)
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        ce = F.cross_entropy(logits, batch["semantic"], ignore_index=ignore_index)
        targets = [masks[keep] for masks, keep in zip(batch["instances"], batch["valid"], strict=True)]
        mask = set_criterion_loss(output.layer_mask_logits, targets, target_size=size, reduction=reduction)
        loss = ce + mask_loss_weight * mask.loss
        return StepOutput(
            loss=loss,
            metrics={"ce": ce.detach(), "mask": mask.loss.detach(), "final_layer_mask": mask.per_layer[-1]},
            num_samples=int(images.shape[0]),
        )

    return step


@dataclass(frozen=True)
class ZUTISRun:
    """What :func:`train_zutis` wrote and measured.

    Attributes:
        model_dir: The model folder (``zutis.json``, ``model.safetensors``, ``training.json``).
        saliency_iou: Pseudo-mask IoU against the world's ground truth (see :class:`PseudoMasks`).
        purity: Precision@k of each archive.
        result: The engine's result.
        seconds: Wall time of each stage.
    """

    model_dir: Path
    saliency_iou: dict[str, dict[str, float]]
    purity: dict[str, dict[int, float]]
    result: TrainResult
    seconds: dict[str, float]


def _parameter_groups(model: ZUTIS, encoder_lr_mult: float, weight_decay: float) -> list[dict[str, Any]]:
    """The vision tower at ``encoder_lr_mult``; no weight decay on biases, norms and embeddings."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        encoder = name.startswith("visual.")
        decay = parameter.ndim >= 2 and not name.endswith(("positional_embedding", "class_embedding"))
        groups.setdefault((encoder, decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr_multiplier": encoder_lr_mult if encoder else 1.0,
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (encoder, decay), params in groups.items()
    ]


def train_zutis(
    recipe: ZUTISRecipe,
    clip: ClipModel,
    out_dir: str | Path,
    *,
    clip_source: str,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> ZUTISRun:
    """Retrieve, pseudo-label, train and export a ZUTIS model under ``out_dir / "model"``.

    ``out_dir`` keeps every stage's output, so a re-run after a crash resumes where it stopped: ``store/`` (image
    embeddings), ``archive.json`` and ``purity.json``, ``pseudo_masks.npz`` and ``saliency.json``, ``recipe.yaml``,
    the engine's checkpoints and logs.

    Under ``torchrun`` every process calls it alike: the ranks split the collection's embedding shards and train
    data-parallel, each on its own copy-paste batches (:class:`CopyPasteBatches`); rank 0 alone curates the archives,
    computes the pseudo-masks and writes every other file (caches, checkpoints, the model folder) while the others
    wait at a barrier and read what it wrote, and every rank returns the same folder.

    Args:
        recipe: The settings.
        clip: The loaded CLIP (``recipe.clip`` resolved by the caller); its text tower stays frozen, its vision tower
            is copied and fine-tuned.
        out_dir: Run folder.
        clip_source: How to load ``clip`` again (recorded in the model folder).
        resume: Continue training from the newest checkpoint in ``out_dir``.
        device: Training device.
        log: Receives the engine's log lines.
        progress: Called as ``progress(stage, done, total)`` (stages ``embed`` and ``pseudo-mask``).
    """
    names = recipe.concept_names()
    # Under torchrun: join the process group now (the Trainer would later), gloo for a CPU run even where CUDA is.
    context = init_distributed("gloo" if torch.device(device).type == "cpu" else None)
    main = context.is_main
    if not main:
        progress = None  # rank 0 reports, as the Trainer's log lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        recipe.save(out / "recipe.yaml")
    seconds: dict[str, float] = {}
    clip.eval()
    # Collective under torchrun: the ranks embed their shards of the store, rank 0 curates and writes the archive.
    retrieved = retrieve_world_archive(
        clip,
        recipe.world,
        recipe.collection_size,
        names,
        out,
        k=recipe.k,
        clip_source=clip_source,
        templates=recipe.templates,
        index=recipe.index,
        batch_size=recipe.embed_batch_size,
        progress=progress,
    )
    seconds |= retrieved.seconds

    start = time.perf_counter()
    masks_path, iou_path = out / "pseudo_masks.npz", out / "saliency.json"
    pseudo: PseudoMasks | None = None
    if main and not (masks_path.is_file() and iou_path.is_file()):
        archive_ids = {name: retrieved.archive[name].image_ids for name in names}
        pseudo = build_pseudo_masks(
            clip,
            retrieved.collection,
            archive_ids,
            recipe.saliency,
            batch_size=recipe.embed_batch_size,
            progress=None if progress is None else (lambda done, total: progress("pseudo-mask", done, total)),
        )
        pseudo.save(masks_path)
        iou_path.write_text(json.dumps(pseudo.iou, indent=2) + "\n")
    barrier()  # under torchrun the other ranks wait for rank 0's pseudo-masks
    if pseudo is None:
        pseudo = PseudoMasks.load(masks_path, json.loads(iou_path.read_text()))
        if pseudo.names != names:
            raise ConfigError(
                f"concepts: {masks_path} holds pseudo-masks for {list(pseudo.names)}, the recipe asks for "
                f"{list(names)}; delete the file or use another run folder"
            )
    purity = retrieved.purity
    seconds["pseudo-mask"] = time.perf_counter() - start

    torch.manual_seed(recipe.train.seed)
    model = ZUTIS(copy.deepcopy(clip.visual), recipe.model)
    model.train()
    optimizer = build_optimizer(
        recipe.train, _parameter_groups(model, recipe.encoder_lr_mult, recipe.train.weight_decay)
    )
    norm = clip.normalization
    batches = CopyPasteBatches(
        pseudo,
        recipe.copy_paste,
        batch_size=recipe.batch_size,
        num_batches=recipe.train.max_steps * recipe.train.grad_accum_steps,
        seed=recipe.train.seed,
        normalization=(norm.mean, norm.std),
        rank=context.rank,
        world_size=context.world_size,
    )
    step = zutis_step(
        text_embeddings(clip, names),
        logit_scale=recipe.model.logit_scale,
        mask_loss_weight=recipe.mask_loss_weight,
        reduction=recipe.mask_loss_reduction,
        ignore_index=recipe.copy_paste.ignore_index,
    )
    start = time.perf_counter()
    trainer = Trainer(recipe.train, model, optimizer, step, out_dir=out, device=device, log=log)
    result = trainer.fit(batch_loader(batches, recipe.workers), resume_from="latest" if resume else None)
    seconds["train"] = time.perf_counter() - start

    model_dir = out / "model"
    if main:
        trained = unwrap_model(model)
        assert isinstance(trained, ZUTIS)
        save_zutis(
            trained,
            model_dir,
            clip=clip_source,
            label_names=("background", *names),
            normalization=norm,
            image_size=(recipe.copy_paste.crop_size, recipe.copy_paste.crop_size),
            extra={"saliency_iou": pseudo.iou["<mean>"]},
        )
        record = {
            "recipe": recipe.model_dump(mode="json"),
            "steps": result.final_step,
            "last": result.last_record,
            "saliency_iou": pseudo.iou,
            "purity": purity.get("<mean>", {}),
            "seconds": seconds,
        }
        (model_dir / "training.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    barrier()  # every rank returns once the model folder is complete
    return ZUTISRun(
        model_dir=model_dir,
        saliency_iou=pseudo.iou,
        purity=purity,
        result=result,
        seconds=seconds,
    )
