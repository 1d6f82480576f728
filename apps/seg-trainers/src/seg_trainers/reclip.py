"""ReCLIP++ recipe: multi-label hypotheses, bias rectification of a frozen CLIP, distillation into a DeepLab student.

Wang, Kang et al., "ReCLIP++: Learn to Rectify the Bias of CLIP for Unsupervised Semantic Segmentation", TPAMI,
Secs. III-C to III-E and IV-A; equation numbers are the paper's. The networks are :mod:`seg_models.reclip`, the
losses :mod:`seg_losses.rectification`, the hypotheses :mod:`seg_retrieval.hypotheses`.

:func:`train_reclip` runs the method on the synthetic world's unlabelled images, every stage cached in the run
folder so that a re-run resumes where it stopped:

1. **hypotheses** (``hypotheses.pt``, ``hypotheses.json``) -- the image-level multi-label hypotheses ``H`` of every
   training image (Eq. 6): the top-1 class of the frozen CLIP's global embedding (``clip.encode_image``) of each
   sliding crop against the Query embeddings ``W_q``, kept when its crop frequency exceeds ``t``
   (``hypotheses="crops"``, ReCLIP++), or the whole image's best classes (``"whole-image"``, ReCLIP v1, the
   ablation). Their precision and recall against the classes the world's label maps contain are measured and
   written beside them: a diagnostic only, the labels never reach anything that is trained;
2. **rectification** (``rectify/`` checkpoints, ``rectifier/`` export) -- :class:`seg_models.reclip.ReCLIPRectifier`
   (frozen CLIP; the reference context, ``pe_proj`` and the mask decoder learn) trained with the contrastive loss of
   Eq. 7 on hard Gumbel-softmax masks (Eq. 5) of ``M_o`` times the config's ``logit_scale``, the Gumbel noise
   drawn from a generator seeded by the batch index so that resume is exact;
3. **distillation** (``pseudo_labels.npz``, ``distill/`` checkpoints, ``model/`` export) -- the exported rectifier's
   argmax of ``M_o`` (upsampled to the image) are the pseudo-labels; a :class:`seg_models.reclip.ReCLIPStudent`
   (a DeepLabv3+ projected to the text space, followed by the inherited frozen head) is trained with
   ``L_mask + alpha L_feat + beta L_text`` (Eqs. 8-10) against the teacher's dense features ``Z`` computed on the fly
   from the same augmented images. With ``distill: false``, ``model/`` is the rectifier.

Choices (all recipe fields; see :class:`ReCLIPRecipe`):

- *Gumbel input.* ``M_o`` itself (``logit_scale: 1``, the paper's Eq. 5), not the official ``M_o x 100``, which
  does not train within the synthetic world's budget (measured in :data:`RECLIP_MODEL_DEFAULTS`).
- *Training images.* The world's ``index`` split (seed 0), unlabelled by protocol; evaluation uses other seeds.
- *Crop ratio.* ``r = 0.5`` on 64-px images (32-px windows, stride 16, nine crops with the border-flush windows);
  the paper's ``r = 1/6`` would give 11-px crops, too small for a CLIP with 8-px patches. Every crop is resized to
  the CLIP's input size before encoding (the official code resizes its crops to 224).
- *Optimiser.* The paper's and official SGD (lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9) for both stages,
  through :func:`seg_train.build_optimizer`; ``AdamW`` is an option.
- *Augmentation.* Random scale 0.8-1.25, crop back to 64 px, horizontal flip (:func:`seg_train.augment_pair`); no
  colour jitter, no blur: a thing's colour is much of its identity in the world (the official code also applies
  mmseg's photometric distortion).
- *L_text of the distillation* samples its Gumbel masks from the student's ``M^D`` multiplied by the config's
  ``logit_scale``, exactly as the rectification stage does (Sec. III-E: "the same strategy"), while Eq. 8's
  cross-entropy is on ``M^D`` itself (:func:`seg_losses.distillation_loss` with ``mask_scale``).
- *Teacher.* The distillation reads the exported (fp16) rectifier, the model that is evaluated as ReCLIP++ "rec.",
  whether it was trained in the same call or earlier.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator
from torch import Tensor, nn

from seg_core import ConceptSet, ConfigError, MethodConfig, NoBackground, Normalization, ScheduleConfig, TrainConfig
from seg_eval.world import WorldConfig, render
from seg_eval.world.classes import class_by_name
from seg_eval.world.config import SplitName
from seg_losses.rectification import distillation_loss, rectification_loss
from seg_models.clip import ClipModel
from seg_models.deeplab import deeplab_preset
from seg_models.inference import normalize_images
from seg_models.reclip import (
    ReCLIPConfig,
    ReCLIPRectifier,
    ReCLIPSegmenter,
    ReCLIPStudent,
    load_reclip,
    save_reclip,
    save_reclip_student,
)
from seg_retrieval.hypotheses import multi_label_hypotheses, whole_image_hypotheses
from seg_train import StepOutput, Trainer, TrainResult, barrier, build_optimizer, init_distributed
from seg_train.augment import SegAugmentConfig, augment_pair
from seg_trainers.reco import WORLD_CLASS_NAMES

__all__ = [
    "HYPOTHESES_FILE",
    "PSEUDO_LABELS_FILE",
    "RECLIP_MODEL_DEFAULTS",
    "STAGES",
    "HypothesisSet",
    "ReCLIPRecipe",
    "ReCLIPRun",
    "TrainingBatches",
    "compute_hypotheses",
    "distill_step",
    "hypothesis_stats",
    "make_pseudo_labels",
    "query_embeddings",
    "rectify_step",
    "render_images",
    "train_reclip",
]

HYPOTHESES_FILE = "hypotheses.pt"
"""The cached hypotheses of a run folder (``torch.save`` of plain tensors, lists and numbers)."""
PSEUDO_LABELS_FILE = "pseudo_labels.npz"
"""The cached pseudo-labels of a run folder (uint8 label maps and the rectifier they came from)."""

Stage = Literal["rectify", "distill"]
STAGES: tuple[Stage, ...] = ("rectify", "distill")
"""The training stages of :func:`train_reclip`, in order."""

OptimizerName = Literal["sgd", "adamw"]
Progress = Callable[[str, int, int], None]

# ---------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------


def _rectify_train_default() -> TrainConfig:
    # Official: SGD lr 0.01, momentum 0.9 (recipe field), wd 5e-4, poly 0.9; 50 epochs of VOC at batch 1. 600 steps
    # of 16 images (about five passes over 2,000 images) keep the synthetic world to a few CPU minutes.
    return TrainConfig(
        max_steps=600,
        lr=0.01,
        weight_decay=5e-4,
        schedule=ScheduleConfig(kind="poly", power=0.9),
        log_every=50,
        checkpoint_every=200,
    )


def _distill_train_default() -> TrainConfig:
    # Official distillation: SGD lr 0.01, batch 16, poly; the student's backbone starts from random weights here.
    # 500 steps (four passes over 2,000 images) keep it to minutes on a CPU; a 300-step probe on world 0's val split
    # already put the student above its rectifier (0.243 vs 0.223 mIoU).
    return TrainConfig(
        max_steps=500,
        lr=0.01,
        weight_decay=5e-4,
        schedule=ScheduleConfig(kind="poly", power=0.9),
        log_every=50,
        checkpoint_every=250,
    )


RECLIP_MODEL_DEFAULTS: dict[str, Any] = {"logit_scale": 1.0}
"""The recipe's defaults for :class:`seg_models.reclip.ReCLIPConfig` fields, under the recipe's ``model`` overrides.

