"""ReCo inference: reference embeddings on a co-segmentation backbone, refined by DenseCLIP saliency.

Shin, Xie & Albanie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022. For every concept ``c``
ReCo holds a *reference embedding* ``f_c`` (the mean of the seed pixels co-segmented from ``k`` retrieved images;
built by :mod:`seg_coseg` in the ``seg train reco`` recipe). A new image is segmented by

- ``P_c = sigmoid(f_c · F)`` on L2-normalised dense features ``F`` of the co-segmentation backbone (Eq. 2);
- ``S_c = sigmoid(t · cos(V, e_c))``, the DenseCLIP saliency of the concept's prompt-ensembled text embedding ``e_c``
  on the dense CLIP features ``V`` (the MaskCLIP value path, :mod:`seg_models.dense_clip`);
- ``P_c ⊙ S_c`` (Eq. 3), both bilinearly upsampled to the input size before the product, then argmax over concepts,
  background by threshold when the concept set asks for it, optional CRF.

As the official code (``networks/reco.py``): no temperature in ``P_c`` (so it lies in [0.27, 0.73]) and ``t = 10`` in
the saliency (the paper gives no temperature). The co-segmentation backbone is any timm model (the paper: DeiT-S/16
trained on stylised ImageNet, final LayerNorm'd patch tokens) or the CLIP vision tower itself.

Contents: the backbone config and feature extractor; reference embeddings (file format); the segmenter; the model
folders of ReCo and ReCo+ (``reco.json`` / ``reco_plus.json``), read here so that loading needs no trainer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from seg_core import (
    ConceptSet,
    ConfigError,
    MaskRefiner,
    Normalization,
    ProtocolPreset,
    SegmentationOutput,
    SegModel,
)
from seg_models.clip import ClipModel, ConceptEmbeddings
from seg_models.closed_set import ClosedSetSegmenter
from seg_models.deeplab import DeepLabConfig, build_deeplab
from seg_models.dense_clip import DenseVariant, dense_clip_features, feature_stride
from seg_models.inference import (
    check_pixel_images,
    infer,
    normalize_images,
    pad_to_multiple,
    refine_output,
    resize_logits,
    segmentation_from_similarities,
)
from seg_models.refiners import make_refiner

__all__ = [
    "RECO_FILE",
    "RECO_PLUS_FILE",
    "RECO_PLUS_WEIGHTS",
    "REFERENCES_FILE_NAME",
    "CosegBackbone",
    "CosegBackboneConfig",
    "ReCoOptions",
    "ReCoPlusInfo",
    "ReCoSegmenter",
    "ReferenceEmbeddings",
    "build_coseg_backbone",
    "load_reco",
    "load_reco_plus",
    "load_reference_embeddings",
    "read_reco_info",
    "read_reco_plus_info",
    "save_reference_embeddings",
]

REFERENCES_FILE_NAME = "reco_references.safetensors"
"""File name of a reference-embedding set inside a ReCo model folder."""

_FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------
# The co-segmentation backbone
# ---------------------------------------------------------------------------------------------------------------


class CosegBackboneConfig(SegModel):
    """Which dense features co-segmentation and inference compare (they must be the same for both).

    Attributes:
        kind: ``"clip"``: the CLIP vision tower of the segmenter (no extra weights); ``"timm"``: a timm model.
        clip_variant: For ``kind="clip"``: which dense CLIP features (``"naive"``: the final patch tokens, the
            closest analogue of the paper's DeiT tokens; ``"maskclip"``/``"value"``: the value path).
        timm_name: For ``kind="timm"``: the timm model name (the paper: ``deit_small_distilled_patch16_224`` with
            stylised-ImageNet weights).
        timm_pretrained: Load timm's pretrained weights (needs internet the first time).
        timm_checkpoint: A local weights file for the timm model (safetensors or a ``weights_only`` torch file).
        normalization: Pixel normalisation for a timm model (default: the model's pretrained config).
    """

    kind: Literal["clip", "timm"] = "clip"
    clip_variant: DenseVariant = "naive"
    timm_name: str | None = None
    timm_pretrained: bool = False
    timm_checkpoint: str | None = None
    normalization: Normalization | None = None

    @model_validator(mode="after")
    def _timm_needs_name(self) -> CosegBackboneConfig:
        if self.kind == "timm" and not self.timm_name:
            raise ValueError(
                "kind is 'timm' but timm_name is missing; e.g. timm_name: deit_small_distilled_patch16_224"
            )
        if self.kind == "clip" and (self.timm_name or self.timm_checkpoint or self.timm_pretrained):
            raise ValueError("timm_* fields are set but kind is 'clip'; set kind: timm or remove them")
        return self

    def describe(self) -> str:
        """A short human-readable name, e.g. ``clip:naive`` or ``timm:deit_small_patch16_224``."""
        return f"clip:{self.clip_variant}" if self.kind == "clip" else f"timm:{self.timm_name}"


class CosegBackbone(nn.Module):
    """Dense L2-normalisable features of RGB images in [0, 1], from the CLIP tower or a timm model.

    Attributes:
        config: What was built.
        normalization: The pixel normalisation applied before the network.
        stride: ``(sy, sx)`` pixels per feature cell (images are zero-padded to a multiple of it).
    """

    def __init__(self, config: CosegBackboneConfig, clip: ClipModel | None = None) -> None:
        super().__init__()
        self.config = config
        self._clip: ClipModel | None = None
        self._timm: nn.Module | None = None
        if config.kind == "clip":
            if clip is None:
                raise ValueError("a 'clip' co-segmentation backbone needs the CLIP model; pass clip=...")
            # Not registered as a submodule: the segmenter owns the CLIP, this only borrows its tower.
            object.__setattr__(self, "_clip", clip)
            self.normalization = clip.normalization
            self.stride = feature_stride(clip.visual)
        else:
            self._timm = _create_timm(config)
            self.normalization = config.normalization or _timm_normalization(self._timm)
            self.stride = _timm_stride(self._timm)

    @property
    def device(self) -> torch.device:
        """Device of the backbone's parameters."""
        module = self._clip if self._clip is not None else self._timm
        assert module is not None
        return next(module.parameters()).device

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] -> ``[B, D, ceil(H / sy), ceil(W / sx)]`` features (not normalised)."""
        normalized = normalize_images(images, self.normalization.mean, self.normalization.std)
        padded = pad_to_multiple(normalized, self.stride)
        if self._clip is not None:
            return dense_clip_features(self._clip.visual, padded, variant=self.config.clip_variant).float()
        assert self._timm is not None
        return _timm_dense(self._timm, padded).float()


def build_coseg_backbone(config: CosegBackboneConfig, clip: ClipModel | None = None) -> CosegBackbone:
    """Build the backbone, in eval mode, on the CLIP's device when there is one."""
    backbone = CosegBackbone(config, clip)
    if clip is not None:
        backbone.to(clip.device)
    return backbone.eval()


def _create_timm(config: CosegBackboneConfig) -> nn.Module:
    import timm

    name = config.timm_name
    assert name is not None
    if not timm.list_models(name) and not timm.is_model(name):
        raise ConfigError(f"backbone.timm_name: timm has no model {name!r}; see timm.list_models('*vit*')")
    kwargs: dict[str, Any] = {"pretrained": config.timm_pretrained, "num_classes": 0}
    if "vit" in name or "deit" in name:
        kwargs["dynamic_img_size"] = True
    model: nn.Module = timm.create_model(name, **kwargs)
    if config.timm_checkpoint is not None:
        model.load_state_dict(_load_weights(Path(config.timm_checkpoint)))
    return model


def _load_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ConfigError(f"backbone.timm_checkpoint: no file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"backbone.timm_checkpoint: {path} does not hold a state dict")
    return state


def _timm_normalization(model: nn.Module) -> Normalization:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    return Normalization(mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def _timm_stride(model: nn.Module) -> tuple[int, int]:
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is not None:
        return (int(patch[0]), int(patch[1])) if isinstance(patch, Sequence) else (int(patch), int(patch))
    return (1, 1)  # a CNN takes any size; its own stride does not need padding


def _timm_dense(model: nn.Module, images: Tensor) -> Tensor:
    """Final (normalised) tokens of a timm ViT as a grid, or the last feature map of a CNN."""
    forward_features = getattr(model, "forward_features", None)
    if forward_features is None:
        raise TypeError(f"{type(model).__name__} has no forward_features; use a timm model")
    tokens = forward_features(images)
    if not isinstance(tokens, Tensor):
        raise TypeError(f"{type(model).__name__}.forward_features returned {type(tokens).__name__}, not a tensor")
    if tokens.ndim == 4:
        return tokens
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    stride = _timm_stride(model)
    grid = (int(images.shape[-2]) // stride[0], int(images.shape[-1]) // stride[1])
    patches = tokens[:, prefix:]
    if patches.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"expected {grid[0]}x{grid[1]} patch tokens from {type(model).__name__}, got {patches.shape[1]}"
        )
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])


# ---------------------------------------------------------------------------------------------------------------
# Reference embeddings
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReferenceEmbeddings:
    """One L2-normalised reference embedding per concept, and how they were made.

    Attributes:
        names: Concept names, one per row.
        embeddings: ``[C, D]`` float32, L2-normalised.
        backbone: The co-segmentation backbone whose features the embeddings live in.
        metadata: Provenance (encoder, archive size, co-segmentation settings), JSON-serialisable.
    """

    names: tuple[str, ...]
    embeddings: Tensor
    backbone: CosegBackboneConfig
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names):
            raise ValueError(
                f"embeddings must be [C, D] with C={len(self.names)} rows, got {tuple(self.embeddings.shape)}"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reference embedding names must be unique, got {list(self.names)}")

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def select(self, names: Sequence[str]) -> Tensor:
        """``[len(names), D]`` rows for ``names``; :class:`ConfigError` naming the missing ones and the fix."""
        missing = [name for name in names if name not in self.names]
        if missing:
            raise ConfigError(
                f"concepts: no ReCo reference embedding for {missing}; this model has {len(self.names)} concepts "
                f"({', '.join(self.names[:30])}{', ...' if len(self.names) > 30 else ''}). Build references for new "
                "concepts with `seg train reco --concepts ...` (retrieval + co-segmentation)"
            )
        rows = [self.names.index(name) for name in names]
        return self.embeddings[rows]


def save_reference_embeddings(references: ReferenceEmbeddings, path: str | Path) -> Path:
    """Write ``references`` to a safetensors file (fp16 by default is the caller's choice: the dtype is kept)."""
    target = Path(path)
    if target.is_dir() or target.suffix != ".safetensors":
        target = target / REFERENCES_FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": "seg.reco.references",
        "version": str(_FORMAT_VERSION),
        "names": json.dumps(list(references.names)),
        "backbone": references.backbone.model_dump_json(),
        "metadata": json.dumps(dict(references.metadata), sort_keys=True),
    }
    tmp = target.with_suffix(".tmp")
    save_file({"embeddings": references.embeddings.detach().cpu().contiguous()}, str(tmp), metadata=header)
    tmp.replace(target)
    return target


