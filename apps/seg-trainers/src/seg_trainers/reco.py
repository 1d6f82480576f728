"""ReCo and ReCo+ recipes: retrieval, co-segmentation into reference embeddings, pseudo-labels, a trained segmenter.

Shin, Xie & Albanie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022.

**ReCo** (:func:`build_reco`) has no gradient step; its "training" is building the reference embeddings:

1. embed an unlabelled image collection with CLIP (:func:`seg_retrieval.store.embed_collection`, resumable);
2. index it and curate, per concept, the ``k`` images nearest to its prompt-ensembled text embedding
   (:mod:`seg_retrieval.index`, :mod:`seg_retrieval.curate`);
3. co-segment each archive on the co-segmentation backbone (the CLIP tower by default), gated by the DenseCLIP
   saliency of the concept (language-guided co-segmentation) and by the context concepts' maps (context
   elimination) (:func:`seg_coseg.context.reference_embeddings`);
4. save the reference embeddings (fp16 safetensors) and ``reco.json`` into a model folder that
   :func:`load_reco` turns into a :class:`seg_models.reco.ReCoSegmenter`.

On the synthetic world the collection is the ``index`` split of the training world (seed 0 by default) and the
context concepts are the world's stuff classes: its co-occurrence priors put cows on grass and boats on water, the
confound that context elimination exists to remove. The real-world default context (tree, sky, building, road,
person) is the paper's.

**ReCo+** (:func:`train_reco_plus`): ReCo segments the unlabelled target images; a DeepLabv3+ is trained on those
pseudo-labels with the paper's augmentations through the seg-train engine, and saved as fp16 safetensors with its
config; :func:`load_reco_plus` turns the folder into a :class:`seg_models.closed_set.ClosedSetSegmenter`.

Under ``torchrun`` every process calls the recipes alike: the ranks split the collection's embedding shards
(:func:`seg_retrieval.store.embed_collection`) and ReCo+'s training batches (rank ``r`` of ``W`` takes batches
``r, r + W, ...`` of the one-process sequence); rank 0 alone curates, co-segments, pseudo-labels and writes every
other file, while the others wait at a barrier and read back what they need.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from safetensors.torch import save_file
from torch import Tensor, nn

from seg_core import (
    IMAGENET_MEAN_STD,
    Archive,
    ConceptSet,
    ConfigError,
    MaskRefiner,
    MethodConfig,
    Normalization,
    ScheduleConfig,
    Segmenter,
    TrainConfig,
)
from seg_coseg.context import CoSegConfig, reference_embeddings, saliency_weights
from seg_eval.world import STUFF_NAMES, WorldConfig, render
from seg_eval.world.classes import CLASSES
from seg_eval.world.config import SplitName
from seg_models.clip import ClipModel
from seg_models.deeplab import DeepLabConfig, build_deeplab, deeplab_preset, parameter_groups
from seg_models.inference import normalize_images
from seg_models.reco import (
    RECO_FILE,
    RECO_PLUS_FILE,
    RECO_PLUS_WEIGHTS,
    CosegBackboneConfig,
    ReCoOptions,
    ReCoPlusInfo,
    ReferenceEmbeddings,
    build_coseg_backbone,
    load_reco,
    load_reco_plus,
    read_reco_info,
    read_reco_plus_info,
    save_reference_embeddings,
)
from seg_models.refiners import make_refiner
from seg_models.weights import export_state_dict
from seg_retrieval.curate import archive_purity, curate_archive, load_archive, save_archive
from seg_retrieval.index import IndexConfig, build_index
from seg_retrieval.store import EmbeddingStore, embed_collection
from seg_train import StepOutput, Trainer, TrainResult, barrier, build_optimizer, init_distributed, unwrap_model
from seg_train.augment import SegAugmentConfig, augment_pair

__all__ = [
    "RECO_FILE",
    "RECO_PLUS_FILE",
    "WORLD_CLASS_NAMES",
    "ReCoPlusInfo",
    "ReCoPlusRecipe",
    "ReCoPlusRun",
    "ReCoRecipe",
    "ReCoRun",
    "RetrievedArchive",
    "WorldImages",
    "archive_indices",
    "build_reco",
    "export_reco_plus",
    "load_reco",
    "load_reco_plus",
    "make_pseudo_labels",
    "read_reco_info",
    "read_reco_plus_info",
    "retrieve_world_archive",
    "train_reco_plus",
]

WORLD_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

Progress = Callable[[str, int, int], None]

# ---------------------------------------------------------------------------------------------------------------
# The synthetic world as an unlabelled image collection
# ---------------------------------------------------------------------------------------------------------------


class WorldImages:
    """Images ``0 .. num - 1`` of a world split as ``(image_id, image)`` pairs, rendered on demand.

    Args:
        world: The world (its seed included).
        split: The split (``index`` is the unlabelled retrieval collection).
        num: Number of images.
        normalization: Normalise the pixels with these statistics (what an encoder wants), or ``None`` for RGB in
            [0, 1].
    """

    def __init__(
        self, world: WorldConfig, split: SplitName, num: int, normalization: Normalization | None = None
    ) -> None:
        self.world = world
        self.split: SplitName = split
        self.num = num
        self.normalization = normalization

    def __len__(self) -> int:
        return self.num

    def image_id(self, index: int) -> str:
        """``<split>_<index:06d>``, the stem ``seg world generate`` writes."""
        return f"{self.split}_{index:06d}"

    def index_of(self, image_id: str) -> int:
        """Inverse of :meth:`image_id`."""
        split, _, number = image_id.rpartition("_")
        if split != self.split or not number.isdigit():
            raise KeyError(f"{image_id!r} is not an image id of the {self.split!r} split")
        return int(number)

    def pixels(self, index: int) -> Tensor:
        """``[3, H, W]`` RGB in [0, 1]."""
        if not 0 <= index < self.num:
            raise IndexError(f"image {index} out of range for {self.num} images")
        image = render(self.world, self.split, index).image
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0

    def labels(self, index: int) -> set[str]:
        """Names of the classes present in image ``index`` (for archive purity; never used to build anything)."""
        semantic = render(self.world, self.split, index).semantic
        return {CLASSES[int(value)].name for value in np.unique(semantic) if int(value) < len(CLASSES)}

    def __getitem__(self, index: int) -> tuple[str, Tensor]:
        pixels = self.pixels(index)
        if self.normalization is not None:
            pixels = normalize_images(pixels[None], self.normalization.mean, self.normalization.std)[0]
        return self.image_id(index), pixels


# ---------------------------------------------------------------------------------------------------------------
# ReCo
# ---------------------------------------------------------------------------------------------------------------


class ReCoRecipe(MethodConfig):
    """Everything that decides a ReCo model (retrieval, co-segmentation, inference switches).

    Attributes:
        clip: The CLIP source (``None``: the bundled synthetic-world CLIP; else ``local-dir:``, ``hf-hub:`` or an
            open_clip ``NAME/TAG``). Resolved by the caller (the CLI), recorded in ``reco.json``.
        world: The world whose ``index`` split is the unlabelled collection.
        collection_size: Images of that split to retrieve from.
        concepts: Concepts to build reference embeddings for (default: every world class).
        k: Archive size per concept (paper: 50).
        templates: Prompt templates of the text embeddings (retrieval and saliency; paper: the 85 ImageNet ones).
        backbone: The co-segmentation backbone (default: the CLIP tower's final tokens).
        coseg: Language guidance, context elimination and its concepts (default here: the world's stuff).
        index: The nearest-neighbour index over the collection.
        options: Inference switches stored with the model.
        batch_size: Images per forward pass.
        dedup_threshold: Drop a retrieved image this close (cosine) to a better-ranked one; ``None``: keep all.
    """

    method: Literal["reco"] = "reco"
    clip: str | None = None
    world: WorldConfig = WorldConfig(seed=0)
    collection_size: PositiveInt = 3000
    concepts: tuple[str, ...] | None = None
    k: PositiveInt = 50
    templates: str | tuple[str, ...] = "imagenet85"
    backbone: CosegBackboneConfig = CosegBackboneConfig(kind="clip", clip_variant="naive")
    coseg: CoSegConfig = CoSegConfig(context_concepts=STUFF_NAMES)
    index: IndexConfig = IndexConfig()
    options: ReCoOptions = ReCoOptions()
    batch_size: PositiveInt = 128
    dedup_threshold: float | None = Field(default=None, gt=0.0, le=1.0)

    def concept_names(self) -> tuple[str, ...]:
        """The concepts to build (default: every world class)."""
        return self.concepts if self.concepts is not None else WORLD_CLASS_NAMES


@dataclass(frozen=True)
class ReCoRun:
    """What :func:`build_reco` wrote and measured.

    Attributes:
        model_dir: The model folder (``reco.json`` + reference embeddings).
        archive: The curated archives.
        purity: Precision@k of each archive from the world's labels (only on the synthetic world).
        seconds: Wall time of each stage.
    """

    model_dir: Path
    archive: Archive
    purity: dict[str, dict[int, float]]
    seconds: dict[str, float]


def _text_embeddings(clip: ClipModel, names: Sequence[str], templates: str | tuple[str, ...]) -> Tensor:
    with torch.no_grad():
        return clip.concept_embeddings(ConceptSet(names=tuple(names), templates=templates)).embeddings.float()


def build_reco(
    recipe: ReCoRecipe,
    clip: ClipModel,
    out_dir: str | Path,
    *,
    clip_source: str,
    progress: Progress | None = None,
) -> ReCoRun:
    """Retrieve, co-segment and save a ReCo model folder under ``out_dir / "model"``.

    ``out_dir`` also keeps the embedding store (``store/``, resumable), the index (``index/``), the archive
    (``archive.json``) and its purity (``purity.json``), so a re-run after a crash or with other concepts reuses them.

    Under ``torchrun`` every process calls it alike: the ranks split the embedding of the collection
    (:func:`retrieve_world_archive`), rank 0 alone co-segments and writes the model folder, and every rank returns
    the same run once the folder is complete.

    Args:
        recipe: The settings.
        clip: The loaded CLIP (``recipe.clip`` resolved by the caller).
        out_dir: Run folder.
        clip_source: How to load ``clip`` again (recorded in ``reco.json``).
        progress: Called as ``progress(stage, done, total)`` (on rank 0 only under ``torchrun``).
    """
    # Under torchrun: join the process group now, gloo for a CPU CLIP even where CUDA is.
    main = init_distributed("gloo" if clip.device.type == "cpu" else None).is_main
    if not main:
        progress = None  # rank 0 reports
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    names = recipe.concept_names()
    context = recipe.coseg.context_concepts if recipe.coseg.context_elimination else ()
    retrieve_names = tuple(dict.fromkeys((*names, *context)))
    start = time.perf_counter()
    retrieved = retrieve_world_archive(
        clip,
        recipe.world,
        recipe.collection_size,
        retrieve_names,
        out,
        k=recipe.k,
        clip_source=clip_source,
        templates=recipe.templates,
        index=recipe.index,
        batch_size=recipe.batch_size,
        dedup_threshold=recipe.dedup_threshold,
        progress=progress,
    )
    archive, collection, text, purity = retrieved.archive, retrieved.collection, retrieved.text, retrieved.purity
    seconds["embed"] = retrieved.seconds["embed"]
    seconds["retrieve"] = retrieved.seconds["retrieve"]

    model_dir = out / "model"
    if main:  # under torchrun the other ranks wait at the barrier below
        start = time.perf_counter()
        backbone = build_coseg_backbone(recipe.backbone, clip)
        features: dict[str, Tensor] = {}
        saliency: dict[str, Tensor] = {}
        text_by_name = dict(zip(retrieve_names, text, strict=True))
        with torch.no_grad():
            for done, name in enumerate(retrieve_names):
                pixels = torch.stack(
                    [collection.pixels(i) for i in archive_indices(archive[name].image_ids, collection)]
                )
                pixels = pixels.to(clip.device)
                features[name] = backbone(pixels)
                dense = clip.dense_features(
                    normalize_images(pixels, clip.normalization.mean, clip.normalization.std)
                ).float()
                saliency[name] = saliency_weights(
                    dense, text_by_name[name], temperature=recipe.coseg.saliency_temperature
                )
                if progress is not None:
                    progress("co-segment", done + 1, len(retrieve_names))
            targets = {name: features[name] for name in names}
            context_only = {name: features[name] for name in context if name not in targets}
            references = reference_embeddings(
                targets,
                saliency=saliency if recipe.coseg.language_guided else None,
                config=recipe.coseg,
                context_features=context_only or None,
            )
        seconds["co-segment"] = time.perf_counter() - start

        embeddings = torch.stack([references[name] for name in names]).cpu()
        save_reference_embeddings(
            ReferenceEmbeddings(
                names=names,
                embeddings=embeddings.half(),
                backbone=recipe.backbone,
                metadata={"clip": clip_source, "k": recipe.k, "collection": f"world seed {recipe.world.seed} index"},
            ),
            model_dir,
        )
        info = {
            "method": "reco",
            "clip": clip_source,
            "options": recipe.options.model_dump(mode="json"),
            "recipe": recipe.model_dump(mode="json"),
            "seconds": seconds,
        }
        (model_dir / RECO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    barrier()  # every rank returns once the model folder is complete
    return ReCoRun(model_dir=model_dir, archive=archive, purity=purity, seconds=seconds)


@dataclass(frozen=True)
class RetrievedArchive:
    """What :func:`retrieve_world_archive` produced.

    Attributes:
        archive: The curated archive of every concept.
        collection: The unlabelled collection it indexes (the world's ``index`` split).
        text: ``[N, D]`` prompt-ensembled text embeddings of the concepts, in the order given.
        purity: Precision@k of each archive from the world's labels (measured, never used to build anything).
        seconds: Wall time of the ``embed`` and ``retrieve`` stages.
    """

    archive: Archive
    collection: WorldImages
    text: Tensor
    purity: dict[str, dict[int, float]]
    seconds: dict[str, float]


def retrieve_world_archive(
    clip: ClipModel,
    world: WorldConfig,
    collection_size: int,
    names: Sequence[str],
    out_dir: str | Path,
    *,
    k: int,
    clip_source: str,
    templates: str | tuple[str, ...] = "imagenet85",
    index: IndexConfig | None = None,
    batch_size: int = 128,
    dedup_threshold: float | None = None,
    progress: Progress | None = None,
) -> RetrievedArchive:
    """Embed the world's ``index`` split with CLIP, index it and curate the ``k`` nearest images of every concept.

    The retrieval stage ReCo and ZUTIS share. ``out_dir`` keeps the embedding store (``store/``, resumable across
    crashes and re-runs), ``archive.json`` and ``purity.json``.

    Under ``torchrun`` every process calls it alike (it joins the process group if the caller has not): the ranks
    embed their shards of the store, rank 0 alone indexes, curates and writes ``archive.json`` and ``purity.json``,
    and the others wait at a barrier and read both back, so every rank returns the same archive.

    Args:
        clip: The CLIP whose image and text embeddings retrieve.
        world: The world whose ``index`` split is the unlabelled collection.
        collection_size: Images of that split.
        names: The concepts.
        k: Archive size per concept.
        out_dir: Run folder.
        clip_source: How to load ``clip`` again (recorded in the store and the archive).
        templates: Prompt templates of the text embeddings.
        index: The nearest-neighbour index (default: exact).
        batch_size: Images per forward pass.
        dedup_threshold: Drop a retrieved image this close (cosine) to a better-ranked one; ``None``: keep all.
        progress: Called as ``progress(stage, done, total)`` with stage ``embed`` (by rank 0 only under ``torchrun``).
    """
    main = init_distributed("gloo" if clip.device.type == "cpu" else None).is_main
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    collection = WorldImages(world, "index", collection_size, clip.normalization)
    start = time.perf_counter()
    embed_collection(
        clip,
        collection,
        out / "store",
        batch_size=batch_size,
        encoder_name=clip_source,
        collection_id=f"world {world.model_dump_json()} index 0..{collection_size - 1}",
        progress=False if progress is None else _stage(progress, "embed"),
    )
    seconds["embed"] = time.perf_counter() - start

    start = time.perf_counter()
    text = _text_embeddings(clip, names, templates)
    archive_path, purity_path = out / "archive.json", out / "purity.json"
    if main:
        store = EmbeddingStore.open(out / "store")
        built = build_index(store, index if index is not None else IndexConfig())
        archive = curate_archive(
            built,
            tuple(names),
            text,
            k,
            encoder=clip_source,
            store=str(out / "store"),
            templates=templates,
            dedup_threshold=dedup_threshold,
        )
        save_archive(archive, archive_path)
        image_labels = {collection.image_id(i): collection.labels(i) for i in _archive_indices(archive, collection)}
        ks = sorted({1, 5, 10, 20, 30, 40, 50, 100, k} & set(range(1, k + 1)))
        purity = archive_purity(archive, image_labels, ks=ks)
        purity_path.write_text(json.dumps(purity, indent=2, sort_keys=True) + "\n")
    barrier()  # under torchrun the other ranks wait for rank 0's archive.json and purity.json
    if not main:
        archive, purity = load_archive(archive_path), _read_purity(purity_path)
    seconds["retrieve"] = time.perf_counter() - start
    return RetrievedArchive(archive=archive, collection=collection, text=text, purity=purity, seconds=seconds)


def _read_purity(path: Path) -> dict[str, dict[int, float]]:
    """``purity.json`` as :func:`seg_retrieval.curate.archive_purity` returned it (JSON made its ``k`` strings)."""
    data: dict[str, dict[str, float]] = json.loads(path.read_text())
    return {name: {int(k): float(value) for k, value in by_k.items()} for name, by_k in data.items()}


def archive_indices(image_ids: Sequence[str], collection: WorldImages) -> list[int]:
    """The collection indices of archive image ids (``index_000042`` -> 42)."""
    return [collection.index_of(image_id) for image_id in image_ids]


def _archive_indices(archive: Archive, collection: WorldImages) -> list[int]:
    return sorted({i for concept in archive.concepts for i in archive_indices(concept.image_ids, collection)})


def _stage(progress: Progress, stage: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress(stage, done, total)

    return report


# ---------------------------------------------------------------------------------------------------------------
# ReCo+
# ---------------------------------------------------------------------------------------------------------------


def _reco_plus_train_default() -> TrainConfig:
    # The official optimiser (Adam, lr 5e-4, wd 2e-4, poly 0.9); fewer steps and a bigger batch for 64-px images.
    return TrainConfig(
        max_steps=3000,
        lr=5e-4,
        weight_decay=2e-4,
        schedule=ScheduleConfig(kind="poly", power=0.9),
        log_every=50,
        checkpoint_every=500,
    )


class ReCoPlusRecipe(MethodConfig):
    """ReCo+: a DeepLabv3+ trained on ReCo's pseudo-labels of the unlabelled target images.

    Attributes:
        reco_model: The ReCo model folder giving the pseudo-labels (``None``: the caller's default, on the world the
            bundled ReCo model).
        world: The world whose ``split`` images are the unlabelled target images.
        split: Target split (never the evaluation world: evaluate on another seed).
        num_images: Target images.
        pseudo_label_crf: Refine the pseudo-labels with the dense CRF (the official ReCo+ trains on ReCo's CRF
            output); needs ``pydensecrf2``.
        deeplab_preset: A :data:`seg_models.deeplab.DEEPLAB_PRESETS` name (``synthetic-64`` here, ``reco-plus-r101``
            is the paper's network).
        deeplab_overrides: Fields of the DeepLab config to override.
        augment: The augmentations: the paper's, with the crop at the world's image size and without hue and
            saturation jitter (set ``hue: 0.2, saturation: 0.8`` for the paper's).
        train: Optimiser, schedule and steps (the official Adam settings; fewer steps for 64-px images).
        batch_size: Images per step (official: 8 at 320 px).
        backbone_lr_mult: Backbone learning rate relative to the head (official 0.1 for an ImageNet-pretrained
            backbone; 1.0 here because the world's backbone starts from random weights).
        normalization: Pixel normalisation of the network's input.
    """

    method: Literal["reco-plus"] = "reco-plus"
    reco_model: str | None = None
    world: WorldConfig = WorldConfig(seed=0)
    split: SplitName = "test"
    num_images: PositiveInt = 2000
    pseudo_label_crf: bool = False
    deeplab_preset: str = "synthetic-64"
    deeplab_overrides: dict[str, Any] = Field(default_factory=dict)
    # No hue or saturation jitter on the world: a thing's colour is much of its identity there, and the paper's
    # jitter (hue 0.2, saturation 0.8) cost ReCo+ a third of its thing IoU (docs/methods/reco.md).
    augment: SegAugmentConfig = SegAugmentConfig(crop_size=64, hue=0.0, saturation=0.0)
    train: TrainConfig = Field(default_factory=_reco_plus_train_default)
    batch_size: PositiveInt = 16
    backbone_lr_mult: float = Field(default=1.0, ge=0.0)
    normalization: Normalization = IMAGENET_MEAN_STD


def make_pseudo_labels(
    segmenter: Segmenter,
    images: WorldImages,
    concepts: ConceptSet,
    *,
    batch_size: int = 32,
    refiner: MaskRefiner | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> npt.NDArray[np.uint8]:
    """``[N, H, W]`` argmax label maps of ``segmenter`` over ``images`` (label ids into ``concepts.label_names``).

    With ``refiner`` (e.g. the dense CRF) the segmenter's probabilities are refined before the argmax.
    """
    if concepts.num_labels > 255:
        raise ValueError(f"pseudo-labels are stored as uint8; {concepts.num_labels} labels do not fit (max 255)")
    maps: list[npt.NDArray[np.uint8]] = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        batch = torch.stack([images.pixels(i) for i in range(start, stop)])
        output = segmenter.segment(batch, concepts)
        labels = output.labels if refiner is None else refiner.refine(batch, output.probabilities).argmax(dim=1)
        maps.append(labels.to("cpu", torch.uint8).numpy())
        if progress is not None:
            progress(stop, len(images))
    return np.concatenate(maps)


class _PseudoLabelBatches:
    """Batch ``b``: ``batch_size`` target images drawn with a generator seeded by ``(seed, b)``, augmented.

    Under ``torchrun`` the ``i``-th batch of rank ``r`` (of ``world_size``) is batch ``i * world_size + r``: the
    ranks split the one-process sequence (with the defaults, one process, it is batch ``i``).
    """

    def __init__(
        self,
        images: WorldImages,
        labels: npt.NDArray[np.uint8],
        recipe: ReCoPlusRecipe,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, {world_size=}")
        self.images = images
        self.labels = labels
        self.recipe = recipe
        self.rank = rank
        self.world_size = world_size

    def batch(self, batch_index: int) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(self.recipe.train.seed * 1_000_003 + batch_index)
        picks = torch.randint(len(self.images), (self.recipe.batch_size,), generator=generator).tolist()
        pairs = [
            augment_pair(
                self.images.pixels(i), torch.from_numpy(self.labels[i].astype(np.int64)), self.recipe.augment, generator
            )
            for i in picks
        ]
        norm = self.recipe.normalization
        images = normalize_images(torch.stack([image for image, _ in pairs]), norm.mean, norm.std)
        return {"images": images, "labels": torch.stack([label for _, label in pairs])}

    def factory(self, start_batch: int) -> Iterator[dict[str, Tensor]]:
        """This rank's batches from its ``start_batch``-th on, endlessly (a :data:`seg_train.BatchesFactory`)."""
        batch_index = start_batch
        while True:
            yield self.batch(batch_index * self.world_size + self.rank)
            batch_index += 1


def _segmentation_step(ignore_index: int) -> Callable[[nn.Module, dict[str, Tensor]], StepOutput]:
    def step(model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        logits = model(batch["images"])
        loss = F.cross_entropy(logits, batch["labels"], ignore_index=ignore_index)
        return StepOutput(loss=loss, num_samples=int(batch["images"].shape[0]))

    return step


@dataclass(frozen=True)
class ReCoPlusRun:
    """What :func:`train_reco_plus` produced: the model folder, the pseudo-labels file and the engine's result."""

    model_dir: Path
    pseudo_labels: Path
    result: TrainResult


def train_reco_plus(
    recipe: ReCoPlusRecipe,
    reco: Segmenter,
    concepts: ConceptSet,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> ReCoPlusRun:
    """Pseudo-label the target images with ``reco`` and train the recipe's DeepLabv3+ on them.

    Under ``torchrun`` every process calls it alike: rank 0 alone pseudo-labels (the others wait and read its
    ``pseudo_labels.npy``), the ranks train data-parallel, each on its own batches, and rank 0 alone writes
    ``recipe.yaml``, the checkpoints and the model folder; every rank returns once the folder is complete.

    Args:
        recipe: The settings.
        reco: The ReCo segmenter (any :class:`seg_core.Segmenter` works: the recipe only needs its label maps).
        concepts: The label set (ReCo+ is trained over exactly these labels, in this order).
        out_dir: Run folder: ``recipe.yaml``, ``pseudo_labels.npy`` (kept: a re-run reuses it), checkpoints,
            TensorBoard logs and ``model/``.
        resume: Continue from the newest checkpoint in ``out_dir``.
        device: Training device.
        log: Receives the engine's log lines.
        progress: Called as ``progress("pseudo-label", done, total)`` (on rank 0 only under ``torchrun``).
    """
    # Under torchrun: join the process group now (the Trainer would later), gloo for a CPU run even where CUDA is.
    context = init_distributed("gloo" if torch.device(device).type == "cpu" else None)
    main = context.is_main
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        recipe.save(out / "recipe.yaml")
    images = WorldImages(recipe.world, recipe.split, recipe.num_images)
    labels_path = out / "pseudo_labels.npy"
    if main and not labels_path.is_file():
        labels = make_pseudo_labels(
            reco,
            images,
            concepts,
            refiner=make_refiner("crf") if recipe.pseudo_label_crf else None,
            progress=None if progress is None else _stage(progress, "pseudo-label"),
        )
        tmp = out / "pseudo_labels.tmp.npy"
        np.save(tmp, labels)
        tmp.replace(labels_path)
    barrier()  # under torchrun the other ranks wait for rank 0's file
    labels = np.load(labels_path)
    if labels.shape[0] != recipe.num_images:
        raise ConfigError(
            f"num_images: {labels_path} holds {labels.shape[0]} pseudo-labels, the recipe asks for "
            f"{recipe.num_images}; delete the file or use another run folder"
        )

    torch.manual_seed(recipe.train.seed)
    config = deeplab_preset(recipe.deeplab_preset, concepts.num_labels, **recipe.deeplab_overrides)
    model = build_deeplab(config)
    optimizer = build_optimizer(
        recipe.train,
        parameter_groups(model, recipe.backbone_lr_mult),
        optimizer_class=torch.optim.Adam,
        betas=(0.9, 0.999),
    )
    batches = _PseudoLabelBatches(images, labels, recipe, rank=context.rank, world_size=context.world_size)
    step = _segmentation_step(recipe.augment.ignore_index)
    trainer = Trainer(recipe.train, model, optimizer, step, out_dir=out, device=device, log=log)
    result = trainer.fit(batches.factory, resume_from="latest" if resume else None)
    model_dir = out / "model"
    if main:
        export_reco_plus(
            model,
            config,
            concepts.label_names,
            recipe.normalization,
            model_dir,
            recipe=recipe,
            image_size=recipe.augment.crop_hw,
        )
    barrier()  # every rank returns once the model folder is complete
    return ReCoPlusRun(model_dir=model_dir, pseudo_labels=labels_path, result=result)


def export_reco_plus(
    model: nn.Module,
    config: DeepLabConfig,
    label_names: Sequence[str],
    normalization: Normalization,
    folder: str | Path,
    *,
    recipe: ReCoPlusRecipe | None = None,
    image_size: tuple[int, int] = (64, 64),
    fp16: bool = True,
) -> Path:
    """Write ``model.safetensors`` (fp16 by default) and ``reco_plus.json`` (config, labels, normalisation)."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    save_file(export_state_dict(unwrap_model(model), fp16=fp16), str(target / RECO_PLUS_WEIGHTS))
    info = {
        "method": "reco-plus",
        "deeplab": config.model_dump(mode="json"),
        "label_names": list(label_names),
        "normalization": normalization.model_dump(mode="json"),
        "image_size": list(image_size),
        "recipe": None if recipe is None else recipe.model_dump(mode="json"),
    }
    (target / RECO_PLUS_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return target