``logit_scale`` 1: the Gumbel-softmax of Eq. 5 on ``M_o`` itself, as the paper writes it, instead of the official
``M_o x 100``. With the x100 the straight-through gradient of the (then saturated) softmax is almost zero and the
decoder, whose BatchNorm output starts with every class equally likely, does not learn within the synthetic world's
step budget: on the tuning split (world 0 ``val``, 200 images) after 300 SGD steps on 300 images, ``M_o`` reached
mIoU 0.018 (x100, collapsed) against 0.223 (x1); the frozen CLIP's ``M_q`` alone gives 0.198."""

_DEFAULT_AUGMENT = SegAugmentConfig(
    crop_size=64,
    scale_range=(0.8, 1.25),
    hflip_prob=0.5,
    jitter_prob=0.0,
    hue=0.0,
    saturation=0.0,
    blur_prob=0.0,
)


class ReCLIPRecipe(MethodConfig):
    """Everything that decides a ReCLIP++ model (both stages).

    Attributes:
        clip: The CLIP source (``None``: the bundled synthetic-world CLIP), resolved by the caller and recorded in the
            model folders.
        world: The world whose ``split`` images are the unlabelled training images.
        split: The training split: ``index``, the world's unlabelled collection (never an evaluation world: those
            are other seeds).
        num_images: Training images (images ``0 .. num_images - 1`` of the split).
        class_names: The classes to segment, in channel order; ``None``: the world's 21 classes in the order of the
            ``synthetic`` evaluation preset (the world's class ids). Every name must be a world class (the
            hypothesis diagnostic needs its label id).
        templates: Prompt templates of the Query embeddings ``W_q`` (paper: the 85 ImageNet templates).
        model: Fields of :class:`seg_models.reclip.ReCLIPConfig` to override (every field but ``class_names``,
            which is the recipe's, and ``architecture``), e.g. ``{n_ctx: 8, bias: none}``, applied over
            :data:`RECLIP_MODEL_DEFAULTS` (``logit_scale: 1``; give ``logit_scale: 100`` for the official scale);
            validated when the recipe is.
        hypotheses: ``"crops"``: ReCLIP++'s crop-frequency hypotheses (Eq. 6); ``"whole-image"``: ReCLIP v1's
            hypotheses from the whole image (the ablation).
        crop_ratio: ``r``, the crop side as a fraction of the image side (paper 1/6 at 336-512 px; 0.5 at 64 px).
        crop_threshold: ``t`` of Eq. 6 (official 0: every class that is top-1 in some crop).
        whole_image_top_k: ``"whole-image"``: the ``k`` best classes of every image; with a threshold, the classes
            taken when none reaches it (the official fallback).
        whole_image_threshold: ``"whole-image"``: keep the classes whose cosine similarity reaches it (``None``: the
            top-k rule).
        rectify_train: Steps, learning rate, schedule and seed of the rectification stage.
        rectify_batch_size: Images per rectification step.
        rectify_optimizer: ``"sgd"`` (paper and official) or ``"adamw"``.
        momentum: SGD momentum of both stages (official 0.9).
        tau: ``τ`` of Eq. 7 (default 0.01, CLIP's logit scale 100).
        pooling: Masked pooling of ``Z_g``: ``"area"`` (masked average, paper) or ``"image"`` (÷ h·w, official).
        similarity: ``S_{k,j}``: ``"cosine"`` (paper) or ``"dot"`` (official: pooled vector not re-normalised).
        augment: Augmentation of the training images of both stages (flip and light scale jitter; no colour
            jitter: a thing's colour is much of its identity in the world).
        distill: Run the distillation stage; without it the exported model is the rectifier.
        deeplab_preset: The student's DeepLab (:data:`seg_models.deeplab.DEEPLAB_PRESETS`); its head is
            ``D`` (the CLIP's embedding width) channels wide, projected to the text space.
        deeplab_overrides: Fields of that DeepLab config to override.
        distill_train: Steps, learning rate, schedule and seed of the distillation stage.
        distill_batch_size: Images per distillation step (>= 2: the ASPP's image pooling batch-normalises).
        distill_optimizer: ``"sgd"`` (official) or ``"adamw"``.
        alpha: Weight of ``L_feat`` (Eq. 10; paper 0.5).
        beta: Weight of ``L_text`` (Eq. 10; paper 0.5).
        student_normalization: Pixel normalisation of the student's input; ``None``: the CLIP's.
        embed_batch_size: Images (crops, for the crop hypotheses) per forward pass when computing hypotheses and
            pseudo-labels.
    """

    method: Literal["reclip"] = "reclip"
    clip: str | None = None
    world: WorldConfig = WorldConfig(seed=0)
    split: SplitName = "index"
    num_images: PositiveInt = 2000
    class_names: tuple[str, ...] | None = None
    templates: str | tuple[str, ...] = "imagenet85"
    model: dict[str, Any] = Field(default_factory=dict)
    hypotheses: Literal["crops", "whole-image"] = "crops"
    crop_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    crop_threshold: float = Field(default=0.0, ge=0.0, lt=1.0)
    whole_image_top_k: PositiveInt | None = 3
    whole_image_threshold: float | None = None
    rectify_train: TrainConfig = Field(default_factory=_rectify_train_default)
    rectify_batch_size: PositiveInt = 16
    rectify_optimizer: OptimizerName = "sgd"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    tau: float = Field(default=0.01, gt=0.0)
    pooling: Literal["area", "image"] = "area"
    similarity: Literal["cosine", "dot"] = "cosine"
    augment: SegAugmentConfig = _DEFAULT_AUGMENT
    distill: bool = True
    deeplab_preset: str = "synthetic-64"
    deeplab_overrides: dict[str, Any] = Field(default_factory=dict)
    distill_train: TrainConfig = Field(default_factory=_distill_train_default)
    distill_batch_size: int = Field(default=16, ge=2)
    distill_optimizer: OptimizerName = "sgd"
    alpha: float = Field(default=0.5, ge=0.0)
    beta: float = Field(default=0.5, ge=0.0)
    student_normalization: Normalization | None = None
    embed_batch_size: PositiveInt = 128

    @field_validator("class_names")
    @classmethod
    def _world_classes(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        if not names:
            raise ValueError("the list is empty; name the classes to segment, or leave it out for the world's 21")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"{duplicates} appear more than once; every class once")
        for name in names:
            class_by_name(name)  # ConfigError (a ValueError) naming the unknown class and the known ones
        return names

    @field_validator("model")
    @classmethod
    def _model_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted({"class_names", "architecture"} & set(overrides))
        if reserved:
            raise ValueError(
                f"{reserved} cannot be set in model: the classes are the recipe's class_names and the architecture "
                "is always 'reclip'; remove them"
            )
        try:
            ReCLIPConfig.model_validate({"class_names": ("class",), **RECLIP_MODEL_DEFAULTS, **overrides})
        except ValidationError as error:
            problems = [
                f"model.{'.'.join(str(part) for part in item['loc'])}: "
                + ("unknown field of ReCLIPConfig" if item["type"] == "extra_forbidden" else item["msg"])
                for item in error.errors(include_url=False)
            ]
            raise ValueError("; ".join(problems)) from None
        return overrides

    @model_validator(mode="after")
    def _whole_image_rule(self) -> ReCLIPRecipe:
        if self.hypotheses == "whole-image" and self.whole_image_top_k is None and self.whole_image_threshold is None:
            raise ValueError(
                "hypotheses 'whole-image' needs whole_image_top_k (the k best classes) or whole_image_threshold "
                "(cosine >= threshold); set one, e.g. whole_image_top_k: 3"
            )
        if self.whole_image_threshold is not None and not math.isfinite(self.whole_image_threshold):
            raise ValueError(f"whole_image_threshold must be a finite cosine, got {self.whole_image_threshold}")
        return self

    def resolved_class_names(self) -> tuple[str, ...]:
        """The classes in channel order: ``class_names``, or the world's 21 classes (ids 0-20)."""
        return self.class_names if self.class_names is not None else WORLD_CLASS_NAMES

    def reclip_config(self) -> ReCLIPConfig:
        """The rectifier's config: :attr:`model` with the recipe's classes."""
        return ReCLIPConfig.parse(
            {"class_names": self.resolved_class_names(), **RECLIP_MODEL_DEFAULTS, **self.model}, source="recipe model"
        )

    def hypothesis_settings(self) -> dict[str, Any]:
        """The fields that decide the hypotheses (recorded in, and checked against, ``hypotheses.pt``)."""
        settings: dict[str, Any] = {
            "class_names": list(self.resolved_class_names()),
            "world": self.world.model_dump(mode="json"),
            "split": self.split,
            "num_images": self.num_images,
            "templates": self.templates if isinstance(self.templates, str) else list(self.templates),
            "hypotheses": self.hypotheses,
        }
        if self.hypotheses == "crops":
            settings |= {"crop_ratio": self.crop_ratio, "crop_threshold": self.crop_threshold}
        else:
            settings |= {"top_k": self.whole_image_top_k, "threshold": self.whole_image_threshold}
        return settings