def load_reference_embeddings(path: str | Path) -> ReferenceEmbeddings:
    """Read a file written by :func:`save_reference_embeddings` (or a folder holding one)."""
    source = Path(path)
    if source.is_dir():
        source = source / REFERENCES_FILE_NAME
    if not source.is_file():
        raise ConfigError(f"model: no ReCo reference embeddings at {source}; build them with `seg train reco`")
    with safe_open(str(source), framework="pt") as handle:
        header = handle.metadata() or {}
        if header.get("format") != "seg.reco.references":
            raise ConfigError(
                f"model: {source} is not a ReCo reference-embedding file (format {header.get('format')!r}); "
                "is it a checkpoint of another method?"
            )
        embeddings = handle.get_tensor("embeddings")
    return ReferenceEmbeddings(
        names=tuple(json.loads(header["names"])),
        embeddings=F.normalize(embeddings.float(), dim=-1),
        backbone=CosegBackboneConfig.model_validate_json(header["backbone"]),
        metadata=json.loads(header.get("metadata", "{}")),
    )


# ---------------------------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------------------------


class ReCoOptions(SegModel):
    """Inference switches of ReCo (the rows of the paper's Table 1 ablation).

    Attributes:
        dense_clip: Multiply by the DenseCLIP saliency (Eq. 3); off gives Eq. 2 alone.
        saliency_temperature: ``t`` in ``sigmoid(t · cos)`` (official code: 10; the paper gives none).
    """

    dense_clip: bool = True
    saliency_temperature: float = Field(default=10.0, gt=0)


class ReCoSegmenter:
    """ReCo as a :class:`seg_core.Segmenter`.

    Args:
        clip: The CLIP model giving the DenseCLIP saliency (and the backbone when ``references.backbone.kind`` is
            ``"clip"``).
        references: Reference embeddings of every concept that may be asked for.
        preset: Resize rule, whole or sliding-window inference, optional logit scale and refinement (the CRF of the
            paper). ``None``: whole-image inference at the input size.
        options: Inference switches (:class:`ReCoOptions`).
        backbone: The co-segmentation backbone; built from ``references.backbone`` when omitted.
        refiner: A :class:`seg_core.MaskRefiner`; ``None`` takes the preset's ``refinement``.
    """

    def __init__(
        self,
        clip: ClipModel,
        references: ReferenceEmbeddings,
        preset: ProtocolPreset | None = None,
        *,
        options: ReCoOptions | None = None,
        backbone: CosegBackbone | None = None,
        refiner: MaskRefiner | None = None,
    ) -> None:
        self.clip = clip
        self.references = references
        self.preset = (
            preset if preset is not None else ProtocolPreset(name="reco-whole", normalization=clip.normalization)
        )
        self.options = options if options is not None else ReCoOptions()
        self.backbone = backbone if backbone is not None else build_coseg_backbone(references.backbone, clip)
        self.refiner = refiner if refiner is not None else make_refiner(self.preset.refinement)
        self._clip_stride = feature_stride(clip.visual)

    def _row_names(self, concepts: ConceptSet) -> list[str]:
        background = concepts.background
        names = list(background.names) if background.kind == "class" else []
        return names + list(concepts.names)

    def probability_maps(self, images: Tensor, text: ConceptEmbeddings, references: Tensor) -> Tensor:
        """``P_c ⊙ S_c`` per text label at the images' resolution.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1] (each branch applies its own normalisation).
            text: Text embeddings of the concept set (rows aligned with ``references``).
            references: ``[K, D]`` reference embeddings, one per text row.

        Returns:
            ``[B, T, H, W]`` in [0, 1] (``T = len(text.text_labels)``); a label with several rows (background
            names) takes the maximum over its rows.
        """
        height, width = int(images.shape[-2]), int(images.shape[-1])
        features = F.normalize(self.backbone(images), dim=1)
        coseg = torch.sigmoid(torch.einsum("bdhw,kd->bkhw", features, references.to(features)))
        coseg = text.reduce_rows(coseg)
        coseg = _crop_upsample(coseg, self.backbone.stride, (height, width))
        if not self.options.dense_clip:
            return coseg
        mean, std = self.clip.normalization.mean, self.clip.normalization.std
        padded = pad_to_multiple(normalize_images(images, mean, std), self._clip_stride)
        dense = dense_clip_features(self.clip.visual, padded, variant="maskclip").float()
        saliency = torch.sigmoid(self.options.saliency_temperature * text.similarities(dense))
        saliency = _crop_upsample(saliency, self._clip_stride, (height, width))
        return coseg * saliency

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] into ``concepts.label_names``.

        Every concept (and background name under a background-class policy) needs a reference embedding; the
        error names the missing ones. The logits are the probability maps (times the preset's ``logit_scale``);
        with a threshold background the threshold applies to the maps' maximum (``score: similarity``).
        """
        check_pixel_images(images)
        references = self.references.select(self._row_names(concepts))
        images = images.to(self.clip.device).float()
        text = self.clip.concept_embeddings(concepts)
        maps = infer(lambda batch: self.probability_maps(batch, text, references), images, self.preset)
        output = segmentation_from_similarities(maps, concepts, logit_scale=self.preset.logit_scale)
        return refine_output(output, images, self.preset, self.refiner)


def _crop_upsample(maps: Tensor, stride: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Upsample maps of a zero-padded input to the padded size and cut the padding off."""
    padded = (maps.shape[-2] * stride[0], maps.shape[-1] * stride[1]) if stride != (1, 1) else size
    return resize_logits(maps, (int(padded[0]), int(padded[1])))[..., : size[0], : size[1]]


# ---------------------------------------------------------------------------------------------------------------
# Model folders (``seg train reco`` / ``seg train reco-plus``)
# ---------------------------------------------------------------------------------------------------------------

RECO_FILE = "reco.json"
"""The description file of a ReCo model folder (next to ``reco_references.safetensors``)."""


def read_reco_info(model_dir: str | Path) -> dict[str, Any]:
    """``reco.json`` of a ReCo model folder; :class:`ConfigError` when it is not one (e.g. another method's)."""
    path = Path(model_dir) / RECO_FILE
    if not path.is_file():
        raise ConfigError(
            f"model: {model_dir} is not a ReCo model folder (no {RECO_FILE}); build one with `seg train reco`"
        )
    info: dict[str, Any] = json.loads(path.read_text())
    if info.get("method") != "reco":
        raise ConfigError(f"model: {path} describes a {info.get('method')!r} model, not reco")
    return info


def load_reco(
    model_dir: str | Path,
    clip: ClipModel,
    preset: ProtocolPreset | None = None,
    *,
    options: ReCoOptions | None = None,
) -> ReCoSegmenter:
    """A :class:`ReCoSegmenter` from a model folder written by ``seg train reco``.

    Args:
        model_dir: The folder.
        clip: The CLIP named by ``read_reco_info(model_dir)["clip"]`` (the caller loads it).
        preset: Inference preset (its ``refinement: crf`` is the paper's CRF).
        options: Override the stored inference switches (ablations).
    """
    info = read_reco_info(model_dir)
    references = load_reference_embeddings(model_dir)
    stored = ReCoOptions.parse(info.get("options", {}))
    return ReCoSegmenter(clip, references, preset, options=options or stored)


RECO_PLUS_FILE = "reco_plus.json"
"""The description file of a ReCo+ model folder (next to ``model.safetensors``)."""
RECO_PLUS_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ReCoPlusInfo:
    """``reco_plus.json`` of a ReCo+ model folder, parsed.

    Attributes:
        deeplab: The network's config.
        label_names: Its labels, in channel order.
        normalization: Pixel normalisation of its input.
        image_size: The crop size it was trained at (a good sliding-window size).
    """

    deeplab: DeepLabConfig
    label_names: tuple[str, ...]
    normalization: Normalization
    image_size: tuple[int, int]


def read_reco_plus_info(model_dir: str | Path) -> ReCoPlusInfo:
    """Parse ``reco_plus.json``; :class:`ConfigError` when the folder is not a ReCo+ model (e.g. another method's)."""
    path = Path(model_dir) / RECO_PLUS_FILE
    if not path.is_file():
        raise ConfigError(
            f"model: {model_dir} is not a ReCo+ model folder (no {RECO_PLUS_FILE}); train one with "
            "`seg train reco-plus`"
        )
    info = json.loads(path.read_text())
    if info.get("method") != "reco-plus":
        raise ConfigError(f"model: {path} describes a {info.get('method')!r} model, not reco-plus")
    size = info.get("image_size", [64, 64])
    return ReCoPlusInfo(
        deeplab=DeepLabConfig.parse(info["deeplab"]),
        label_names=tuple(info["label_names"]),
        normalization=Normalization.parse(info["normalization"]),
        image_size=(int(size[0]), int(size[1])),
    )


def load_reco_plus(
    model_dir: str | Path, preset: ProtocolPreset | None = None, *, device: str | torch.device = "cpu"
) -> ClosedSetSegmenter:
    """A :class:`ClosedSetSegmenter` from a folder written by ``seg train reco-plus``."""
    folder = Path(model_dir)
    info = read_reco_plus_info(folder)
    model = build_deeplab(info.deeplab)
    state = load_file(str(folder / RECO_PLUS_WEIGHTS))
    model.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in state.items()})
    return ClosedSetSegmenter(model.to(device), info.label_names, info.normalization, preset)