# ---------------------------------------------------------------------------------------------------------------
# Images and hypotheses
# ---------------------------------------------------------------------------------------------------------------


def render_images(
    world: WorldConfig,
    split: SplitName,
    num: int,
    class_names: Sequence[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Render images ``0 .. num - 1`` of a world split, and which classes each contains.

    Args:
        world: The world.
        split: The split.
        num: Number of images.
        class_names: World classes whose presence is reported, in this order.
        progress: Called as ``progress(done, num)`` every 256 images and at the end.

    Returns:
        ``images`` ``[num, 3, H, W]`` uint8 RGB and ``present`` ``[num, C]`` bool (class ``c`` covers at least one
        pixel of the label map). ``present`` is for diagnostics only: the recipe never trains on it.
    """
    ids = torch.tensor([class_by_name(name).id for name in class_names])
    images: list[Tensor] = []
    present = torch.zeros(num, len(class_names), dtype=torch.bool)
    for index in range(num):
        sample = render(world, split, index)
        images.append(torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1))
        found = torch.from_numpy(np.unique(sample.semantic).astype(np.int64))
        present[index] = torch.isin(ids, found)
        if progress is not None and ((index + 1) % 256 == 0 or index + 1 == num):
            progress(index + 1, num)
    return torch.stack(images), present


def query_embeddings(clip: ClipModel, class_names: Sequence[str], templates: str | Sequence[str]) -> Tensor:
    """``W_q``: ``[C, D]`` L2-normalised prompt-ensembled text embeddings (as :meth:`ReCLIPRectifier.from_clip`)."""
    concepts = ConceptSet(
        names=tuple(class_names),
        templates=templates if isinstance(templates, str) else tuple(templates),
        background=NoBackground(),
    )
    with torch.no_grad():
        embeddings = clip.concept_embeddings(concepts).embeddings.float()
    return torch.nn.functional.normalize(embeddings, dim=-1)


@dataclass(frozen=True, eq=False)
class HypothesisSet:
    """The multi-label hypotheses of every training image (what ``hypotheses.pt`` holds).

    Attributes:
        labels: ``[N, C]`` bool, ``H`` of each image.
        scores: ``[N, C]`` float32: crop frequencies ``f(k)`` (``"crops"``) or whole-image cosine similarities.
        settings: :meth:`ReCLIPRecipe.hypothesis_settings` of the recipe that made them, plus the CLIP source.
        stats: :func:`hypothesis_stats` against the world's ground-truth class presence.
    """

    labels: Tensor
    scores: Tensor
    settings: dict[str, Any]
    stats: dict[str, Any]

    def save(self, path: Path) -> None:
        """Write ``path`` atomically (``torch.save`` of tensors and JSON-like values)."""
        tmp = path.with_name(f".{path.name}.tmp")
        payload = {"labels": self.labels, "scores": self.scores, "settings": self.settings, "stats": self.stats}
        torch.save(payload, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> HypothesisSet:
        """Read a file written by :meth:`save`."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(labels=data["labels"], scores=data["scores"], settings=data["settings"], stats=data["stats"])


def compute_hypotheses(
    recipe: ReCLIPRecipe,
    clip: ClipModel,
    images: Tensor,
    text: Tensor,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """The recipe's hypotheses of ``images`` with the frozen CLIP's global image encoder.

    Crops (and whole images) are resized to the CLIP's input size before encoding.

    Args:
        recipe: Decides the rule (``hypotheses``, ``crop_ratio``, ``crop_threshold``, ``whole_image_*``) and the
            images, and crops, per forward pass (``embed_batch_size``).
        clip: The frozen CLIP.
        images: ``[N, 3, H, W]`` uint8 RGB.
        text: ``[C, D]`` Query embeddings ``W_q``.
        progress: Called as ``progress(done, N)`` after each chunk of images.

    Returns:
        ``labels`` ``[N, C]`` bool and ``scores`` ``[N, C]`` float32 (crop frequencies or cosine similarities), on
        the CPU.
    """
    norm = clip.normalization
    labels: list[Tensor] = []
    scores: list[Tensor] = []
    step = recipe.embed_batch_size
    for start in range(0, int(images.shape[0]), step):
        pixels = images[start : start + step].to(clip.device).float() / 255.0
        batch = normalize_images(pixels, norm.mean, norm.std)
        if recipe.hypotheses == "crops":
            crops = multi_label_hypotheses(
                batch,
                clip.encode_image,
                text,
                ratio=recipe.crop_ratio,
                threshold=recipe.crop_threshold,
                input_size=clip.image_size,
                batch_size=step,
            )
            labels.append(crops.labels.cpu())
            scores.append(crops.frequencies.cpu())
        else:
            whole = whole_image_hypotheses(
                batch,
                clip.encode_image,
                text,
                top_k=recipe.whole_image_top_k if recipe.whole_image_threshold is None else None,
                threshold=recipe.whole_image_threshold,
                fallback_top_k=recipe.whole_image_top_k if recipe.whole_image_threshold is not None else None,
                input_size=clip.image_size,
                batch_size=step,
            )
            labels.append(whole.labels.cpu())
            scores.append(whole.scores.cpu())
        if progress is not None:
            progress(min(start + step, int(images.shape[0])), int(images.shape[0]))
    return torch.cat(labels), torch.cat(scores).float()


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def hypothesis_stats(labels: Tensor, present: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Precision and recall of hypotheses against the classes an image contains (micro-averaged over images).

    Args:
        labels: ``[N, C]`` bool hypotheses.
        present: ``[N, C]`` bool ground-truth class presence.
        class_names: The ``C`` names (keys of ``per_class``).

    Returns:
        ``precision`` (hypotheses that are present), ``recall`` (present classes that are hypotheses), ``f1``,
        ``exact`` (images whose hypotheses are exactly their classes), ``hypotheses_per_image``,
        ``classes_per_image``, ``images_without_hypotheses``, ``num_images`` and ``per_class``
        (``{name: {precision, recall, images, predicted}}``). A ratio with an empty denominator is ``None``.
    """
    if labels.shape != present.shape or labels.ndim != 2 or labels.shape[1] != len(class_names):
        raise ValueError(
            f"labels and present must both be [N, C] with C = {len(class_names)} class names, got "
            f"{tuple(labels.shape)} and {tuple(present.shape)}"
        )
    labels, present = labels.bool().cpu(), present.bool().cpu()
    hits = labels & present
    tp, predicted, actual = int(hits.sum()), int(labels.sum()), int(present.sum())
    precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
    f1 = None if not precision or not recall else 2 * precision * recall / (precision + recall)
    count = int(labels.shape[0])
    per_class = {
        name: {
            "precision": _ratio(int(hits[:, c].sum()), int(labels[:, c].sum())),
            "recall": _ratio(int(hits[:, c].sum()), int(present[:, c].sum())),
            "images": int(present[:, c].sum()),
            "predicted": int(labels[:, c].sum()),
        }
        for c, name in enumerate(class_names)
    }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "exact": _ratio(int((labels == present).all(dim=1).sum()), count),
        "hypotheses_per_image": _ratio(predicted, count),
        "classes_per_image": _ratio(actual, count),
        "images_without_hypotheses": int((~labels.any(dim=1)).sum()),
        "num_images": count,
        "per_class": per_class,
    }


def _hypotheses_stage(
    recipe: ReCLIPRecipe,
    clip: ClipModel,
    images: Tensor,
    present: Tensor,
    out: Path,
    *,
    clip_source: str,
    progress: Progress | None,
    main: bool = True,
) -> HypothesisSet:
    """Compute and cache the hypotheses (on rank 0 only, when ``main``), then read them back on every rank."""
    path = out / HYPOTHESES_FILE
    settings = {**recipe.hypothesis_settings(), "clip": clip_source}
    if main and not path.is_file():
        names = recipe.resolved_class_names()
        text = query_embeddings(clip, names, recipe.templates)
        labels, scores = compute_hypotheses(
            recipe,
            clip,
            images,
            text,
            progress=None if progress is None else (lambda done, total: progress("hypotheses", done, total)),
        )
        hypotheses = HypothesisSet(
            labels=labels, scores=scores, settings=settings, stats=hypothesis_stats(labels, present, names)
        )
        hypotheses.save(path)
        summary = {"settings": settings, "stats": hypotheses.stats}
        (out / "hypotheses.json").write_text(json.dumps(summary, indent=2) + "\n")
    barrier()  # under torchrun the other ranks wait for rank 0's file
    cached = HypothesisSet.load(path)
    changed = sorted(key for key in settings if cached.settings.get(key) != settings[key])
    if changed:
        raise ConfigError(
            f"{', '.join(changed)}: {path} holds hypotheses made with other settings ({changed}); delete it (and "
            "the stages after it) or use another run folder"
        )
    return cached


# ---------------------------------------------------------------------------------------------------------------
# Batches and steps
# ---------------------------------------------------------------------------------------------------------------


class TrainingBatches:
    """Batch ``b``: ``batch_size`` training images drawn and augmented with a generator seeded by ``(seed, b)``.

    Each batch is a dict of tensors: ``pixels`` ``[B, 3, h, w]`` augmented RGB in [0, 1] (each step normalises them
    for its network), ``hypotheses`` ``[B, C]`` bool, ``noise_seed`` (a 0-d int64, the seed of the batch's Gumbel
    noise) and, with pseudo-labels, ``labels`` ``[B, h, w]`` int64 (``augment.ignore_index`` on padding). A batch
    depends on its index only, so a resumed run sees the batches of an uninterrupted one. Under ``torchrun`` the
    ``i``-th batch of rank ``r`` (of ``world_size``) is batch ``i * world_size + r``: the ranks split one sequence.

    Args:
        images: ``[N, 3, H, W]`` uint8 RGB.
        hypotheses: ``[N, C]`` bool.
        augment: The augmentation.
        batch_size: Images per batch (per rank).
        seed: The stage's training seed.
        labels: ``[N, H, W]`` uint8 pseudo-labels (distillation), or ``None``.
        rank: This process's rank (0 in one process).
        world_size: Number of processes (1 in one process).
    """

    def __init__(
        self,
        images: Tensor,
        hypotheses: Tensor,
        augment: SegAugmentConfig,
        *,
        batch_size: int,
        seed: int,
        labels: Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, {world_size=}")
        if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] < 1:
            raise ValueError(f"images must be [N, 3, H, W] uint8 with N >= 1, got {tuple(images.shape)} {images.dtype}")
        if hypotheses.shape[0] != images.shape[0] or hypotheses.dtype != torch.bool:
            raise ValueError(
                f"hypotheses must be [N, C] bool with N = {images.shape[0]}, got {tuple(hypotheses.shape)} "
                f"{hypotheses.dtype}"
            )
        if labels is not None and tuple(labels.shape) != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"labels must be [N, H, W] = {[images.shape[0], *images.shape[2:]]}, got {tuple(labels.shape)}"
            )
        self.images = images
        self.hypotheses = hypotheses
        self.augment = augment
        self.batch_size = batch_size
        self.seed = seed
        self.labels = labels
        self.rank = rank
        self.world_size = world_size

    def batch(self, index: int) -> dict[str, Tensor]:
        """Batch ``index`` (the same tensors every time)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        picks = torch.randint(int(self.images.shape[0]), (self.batch_size,), generator=generator)
        pixels, labels = [], []
        blank = torch.zeros(self.images.shape[2:], dtype=torch.long)
        for i in picks.tolist():
            label = self.labels[i].long() if self.labels is not None else blank
            image, label = augment_pair(self.images[i].float() / 255.0, label, self.augment, generator)
            pixels.append(image)
            labels.append(label)
        noise_seed = torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)
        batch = {"pixels": torch.stack(pixels), "hypotheses": self.hypotheses[picks], "noise_seed": noise_seed}
        if self.labels is not None:
            batch["labels"] = torch.stack(labels)
        return batch

    def __call__(self, start_batch: int) -> Iterator[dict[str, Tensor]]:
        """This rank's batches from its ``start_batch``-th on, endlessly (a :data:`seg_train.BatchesFactory`)."""
        index = start_batch
        while True:
            yield self.batch(index * self.world_size + self.rank)
            index += 1


def _noise(batch: Mapping[str, Tensor], device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(batch["noise_seed"]))


def rectify_step(
    text: Tensor,
    config: ReCLIPConfig,
    normalization: Normalization,
    *,
    tau: float,
    pooling: Literal["area", "image"] = "area",
    similarity: Literal["cosine", "dot"] = "cosine",
) -> Callable[[nn.Module, dict[str, Tensor]], StepOutput]:
    """The rectification step: Eq. 7 on hard Gumbel masks (Eq. 5) of ``M_o · logit_scale``.

    Metrics: ``in_hypotheses``, the fraction of grid cells whose argmax class is one of the image's hypotheses.

    Args:
        text: ``[C, D]`` Query embeddings ``W_q``.
        config: The rectifier's config (``logit_scale``, ``gumbel_tau``).
        normalization: The CLIP's pixel normalisation.
        tau: ``τ`` of Eq. 7.
        pooling: See :func:`seg_losses.rectification.masked_pooling`.
        similarity: See :func:`seg_losses.rectification.rectification_loss`.
    """

    def step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        images = normalize_images(batch["pixels"], normalization.mean, normalization.std)
        output = model(images)
        hypotheses = batch["hypotheses"]
        loss = rectification_loss(
            output.features,
            output.logits * config.logit_scale,
            text.to(images.device),
            hypotheses,
            tau=tau,
            gumbel_tau=config.gumbel_tau,
            generator=_noise(batch, images.device),
            pooling=pooling,
            similarity=similarity,
        )
        with torch.no_grad():
            predicted = output.logits.argmax(dim=1).flatten(1)
            in_hypotheses = hypotheses.gather(1, predicted).float().mean()
        return StepOutput(loss=loss, metrics={"in_hypotheses": in_hypotheses}, num_samples=int(images.shape[0]))

    return step


def distill_step(
    teacher: ReCLIPRectifier,
    text: Tensor,
    student_normalization: Normalization,
    *,
    tau: float,
    alpha: float = 0.5,
    beta: float = 0.5,
    pooling: Literal["area", "image"] = "area",
    similarity: Literal["cosine", "dot"] = "cosine",
    ignore_index: int = 255,
) -> Callable[[nn.Module, dict[str, Tensor]], StepOutput]:
    """The distillation step: ``L_mask + α L_feat + β L_text`` (Eqs. 8-10).

    ``L_mask``: cross-entropy of the student's ``M^D`` (upsampled) against the pseudo-labels; ``L_feat``: L1 between
    the teacher's dense features ``Z`` of the same augmented images (no gradient) and the student's ``Z_hat``, both
    resized to the image; ``L_text``: Eq. 7 on the student's features and Gumbel masks of ``M^D · logit_scale``.
    Metrics: the three terms.

    Args:
        teacher: The frozen, trained rectifier.
        text: ``[C, D]`` Query embeddings ``W_q``.
        student_normalization: The student's pixel normalisation.
        tau: ``τ`` of Eq. 7.
        alpha: Weight of ``L_feat``.
        beta: Weight of ``L_text``.
        pooling: See :func:`seg_losses.rectification.masked_pooling`.
        similarity: See :func:`seg_losses.rectification.rectification_loss`.
        ignore_index: Label of padded pixels.
    """
    config = teacher.config
    teacher_norm = teacher.normalization

    def step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        pixels = batch["pixels"]
        with torch.no_grad():
            target = teacher.dense_features(normalize_images(pixels, teacher_norm.mean, teacher_norm.std))
        output = model(normalize_images(pixels, student_normalization.mean, student_normalization.std))
        losses = distillation_loss(
            output.logits,
            output.features,
            target,
            batch["labels"],
            text=text.to(pixels.device),
            hypotheses=batch["hypotheses"],
            alpha=alpha,
            beta=beta,
            ignore_index=ignore_index,
            feature_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
            mask_scale=config.logit_scale,
            tau=tau,
            gumbel_tau=config.gumbel_tau,
            generator=_noise(batch, pixels.device),
            pooling=pooling,
            similarity=similarity,
        )
        loss, mask, feat, text_loss = losses.total, losses.mask, losses.feat, losses.text
        metrics = {"mask": mask.detach(), "feat": feat.detach(), "text": text_loss.detach()}
        return StepOutput(loss=loss, metrics=metrics, num_samples=int(pixels.shape[0]))

    return step


def _optimizer(
    kind: OptimizerName, config: TrainConfig, params: list[nn.Parameter], momentum: float
) -> torch.optim.Optimizer:
    if kind == "sgd":
        return build_optimizer(config, params, optimizer_class=torch.optim.SGD, momentum=momentum)
    return build_optimizer(config, params)


# ---------------------------------------------------------------------------------------------------------------
# Pseudo-labels
# ---------------------------------------------------------------------------------------------------------------


def make_pseudo_labels(
    teacher: ReCLIPRectifier,
    images: Tensor,
    *,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``[N, H, W]`` uint8: the argmax over classes of the rectifier's ``M_o`` upsampled to the image (Sec. III-E).

    Args:
        teacher: The trained rectifier.
        images: ``[N, 3, H, W]`` uint8 RGB.
        batch_size: Images per forward pass.
        progress: Called as ``progress(done, N)`` after each chunk.
    """
    if teacher.config.num_classes > 255:
        raise ValueError(f"pseudo-labels are stored as uint8; {teacher.config.num_classes} classes do not fit")
    segmenter = ReCLIPSegmenter(teacher)
    norm = teacher.normalization
    device = teacher.query_embeddings.device
    maps: list[Tensor] = []
    total = int(images.shape[0])
    with torch.no_grad():
        for start in range(0, total, batch_size):
            pixels = images[start : start + batch_size].to(device).float() / 255.0
            logits = segmenter.logit_maps(normalize_images(pixels, norm.mean, norm.std))
            maps.append(logits.argmax(dim=1).to("cpu", torch.uint8))
            if progress is not None:
                progress(min(start + batch_size, total), total)
    return torch.cat(maps)


def _digest(path: Path) -> str:
    """SHA-256 of a safetensors file with its JSON header in canonical form (sorted keys).

    The file's own bytes are not a stable fingerprint: safetensors writes the ``__metadata__`` map in no fixed
    order, so the same weights saved by two processes can differ in the header.
    """
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + raw[8 + size :]).hexdigest()


def _pseudo_label_stage(
    teacher: ReCLIPRectifier,
    images: Tensor,
    out: Path,
    rectifier_dir: Path,
    *,
    batch_size: int,
    progress: Progress | None,
    main: bool = True,
) -> Tensor:
    """Compute and cache the pseudo-labels (on rank 0 only, when ``main``), then read them back on every rank."""
    path = out / PSEUDO_LABELS_FILE
    weights = rectifier_dir / "model.safetensors"
    digest = _digest(weights)
    if main and not path.is_file():
        labels = make_pseudo_labels(
            teacher,
            images,
            batch_size=batch_size,
            progress=None if progress is None else (lambda done, total: progress("pseudo-label", done, total)),
        )
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(
            tmp, labels=labels.numpy(), class_names=np.array(teacher.class_names), rectifier_sha256=np.array(digest)
        )
        tmp.replace(path)
    barrier()  # under torchrun the other ranks wait for rank 0's file
    with np.load(path) as data:
        labels = torch.from_numpy(data["labels"])
        names = tuple(str(name) for name in data["class_names"])
        made_by = str(data["rectifier_sha256"])
    known = (digest, hashlib.sha256(weights.read_bytes()).hexdigest())  # the second: files of earlier versions
    if made_by not in known or names != teacher.class_names or labels.shape[0] != images.shape[0]:
        raise ConfigError(
            f"{path} was made by another rectifier or for other images (its classes {list(names)}, "
            f"{labels.shape[0]} images); delete it and {out / 'distill'} (or use another run folder) to distill "
            "the current rectifier"
        )
    return labels


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReCLIPRun:
    """What :func:`train_reclip` wrote and measured.

    Attributes:
        model_dir: The final model folder (``model/``: the student, or the rectifier without distillation);
            ``None`` when the stage that writes it did not run.
        rectifier_dir: The exported rectifier (``rectifier/``).
        hypotheses: Precision/recall of the hypotheses against the world's class presence
            (:func:`hypothesis_stats`).
        rectify: The engine's result of the rectification stage (``None``: not run in this call).
        distill: The engine's result of the distillation stage (``None``: not run in this call).
        seconds: Wall time of each stage run in this call.
    """

    model_dir: Path | None
    rectifier_dir: Path
    hypotheses: dict[str, Any]
    rectify: TrainResult | None
    distill: TrainResult | None
    seconds: dict[str, float]


def _check_stages(stages: Sequence[str]) -> tuple[Stage, ...]:
    if isinstance(stages, str) or not stages or any(stage not in STAGES for stage in stages):
        raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {stages!r}")
    return tuple(stage for stage in STAGES if stage in stages)


def _last_record(result: TrainResult, folder: Path) -> dict[str, float]:
    """The run's last logged record; on a re-run with nothing left to train, the one already exported."""
    if result.history:
        return result.last_record
    previous = folder / "training.json"
    if previous.is_file():
        last: dict[str, float] = json.loads(previous.read_text()).get("last", {})
        return last
    return {}


def _write_training(folder: Path, record: dict[str, Any]) -> None:
    (folder / "training.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def train_reclip(
    recipe: ReCLIPRecipe,
    clip: ClipModel,
    out_dir: str | Path,
    *,
    clip_source: str,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    stages: Sequence[Stage] = STAGES,
) -> ReCLIPRun:
    """Hypotheses, rectification and distillation of ReCLIP++ on the world's unlabelled images.

    ``out_dir`` keeps ``recipe.yaml``, ``hypotheses.pt`` and ``hypotheses.json``, ``rectify/`` and ``distill/``
    (the engine's checkpoints and logs), ``pseudo_labels.npz``, and the exports ``rectifier/`` and ``model/``
    (``reclip.json`` + fp16 ``model.safetensors`` + ``training.json``). A re-run reuses the cached hypotheses and
    pseudo-labels (refusing them, with a :class:`ConfigError` naming the fields, when the recipe changed what they
    depend on) and, with ``resume=True``, continues each stage from its newest checkpoint.

    Under ``torchrun`` every process calls it alike: both stages train data-parallel, each rank on its own batches
    (:class:`TrainingBatches`); rank 0 alone computes the hypotheses and pseudo-labels and writes every file
    (caches, checkpoints, exports) while the others wait at a barrier and read what it wrote, and every rank returns
    the same folders.

    Args:
        recipe: The settings.
        clip: The loaded CLIP (``recipe.clip`` resolved by the caller). It is frozen (``requires_grad=False``) and
            moved to ``device``; its weights are never changed.
        out_dir: Run folder.
        clip_source: How to load ``clip`` again (recorded in the model folders).
        resume: Continue each stage from its newest checkpoint in ``out_dir``.
        device: Training device.
        log: Receives the engine's log lines.
        progress: Called as ``progress(stage, done, total)`` (``render``, ``hypotheses``, ``pseudo-label``).
        stages: The stages to run, ``"rectify"`` and/or ``"distill"``; distilling alone needs the ``rectifier/``
            of an earlier call.

    Raises:
        ConfigError: A cached file made with other settings, or distilling with ``recipe.distill`` off.
        FileNotFoundError: Distilling alone without an exported rectifier.
    """
    chosen = _check_stages(stages)
    if chosen == ("distill",) and not recipe.distill:
        raise ConfigError("distill: the recipe turns distillation off, so stages=('distill',) has nothing to run")
    names = recipe.resolved_class_names()
    config = recipe.reclip_config()
    # Under torchrun: join the process group now (the Trainer would later), gloo for a CPU run even where CUDA is.
    context = init_distributed("gloo" if torch.device(device).type == "cpu" else None)
    main = context.is_main
    if not main:
        progress = None  # rank 0 reports, as the Trainer's log lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        recipe.save(out / "recipe.yaml")
    clip.requires_grad_(False)
    clip.to(device).eval()
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    images, present = render_images(
        recipe.world,
        recipe.split,
        recipe.num_images,
        names,
        progress=None if progress is None else (lambda done, total: progress("render", done, total)),
    )
    seconds["render"] = time.perf_counter() - start
    start = time.perf_counter()
    hypotheses = _hypotheses_stage(
        recipe, clip, images, present, out, clip_source=clip_source, progress=progress, main=main
    )
    del present  # ground truth: the diagnostic above is its only use
    seconds["hypotheses"] = time.perf_counter() - start
    text = query_embeddings(clip, names, recipe.templates)
    summary = {key: value for key, value in hypotheses.stats.items() if key != "per_class"}

    rectifier_dir = out / "rectifier"
    rectify_result: TrainResult | None = None
    model_dir: Path | None = None
    if "rectify" in chosen:
        start = time.perf_counter()
        torch.manual_seed(recipe.rectify_train.seed)
        rectifier = ReCLIPRectifier.from_clip(clip, config, templates=recipe.templates).to(device)
        optimizer = _optimizer(
            recipe.rectify_optimizer, recipe.rectify_train, rectifier.trainable_parameters(), recipe.momentum
        )
        batches = TrainingBatches(
            images,
            hypotheses.labels,
            recipe.augment,
            batch_size=recipe.rectify_batch_size,
            seed=recipe.rectify_train.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        step = rectify_step(
            text, config, rectifier.normalization, tau=recipe.tau, pooling=recipe.pooling, similarity=recipe.similarity
        )
        trainer = Trainer(
            recipe.rectify_train, rectifier, optimizer, step, out_dir=out / "rectify", device=device, log=log
        )
        rectify_result = trainer.fit(batches, resume_from="latest" if resume else None)
        seconds["rectify"] = time.perf_counter() - start
        rectifier.eval()
        if main:
            last = _last_record(rectify_result, rectifier_dir)
            record = {
                "method": "reclip",
                "stage": "rectify",
                "recipe": recipe.model_dump(mode="json"),
                "steps": rectify_result.final_step,
                "last": last,
                "hypotheses": hypotheses.stats,
                "seconds": seconds,
            }
            extra = {"recipe": record["recipe"], "last": last, "hypotheses": summary}
            folders = [rectifier_dir] if recipe.distill else [rectifier_dir, out / "model"]
            for folder in folders:
                save_reclip(rectifier, folder, clip=clip_source, extra=extra)
                _write_training(folder, record)
        barrier()  # the export is complete before any rank reads it (the teacher of the distillation)
        if not recipe.distill:
            model_dir = out / "model"

    distill_result: TrainResult | None = None
    if "distill" in chosen and recipe.distill:
        if not (rectifier_dir / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"{rectifier_dir}: no exported rectifier to distil; run the 'rectify' stage first (stages=('rectify', "
                "'distill'))"
            )
        teacher = load_reclip(rectifier_dir, clip, device=device)
        if teacher.class_names != names:
            raise ConfigError(
                f"class_names: {rectifier_dir} was trained on {list(teacher.class_names)}, the recipe asks for "
                f"{list(names)}; retrain the rectifier or use another run folder"
            )
        start = time.perf_counter()
        pseudo_labels = _pseudo_label_stage(
            teacher, images, out, rectifier_dir, batch_size=recipe.embed_batch_size, progress=progress, main=main
        )
        seconds["pseudo-label"] = time.perf_counter() - start

        start = time.perf_counter()
        torch.manual_seed(recipe.distill_train.seed)
        deeplab = deeplab_preset(recipe.deeplab_preset, clip.embed_dim, **recipe.deeplab_overrides)
        student = ReCLIPStudent.from_rectifier(teacher, deeplab, normalization=recipe.student_normalization)
        optimizer = _optimizer(
            recipe.distill_optimizer, recipe.distill_train, student.trainable_parameters(), recipe.momentum
        )
        batches = TrainingBatches(
            images,
            hypotheses.labels,
            recipe.augment,
            batch_size=recipe.distill_batch_size,
            seed=recipe.distill_train.seed,
            labels=pseudo_labels,
            rank=context.rank,
            world_size=context.world_size,
        )
        step = distill_step(
            teacher,
            text,
            student.normalization,
            tau=recipe.tau,
            alpha=recipe.alpha,
            beta=recipe.beta,
            pooling=recipe.pooling,
            similarity=recipe.similarity,
            ignore_index=recipe.augment.ignore_index,
        )
        trainer = Trainer(
            recipe.distill_train, student, optimizer, step, out_dir=out / "distill", device=device, log=log
        )
        distill_result = trainer.fit(batches, resume_from="latest" if resume else None)
        seconds["distill"] = time.perf_counter() - start
        student.eval()
        model_dir = out / "model"
        if main:
            last = _last_record(distill_result, model_dir)
            record = {
                "method": "reclip",
                "stage": "distill",
                "recipe": recipe.model_dump(mode="json"),
                "steps": distill_result.final_step,
                "last": last,
                "hypotheses": hypotheses.stats,
                "teacher": str(rectifier_dir),
                "seconds": seconds,
            }
            save_reclip_student(
                student,
                model_dir,
                extra={"recipe": record["recipe"], "last": last, "hypotheses": summary, "teacher_clip": clip_source},
            )
            _write_training(model_dir, record)
        barrier()  # every rank returns once the model folder is complete

    return ReCLIPRun(
        model_dir=model_dir,
        rectifier_dir=rectifier_dir,
        hypotheses=hypotheses.stats,
        rectify=rectify_result,
        distill=distill_result,
        seconds=seconds,
    )
