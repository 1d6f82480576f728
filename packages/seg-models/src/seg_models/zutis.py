"""ZUTIS: a text-aligned image encoder and a query-based instance decoder over a CLIP ViT.

Shin, Albanie & Xie, "Zero-shot Unsupervised Transfer Instance Segmentation", CVPRW 2023 (Sec. 3.3, 4.1). The
network segments semantically and by instance at once (Eq. 1):

- **Semantic branch** (Sec. 3.3, Eq. 4): the patch tokens of the last block of the CLIP ViT (the unmodified block,
  no MaskCLIP value path; the whole tower is fine-tuned) after ``ln_post``, bilinearly upsampled ×2, projected into
  the text space by CLIP's ``proj`` (the paper's ``W``). The official code then applies ``F.layer_norm`` over
  ``(h, w, D)`` jointly, without affine, and L2-normalises every location (``feature_norm="official"``;
  ``"l2"`` skips the layer norm). Logits are cosines with the frozen text embeddings of the bare class names
  (official: no template, the literal word "background" as class 0, no logit scale): :func:`semantic_logits`.
- **Instance branch** (Sec. 3.3): ``ffn1``, a 3-layer MLP on the (by default **detached**: the paper's
  stop-gradient, Table 1) upsampled tokens gives the values ``V``; a DETR decoder (post-norm layers: self-attention
  over the queries, cross-attention to ``V``, FFN; dropout 0; learned query embeddings as query positions with a
  zero target; a 2-D sine encoding of the ``V`` grid added to the cross-attention keys; a shared final LayerNorm
  on every layer's output, as DETR's decoder with intermediate outputs) refines ``num_queries`` queries; ``ffn2``
  (3-layer MLP) and an L2 normalisation turn each layer's queries into mask embeddings; mask logits are
  ``q · V`` per location (``V`` unnormalised). The official masks are ``sigmoid(q · V)``; logits are kept here
  (the set criterion of ``seg_losses.set_criterion`` takes logits).
- **Instance inference** (Sec. 3.3, Eqs. 5-6, :func:`predict_instances`): binarise ``sigmoid > t``; the mean
  embedding inside the mask (Eq. 5), L2-normalised, is compared with every text embedding; the label is the
  argmax (Eq. 6) and the class probability ``max_c sigmoid(5 · cos)`` (official; the paper says softmax); the
  score is the mean mask probability inside the mask times that class probability; background (label 0) is
  dropped, then per-class hard NMS by mask IoU (:func:`mask_nms`, official IoU 0.3, score floor 0.001).

Deviation from the official widths: the official ``ffn1``/``ffn2`` map the ViT width to itself (768 for ViT-B,
hidden 256) and the decoder runs at the ViT width. Here ``ffn1`` maps ``width -> ffn_hidden -> ffn_hidden ->
decoder_dim``, the decoder runs at ``decoder_dim`` and ``ffn2`` maps ``decoder_dim -> ffn_hidden -> ffn_hidden ->
decoder_dim``, so a small decoder fits small CLIPs; ``decoder_dim = width`` recovers the official shapes.

Contents, in order: config; building blocks (MLP, sine encoding, decoder); the network; semantic logits,
instance prediction and NMS; the segmenter; saving and loading (``zutis.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from pydantic import model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from seg_core import (
    BackgroundClass,
    ConceptSet,
    ConfigError,
    InstancePredictions,
    Normalization,
    ProtocolPreset,
    SegmentationOutput,
    SegModel,
)
from seg_models.clip import ConceptEmbeddings, concept_embeddings
from seg_models.dense_clip import _pair, _run_blocks, _vit_embed
from seg_models.inference import (
    center_crop_box,
    check_pixel_images,
    normalize_images,
    pad_to_multiple,
    refine_output,
    resize_images,
    resize_logits,
)
from seg_models.refiners import make_refiner
from seg_models.weights import export_state_dict, read_method_json, state_mismatch

if TYPE_CHECKING:
    from seg_models.clip import ClipModel

__all__ = [
    "WEIGHTS_FILE_NAME",
    "ZUTIS",
    "ZUTIS_FILE",
    "ZUTISConfig",
    "ZUTISOutput",
    "ZUTISSegmenter",
    "load_zutis",
    "mask_nms",
    "predict_instances",
    "read_zutis_info",
    "save_zutis",
    "semantic_logits",
    "sine_positional_encoding",
]

ZUTIS_FILE = "zutis.json"
"""The description of a saved ZUTIS folder, next to :data:`WEIGHTS_FILE_NAME`."""
WEIGHTS_FILE_NAME = "model.safetensors"

_TRAIN_HINT = "train one with `seg train zutis`"

# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------

_INFERENCE_FIELDS = frozenset(
    {"logit_scale", "mask_threshold", "class_temperature", "nms_iou", "score_floor", "nms", "max_instances"}
)
"""Fields that change only inference; the others decide the architecture (and the training)."""


class ZUTISConfig(SegModel):
    """The ZUTIS network and its inference rule (defaults: the official values).

    Attributes:
        architecture: Always ``"zutis"``.
        num_queries: Object queries ``n_q`` (official 100).
        decoder_layers: Transformer decoder layers (official 6; the mask loss applies to every layer).
        decoder_heads: Attention heads of the decoder (official 8).
        decoder_dim: Width ``d`` of the values, queries and mask embeddings (official: the ViT width, 768; see the
            module docstring for the deviation).
        decoder_ffn: Hidden width of the decoder layers' FFN (official 2048).
        ffn_hidden: Hidden width of the 3-layer MLPs ``ffn1`` and ``ffn2`` (official 256).
        upsample: Bilinear factor on the patch-token grid (official 2).
        stop_gradient: Detach the encoder tokens before ``ffn1`` (the paper's stop-gradient; ``False`` is the
            Table 1 ablation).
        feature_norm: ``"official"``: ``F.layer_norm`` over ``(D, h, w)`` jointly, no affine, then L2 over ``D``;
            ``"l2"``: L2 only.
        logit_scale: Multiplies the cosine logits (official 1: plain cosine).
        mask_threshold: ``t``, binarises the sigmoid masks (official 0.5).
        class_temperature: The ``5`` of ``sigmoid(5 · cos)``, the class probability of a mask (official).
        nms_iou: Per-class hard NMS: a mask whose IoU with a better one of its class exceeds this is dropped
            (official 0.3).
        score_floor: Masks scored below this are dropped (official 0.001).
        nms: Apply NMS (``False``: the Table 1 ablation).
        max_instances: Keep at most this many masks per image after NMS, by score.
    """

    architecture: Literal["zutis"] = "zutis"
    num_queries: int = 100
    decoder_layers: int = 6
    decoder_heads: int = 8
    decoder_dim: int = 256
    decoder_ffn: int = 2048
    ffn_hidden: int = 256
    upsample: int = 2
    stop_gradient: bool = True
    feature_norm: Literal["official", "l2"] = "official"
    logit_scale: float = 1.0
    mask_threshold: float = 0.5
    class_temperature: float = 5.0
    nms_iou: float = 0.3
    score_floor: float = 0.001
    nms: bool = True
    max_instances: int = 100

    @model_validator(mode="after")
    def _check_ranges(self) -> ZUTISConfig:
        problems: list[str] = []
        for name in (
            "num_queries",
            "decoder_layers",
            "decoder_heads",
            "decoder_dim",
            "decoder_ffn",
            "ffn_hidden",
            "upsample",
            "max_instances",
        ):
            value = getattr(self, name)
            if value < 1:
                default = type(self).model_fields[name].default
                problems.append(f"{name} must be a positive integer, got {value}; use e.g. {default} (official)")
        if self.decoder_dim >= 1 and self.decoder_heads >= 1:
            if self.decoder_dim % self.decoder_heads:
                problems.append(
                    f"decoder_dim ({self.decoder_dim}) must be divisible by decoder_heads ({self.decoder_heads}); "
                    f"use e.g. decoder_dim {self.decoder_heads * max(2, self.decoder_dim // self.decoder_heads)}"
                )
            if self.decoder_dim % 2:
                problems.append(
                    f"decoder_dim must be even (half of it encodes rows, half columns), got {self.decoder_dim}; "
                    f"use {self.decoder_dim + 1}"
                )
        if not self.logit_scale > 0:
            problems.append(f"logit_scale must be > 0, got {self.logit_scale}; use 1.0 (official: plain cosine)")
        if not 0 < self.mask_threshold < 1:
            problems.append(f"mask_threshold must be in (0, 1), got {self.mask_threshold}; use 0.5 (official)")
        if not self.class_temperature > 0:
            problems.append(f"class_temperature must be > 0, got {self.class_temperature}; use 5.0 (official)")
        if not 0 <= self.nms_iou <= 1:
            problems.append(f"nms_iou must be in [0, 1], got {self.nms_iou}; use 0.3 (official)")
        if not 0 <= self.score_floor < 1:
            problems.append(f"score_floor must be in [0, 1), got {self.score_floor}; use 0.001 (official)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


class _MLP(nn.Module):
    """``Linear -> ReLU -> Linear -> ReLU -> Linear`` over the last dimension (the paper's 3-layer FFN)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out_dim)])

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x)
        return x


def sine_positional_encoding(
    height: int,
    width: int,
    dim: int,
    *,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device: torch.device | str | None = None,
) -> Tensor:
    """The normalised 2-D sine encoding of a ``height × width`` grid (DETR's, ``normalize=True``).

    With ``F = dim / 2`` features per axis, row ``r`` (1-based) maps to ``y = r / (height + 1e-6) · scale`` and
    column ``c`` to ``x = c / (width + 1e-6) · scale``; feature ``i`` of an axis is ``sin(v / T^(2⌊i/2⌋/F))`` for
    even ``i`` and ``cos(...)`` for odd ``i``. The first ``F`` channels encode the row, the last ``F`` the column.

    Args:
        height: Grid rows.
        width: Grid columns.
        dim: Channels, even.
        temperature: ``T``.
        scale: Range of the normalised coordinates (``2π``).
        device: Where to build it.

    Returns:
        ``[dim, height, width]`` float32.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even number >= 2, got {dim}")
    if height < 1 or width < 1:
        raise ValueError(f"grid size must be positive, got {(height, width)}")
    features = dim // 2
    eps = 1e-6
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    index = torch.arange(features, dtype=torch.float32, device=device)
    frequencies = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / features)
    even = (torch.arange(features, device=device) % 2 == 0).reshape(-1, 1)

    def encode(coordinates: Tensor) -> Tensor:
        angles = coordinates.reshape(1, -1) / frequencies.reshape(-1, 1)  # [F, n]
        return torch.where(even, angles.sin(), angles.cos())

    row_code = encode(rows)[:, :, None].expand(features, height, width)
    col_code = encode(cols)[:, None, :].expand(features, height, width)
    return torch.cat([row_code, col_code], dim=0)


class _DecoderLayer(nn.Module):
    """One DETR decoder layer, post-norm, dropout 0 (self-attention, cross-attention, FFN)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, target: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        """``target`` ``[B, Q, d]``, ``memory`` ``[B, L, d]``, ``query_pos`` ``[B, Q, d]``, ``memory_pos``
        ``[B or 1, L, d]`` -> ``[B, Q, d]``."""
        q = k = target + query_pos
        target = self.norm1(target + self.self_attn(q, k, target, need_weights=False)[0])
        attended = self.cross_attn(target + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        target = self.norm2(target + attended)
        output: Tensor = self.norm3(target + self.linear2(F.relu(self.linear1(target))))
        return output


class _QueryDecoder(nn.Module):
    """``layers`` post-norm decoder layers and the shared final LayerNorm applied to every layer's output."""

    def __init__(self, dim: int, heads: int, ffn: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, query_pos: Tensor, memory: Tensor, memory_pos: Tensor) -> list[Tensor]:
        """Every layer's normalised output queries ``[B, Q, d]``, from a zero target."""
        target = torch.zeros_like(query_pos)
        outputs: list[Tensor] = []
        for layer in self.layers:
            target = layer(target, memory, query_pos, memory_pos)
            outputs.append(self.norm(target))
        return outputs


# ---------------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ZUTISOutput:
    """What :meth:`ZUTIS.forward` returns.

    Attributes:
        embeddings: ``[B, D, h2, w2]`` per-location embeddings in the text space, unit L2 norm over ``D``.
        layer_mask_logits: One ``[B, Q, h2, w2]`` mask-logit tensor per decoder layer, the last one final.
    """

    embeddings: Tensor
    layer_mask_logits: tuple[Tensor, ...]

    @property
    def mask_logits(self) -> Tensor:
        """``[B, Q, h2, w2]`` mask logits of the last decoder layer."""
        return self.layer_mask_logits[-1]


class ZUTIS(nn.Module):
    """The ZUTIS network (see the module docstring).

    Args:
        visual: An open_clip ``VisionTransformer`` (e.g. ``copy.deepcopy(clip.visual)``): the module owns it and
            fine-tunes it. ModifiedResNets and attentional-pool (CoCa) towers are refused.
        config: Architecture and inference settings.

    Attributes:
        config: As given.
        visual: The vision tower.
        ffn1: ``width -> ffn_hidden -> ffn_hidden -> decoder_dim``: the values ``V``.
        query_embed: ``[num_queries, decoder_dim]`` learned query positions.
        decoder: The query decoder (``decoder.layers`` and the shared final ``decoder.norm``).
        ffn2: ``decoder_dim -> ffn_hidden -> ffn_hidden -> decoder_dim``: the mask embeddings.
        width: The ViT width.
        embed_dim: ``D``, the text-space dimension (``visual.proj.shape[1]``).
        patch_size: ``(ph, pw)`` of the tower; inputs must be multiples of it.
    """

    def __init__(self, visual: nn.Module, config: ZUTISConfig) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                f"ZUTIS needs an open_clip VisionTransformer (a ViT CLIP such as ViT-B-16), got "
                f"{type(visual).__name__}; load a ViT CLIP and pass copy.deepcopy(clip.visual)"
            )
        if visual.attn_pool is not None:
            raise TypeError(
                "ZUTIS cannot use a vision tower with an attentional pooler (CoCa-style): its patch tokens reach the "
                "text space only through the pooler; use a plain CLIP ViT (e.g. ViT-B-16)"
            )
        if visual.proj is None:
            raise TypeError(
                "the vision tower has no projection (visual.proj is None), so its tokens cannot be mapped into the "
                "text space; use a CLIP ViT whose tower ends in a projection (e.g. ViT-B-16)"
            )
        self.config = config
        self.visual = visual
        self.width = int(visual.conv1.out_channels)
        self.embed_dim = int(visual.proj.shape[1])
        self.patch_size: tuple[int, int] = _pair(visual.patch_size)
        d = config.decoder_dim
        self.ffn1 = _MLP(self.width, config.ffn_hidden, d)
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.decoder = _QueryDecoder(d, config.decoder_heads, config.decoder_ffn, config.decoder_layers)
        self.ffn2 = _MLP(d, config.ffn_hidden, d)

    def tokens(self, images: Tensor) -> Tensor:
        """The upsampled last-block patch tokens after ``ln_post``: ``[B, width, h * upsample, w * upsample]``.

        Args:
            images: ``[B, 3, H, W]`` normalised pixels, ``H`` and ``W`` multiples of :attr:`patch_size`.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] normalised pixels, got shape {tuple(images.shape)}")
        height, width = int(images.shape[-2]), int(images.shape[-1])
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"image size {(height, width)} is not a multiple of the patch size {self.patch_size}; pad the "
                "images first (seg_models.inference.pad_to_multiple)"
            )
        x, grid = _vit_embed(self.visual, images)
        x = _run_blocks(self.visual.transformer.resblocks, x)
        patches: Tensor = self.visual.ln_post(x[:, 1:])
        patches = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[-1], grid[0], grid[1])
        factor = self.config.upsample
        if factor == 1:
            return patches
        size = (grid[0] * factor, grid[1] * factor)
        return F.interpolate(patches, size=size, mode="bilinear", align_corners=False)

    def project(self, tokens: Tensor) -> Tensor:
        """Text-space embeddings ``[B, D, h, w]`` of ``[B, width, h, w]`` tokens (``proj``, feature norm, L2)."""
        projection: Tensor = self.visual.proj
        embeddings = torch.einsum("bchw,cd->bdhw", tokens, projection.to(tokens.dtype))
        if self.config.feature_norm == "official":
            embeddings = F.layer_norm(embeddings, tuple(embeddings.shape[1:]))
        return F.normalize(embeddings, dim=1)

    def forward(self, images: Tensor) -> ZUTISOutput:
        """Embeddings and per-layer mask logits of normalised images.

        Args:
            images: ``[B, 3, H, W]`` normalised pixels, ``H`` and ``W`` multiples of :attr:`patch_size`.

        Returns:
            :class:`ZUTISOutput` at ``(h2, w2) = (H / ph · upsample, W / pw · upsample)``.
        """
        tokens = self.tokens(images)
        embeddings = self.project(tokens)
        batch, _, height, width = (int(v) for v in tokens.shape)
        source = tokens.detach() if self.config.stop_gradient else tokens
        values = self.ffn1(source.flatten(2).transpose(1, 2))  # [B, L, d]
        position = sine_positional_encoding(height, width, self.config.decoder_dim, device=values.device)
        memory_pos = position.to(values.dtype).flatten(1).transpose(0, 1).unsqueeze(0)  # [1, L, d]
        query_pos = self.query_embed.weight.to(values.dtype).unsqueeze(0).expand(batch, -1, -1)
        value_map = values.transpose(1, 2).reshape(batch, -1, height, width)  # [B, d, h2, w2]
        layer_logits = []
        for queries in self.decoder(query_pos, values, memory_pos):
            mask_embeddings = F.normalize(self.ffn2(queries), dim=-1)
            layer_logits.append(torch.einsum("bqd,bdhw->bqhw", mask_embeddings, value_map))
        return ZUTISOutput(embeddings=embeddings, layer_mask_logits=tuple(layer_logits))


# ---------------------------------------------------------------------------------------------------------------
# Semantic logits, instance prediction, NMS
# ---------------------------------------------------------------------------------------------------------------


def semantic_logits(embeddings: Tensor, text: Tensor, logit_scale: float = 1.0) -> Tensor:
    """``logit_scale · cos(embedding, text)`` per location and text row (Eq. 4 before the softmax).

    Args:
        embeddings: ``[B, D, h, w]`` (normalised here; :class:`ZUTISOutput` embeddings already are).
        text: ``[C, D]`` text embeddings (L2-normalised here).
        logit_scale: Positive factor (official 1).

    Returns:
        ``[B, C, h, w]``.
    """
    if embeddings.ndim != 4:
        raise ValueError(f"embeddings must be [B, D, h, w], got shape {tuple(embeddings.shape)}")
    if text.ndim != 2 or text.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"text must be [C, {embeddings.shape[1]}] to match the embeddings' dimension, got {tuple(text.shape)}"
        )
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale}; use 1.0 for plain cosines")
    text = F.normalize(text.to(device=embeddings.device, dtype=embeddings.dtype), dim=-1)
    return logit_scale * torch.einsum("bdhw,cd->bchw", F.normalize(embeddings, dim=1), text)


def _pairwise_mask_iou(masks: Tensor) -> Tensor:
    """``[N, N]`` IoU of ``[N, P]`` bool masks (two empty masks: 0), pixels taken in chunks to bound memory."""
    count, pixels = int(masks.shape[0]), int(masks.shape[1])
    intersection = torch.zeros(count, count, dtype=torch.float64, device=masks.device)
    chunk = max(1, (1 << 24) // max(count, 1))
    for start in range(0, pixels, chunk):
        block = masks[:, start : start + chunk].float()
        intersection += (block @ block.T).double()
    area = intersection.diagonal()
    union = area[:, None] + area[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.zeros_like(union))


def mask_nms(masks: Tensor, scores: Tensor, labels: Tensor | None = None, iou_threshold: float = 0.3) -> Tensor:
    """Greedy hard NMS by mask IoU: keep the best mask, drop those overlapping it by IoU > ``iou_threshold``.

    Args:
        masks: ``[N, H, W]`` bool.
        scores: ``[N]``.
        labels: ``[N]`` class ids: only masks of the same class suppress each other; ``None``: class-agnostic.
        iou_threshold: In ``[0, 1]``; IoU strictly above it suppresses (official 0.3).

    Returns:
        int64 indices into ``masks`` of the kept masks, by descending score (ties: lower index first).
    """
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be [N, H, W] bool, got shape {tuple(masks.shape)} and dtype {masks.dtype}")
    count = int(masks.shape[0])
    if tuple(scores.shape) != (count,):
        raise ValueError(f"scores must be [N] with N={count} masks, got shape {tuple(scores.shape)}")
    if labels is not None and tuple(labels.shape) != (count,):
        raise ValueError(f"labels must be [N] with N={count} masks or None, got shape {tuple(labels.shape)}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}; use e.g. 0.3 (ZUTIS)")
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices
    if count == 0:
        return order.long()
    overlaps = _pairwise_mask_iou(masks.flatten(1)) > iou_threshold
    if labels is not None:
        overlaps &= labels[:, None] == labels[None, :]
    overlaps = overlaps.cpu()
    suppressed = torch.zeros(count, dtype=torch.bool)
    kept: list[int] = []
    for index in order.tolist():
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed |= overlaps[index]
    return torch.tensor(kept, dtype=torch.long)


def _upsample_masks(
    logits: Tensor,
    threshold: float,
    *,
    out_size: tuple[int, int],
    input_size: tuple[int, int] | None,
    valid_size: tuple[int, int] | None,
    chunk: int = 16,
) -> Tensor:
    """Bool masks ``[K, H, W]`` of ``[K, h, w]`` mask logits (see :func:`predict_instances`), ``chunk`` at a time."""
    frame = input_size if input_size is not None else out_size
    valid = valid_size if valid_size is not None else frame
    height, width = out_size
    masks = torch.zeros(int(logits.shape[0]), height, width, dtype=torch.bool, device=logits.device)
    for start in range(0, int(logits.shape[0]), chunk):
        block = resize_logits(logits[None, start : start + chunk].float(), frame)[..., : valid[0], : valid[1]]
        block = resize_logits(block, out_size)
        masks[start : start + chunk] = block[0].sigmoid() > threshold
    return masks


def predict_instances(
    embeddings: Tensor,
    mask_logits: Tensor,
    text: Tensor,
    config: ZUTISConfig,
    *,
    background_label: int | None = 0,
    out_size: tuple[int, int],
    input_size: tuple[int, int] | None = None,
    valid_size: tuple[int, int] | None = None,
    row_labels: Sequence[int] | None = None,
) -> InstancePredictions:
    """Instances of one image from its embeddings and mask logits (the official ``predict`` and NMS).

    At feature resolution: ``p = sigmoid(mask_logits)``, ``m = p > t``; empty masks are dropped; the mean
    embedding inside each mask (Eq. 5), L2-normalised, gives ``cos`` with every (L2-normalised) text row; the label
    is the argmax (Eq. 6) and the class probability ``max sigmoid(class_temperature · cos)``; the score is
    ``mean(p inside m) × class probability``. Masks labelled ``background_label`` and masks scored below
    ``score_floor`` are dropped. The kept mask logits are then upsampled bilinearly to the output and binarised
    (``sigmoid > t``; masks that come out empty are dropped), per-class hard NMS by mask IoU runs on those masks
    when ``config.nms`` is set, and the best ``max_instances`` are kept.

    The upsampling: the logits are resized to ``input_size`` (the network input the feature grid covers, default
    ``out_size``), cut to its top-left ``valid_size`` (the image inside its bottom/right padding, default all of
    it) and, if that is not ``out_size``, resized to ``out_size``.

    Args:
        embeddings: ``[D, h, w]`` text-space embeddings of one image.
        mask_logits: ``[Q, h, w]`` mask logits (the last decoder layer).
        text: ``[T, D]`` text embeddings, one per row.
        config: Supplies ``mask_threshold``, ``class_temperature``, ``score_floor``, ``nms``, ``nms_iou``,
            ``max_instances``.
        background_label: Label whose masks are dropped (ZUTIS's class 0 "background"); ``None`` drops none.
        out_size: ``(H, W)`` of the returned masks.
        input_size: ``(H_in, W_in)`` the feature grid covers; ``None``: ``out_size``.
        valid_size: Top-left region of ``input_size`` that is the image; ``None``: all of it.
        row_labels: Label id of each text row (several rows may share one label, e.g. background synonyms; a
            label's probability is then the maximum over its rows); ``None``: row ``i`` is label ``i``.

    Returns:
        Masks ``[N, H, W]`` bool, scores ``[N]`` float32 and labels ``[N]`` int64, by descending score.
    """
    if embeddings.ndim != 3 or mask_logits.ndim != 3 or embeddings.shape[1:] != mask_logits.shape[1:]:
        raise ValueError(
            f"embeddings must be [D, h, w] and mask_logits [Q, h, w] on the same grid; got "
            f"{tuple(embeddings.shape)} and {tuple(mask_logits.shape)}"
        )
    if text.ndim != 2 or text.shape[1] != embeddings.shape[0]:
        raise ValueError(f"text must be [T, {embeddings.shape[0]}] to match the embeddings, got {tuple(text.shape)}")
    if row_labels is not None and len(row_labels) != text.shape[0]:
        raise ValueError(f"row_labels must give one label per text row ({text.shape[0]}), got {len(row_labels)}")
    height, width = (int(v) for v in out_size)
    device = mask_logits.device
    probabilities = mask_logits.float().sigmoid()
    binary = probabilities > config.mask_threshold
    flat = binary.flatten(1).float()  # [Q, hw]
    area = flat.sum(dim=1)
    safe_area = area.clamp_min(1)
    mask_scores = (probabilities.flatten(1) * flat).sum(dim=1) / safe_area
    means = flat @ embeddings.flatten(1).float().T / safe_area[:, None]  # [Q, D]
    cosines = F.normalize(means, dim=-1) @ F.normalize(text.to(device).float(), dim=-1).T  # [Q, T]
    class_probabilities, rows = torch.sigmoid(config.class_temperature * cosines).max(dim=1)
    row_to_label = (
        torch.arange(text.shape[0], device=device)
        if row_labels is None
        else torch.tensor(list(row_labels), dtype=torch.long, device=device)
    )
    labels = row_to_label[rows]
    scores = mask_scores * class_probabilities
    keep = (area > 0) & (scores >= config.score_floor)
    if background_label is not None:
        keep &= labels != background_label
    index = keep.nonzero().flatten()
    masks = _upsample_masks(
        mask_logits[index],
        config.mask_threshold,
        out_size=(height, width),
        input_size=input_size,
        valid_size=valid_size,
    )
    nonempty = masks.flatten(1).any(dim=1)
    masks, scores, labels = masks[nonempty], scores[index][nonempty], labels[index][nonempty]
    if config.nms:
        order = mask_nms(masks, scores, labels, config.nms_iou).to(device)
    else:
        order = torch.sort(scores, descending=True, stable=True).indices
    order = order[: config.max_instances]
    return InstancePredictions(masks=masks[order], scores=scores[order].float(), labels=labels[order].long())


# ---------------------------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------------------------


class ZUTISSegmenter:
    """A trained :class:`ZUTIS` as a :class:`seg_core.Segmenter`, semantic logits plus instances.

    Text: the classifier embeddings are ``text_encoder`` of the **bare** names (the official ZUTIS trains and
    tests without templates), so a concept set's ``templates`` are not used; a class's synonyms are averaged with
    its name (L2 per form, mean, L2). Under a :class:`seg_core.BackgroundClass` policy label 0 is background,
    prompted with each of its names (its score is the maximum over them; ZUTIS uses the literal "background");
    with :class:`seg_core.NoBackground` there is no background label and no instance class is dropped;
    :class:`seg_core.BackgroundThreshold` is refused (ZUTIS predicts background as a class).

    Inference: the preset's resize rule, then one whole-image pass over the image zero-padded (in normalised
    space) to the patch size; the semantic logits are resized to the padded input, the padding is cut and they are
    resized back to the original size; the instances come from the same pass (:func:`predict_instances`, masks at
    the original size). Sliding-window presets are refused.

    Args:
        model: The network (put in eval mode here).
        text_encoder: Names -> ``[N, D]`` text embeddings (e.g. ``clip.encode_text``).
        preset: Resize rule, normalisation, logit scale, refinement; ``None``: whole image at its size with
            ``normalization``.
        normalization: Pixel normalisation when no preset is given (ZUTIS: ImageNet mean/std).
        config: Inference settings (threshold, temperature, NMS, ...); its architecture fields must equal the
            model's. ``None``: the model's config.

    Attributes:
        model, text_encoder, preset, config: As given (``preset`` and ``config`` resolved).
    """

    def __init__(
        self,
        model: ZUTIS,
        text_encoder: Callable[[Sequence[str]], Tensor],
        preset: ProtocolPreset | None = None,
        *,
        normalization: Normalization,
        config: ZUTISConfig | None = None,
    ) -> None:
        if config is not None:
            ours = model.config.model_dump(exclude=set(_INFERENCE_FIELDS))
            theirs = config.model_dump(exclude=set(_INFERENCE_FIELDS))
            different = sorted(name for name in ours if ours[name] != theirs[name])
            if different:
                details = ", ".join(f"{name}={theirs[name]!r} (model: {ours[name]!r})" for name in different)
                raise ValueError(
                    f"config changes the architecture ({details}); only the inference fields "
                    f"({', '.join(sorted(_INFERENCE_FIELDS))}) may differ from the model's config"
                )
        self.model = model.eval()
        self.text_encoder = text_encoder
        self.preset = (
            preset
            if preset is not None
            else ProtocolPreset(name="zutis-whole", normalization=normalization, background=BackgroundClass())
        )
        if self.preset.mode != "whole":
            raise ConfigError(
                f"preset {self.preset.name!r} uses mode {self.preset.mode!r}; ZUTIS predicts instances from one "
                "whole-image pass (the official protocol): use a preset with mode: whole"
            )
        self.config = config if config is not None else model.config
        self.refiner = make_refiner(self.preset.refinement)
        self._text_cache: dict[tuple[Any, ...], ConceptEmbeddings] = {}

    def text_embeddings(self, concepts: ConceptSet) -> ConceptEmbeddings:
        """The concept set's classifier rows (bare names), cached per names, synonyms and background names."""
        background = concepts.background
        if background.kind == "threshold":
            raise ConfigError(
                "ZUTIS predicts background as a class of its own (the literal 'background' prompt), not by a "
                "score threshold; use a preset or concept set with background: {kind: class}"
            )
        key = (
            background.names if isinstance(background, BackgroundClass) else (),
            tuple(concepts.prompts_for(name) for name in concepts.names),
        )
        cached = self._text_cache.get(key)
        if cached is None:
            bare = ConceptSet(names=concepts.names, templates="bare", synonyms=concepts.synonyms, background=background)
            with torch.no_grad():
                cached = concept_embeddings(self.text_encoder, bare)
            self._text_cache[key] = cached
        return cached

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] into ``concepts.label_names``, with instances.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1], not normalised.
            concepts: Classes, synonyms and background policy (templates are not used, see the class docstring).

        Returns:
            Logits ``[B, C, H, W]`` (background first with a background class) and one
            :class:`seg_core.InstancePredictions` per image with masks at ``(H, W)`` (with a centre-cropping
            resize rule: the :func:`seg_models.inference.center_crop_box` region).
        """
        check_pixel_images(images)
        text = self.text_embeddings(concepts)
        self.model.eval()
        device = next(self.model.parameters()).device
        height, width = int(images.shape[-2]), int(images.shape[-1])
        normalization = self.preset.normalization
        normalized = normalize_images(images.to(device).float(), normalization.mean, normalization.std)
        prepared = resize_images(normalized, self.preset.resize)
        valid = (int(prepared.shape[-2]), int(prepared.shape[-1]))
        padded = pad_to_multiple(prepared, self.model.patch_size)
        frame = (int(padded.shape[-2]), int(padded.shape[-1]))
        box = center_crop_box(height, width, self.preset.resize)
        out_size = (height, width) if box is None else (box[2], box[3])

        output = self.model(padded)
        rows = text.embeddings.to(device=device, dtype=torch.float32)
        scale = self.preset.logit_scale if self.preset.logit_scale is not None else self.config.logit_scale
        logits = text.reduce_rows(semantic_logits(output.embeddings.float(), rows, scale))
        logits = resize_logits(resize_logits(logits, frame)[..., : valid[0], : valid[1]], out_size)

        background_label = 0 if concepts.background.kind == "class" else None
        instances = tuple(
            predict_instances(
                output.embeddings[index],
                output.mask_logits[index],
                rows,
                self.config,
                background_label=background_label,
                out_size=out_size,
                input_size=frame,
                valid_size=valid,
                row_labels=text.row_labels,
            )
            for index in range(int(images.shape[0]))
        )
        result = SegmentationOutput(logits=logits, label_names=concepts.label_names, instances=instances)
        if self.refiner is None:
            return result
        refined = refine_output(result, images.to(device), self.preset, self.refiner)
        return SegmentationOutput(logits=refined.logits, label_names=refined.label_names, instances=instances)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------

_RESERVED_KEYS = ("method", "config", "clip", "visual", "normalization", "image_size", "label_names")


def _visual_summary(model: ZUTIS) -> dict[str, Any]:
    """The vision-tower facts a loader checks against the CLIP it is given."""
    visual = model.visual
    return {
        "type": type(visual).__name__,
        "width": model.width,
        "layers": len(visual.transformer.resblocks),
        "patch_size": list(model.patch_size),
        "output_dim": model.embed_dim,
    }


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    tmp.replace(path)


def save_zutis(
    model: ZUTIS,
    folder: str | Path,
    *,
    clip: str,
    label_names: Sequence[str] | None = None,
    normalization: Normalization,
    image_size: tuple[int, int],
    extra: Mapping[str, Any] | None = None,
    fp16: bool = True,
) -> Path:
    """Write a ZUTIS model folder: ``model.safetensors`` and ``zutis.json``.

    The weights hold the whole network (fine-tuned vision tower, ``ffn1``, queries, decoder, ``ffn2``); the text
    tower is not stored: ``zutis.json`` names the CLIP (``clip``) whose text tower classifies and whose vision
    architecture the tower has. :func:`load_zutis` takes that CLIP, deep-copies its vision tower and loads the
    fine-tuned weights over it, so no open_clip vision config is stored (``visual`` only records width, depth,
    patch size and output dimension, to refuse a mismatching CLIP with a clear message).

    ``zutis.json``: ``{"method": "zutis", "config", "clip", "visual", "normalization", "image_size",
    "label_names", **extra}``.

    Args:
        model: The trained network.
        folder: Output folder (created).
        clip: How to load the CLIP (a ``load_clip`` name: ``"ViT-B-16"``, ``"hf-hub:..."``, ``"local-dir:..."``).
        label_names: The labels it was trained on (informational), background first.
        normalization: The pixel normalisation it was trained with.
        image_size: Training crop ``(H, W)`` (informational).
        extra: More JSON-serialisable entries (must not reuse the keys above).
        fp16: Store floating-point tensors in float16 (loaded back into float32).

    Returns:
        The folder.
    """
    clashes = sorted(set(extra or {}) & set(_RESERVED_KEYS))
    if clashes:
        raise ValueError(f"extra must not redefine {clashes}: those keys are written by save_zutis; rename them")
    if not clip:
        raise ValueError("clip must name the CLIP to load (e.g. 'ViT-B-16' or 'local-dir:runs/clip'), got ''")
    info: dict[str, Any] = {
        "method": "zutis",
        "config": model.config.model_dump(mode="json"),
        "clip": clip,
        "visual": _visual_summary(model),
        "normalization": normalization.model_dump(mode="json"),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "label_names": None if label_names is None else list(label_names),
        **dict(extra or {}),
    }
    text = json.dumps(info, indent=2) + "\n"
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = export_state_dict(model, fp16=fp16)
    _write_atomic(
        directory / WEIGHTS_FILE_NAME,
        lambda path: save_file(tensors, str(path), metadata={"format": "pt", "architecture": "seg_models.zutis.ZUTIS"}),
    )
    _write_atomic(directory / ZUTIS_FILE, lambda path: path.write_text(text, encoding="utf-8"))
    return directory


def read_zutis_info(folder: str | Path) -> dict[str, Any]:
    """The content of a ZUTIS folder's ``zutis.json``.

    Raises:
        FileNotFoundError: No such folder.
        ConfigError: No ``zutis.json``, malformed JSON, or another method's folder.
    """
    directory = Path(folder)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such folder; pass a ZUTIS model folder ({_TRAIN_HINT})")
    path = directory / ZUTIS_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} has no {ZUTIS_FILE}, so it is not a ZUTIS model folder; {_TRAIN_HINT}")
    return read_method_json(path, method="zutis", display_name="ZUTIS", hint=_TRAIN_HINT)


def load_zutis(
    folder: str | Path,
    clip: ClipModel,
    preset: ProtocolPreset | None = None,
    *,
    device: str | torch.device = "cpu",
) -> ZUTISSegmenter:
    """Load a folder written by :func:`save_zutis` as a segmenter.

    Args:
        folder: The model folder.
        clip: The CLIP named by ``zutis.json``'s ``clip``: its vision tower is deep-copied as the architecture the
            fine-tuned weights are loaded into (float32, strict) and its ``encode_text`` classifies.
        preset: Inference preset; ``None``: whole image with the stored normalisation.
        device: Where the network goes.

    Raises:
        FileNotFoundError: No folder or no weights.
        ConfigError: Not a ZUTIS folder, a broken config, or weights that do not fit the given CLIP.
    """
    directory = Path(folder)
    info = read_zutis_info(directory)
    config_file = str(directory / ZUTIS_FILE)
    config = ZUTISConfig.parse(info.get("config", {}), source=config_file)
    normalization = Normalization.parse(info.get("normalization"), source=config_file)
    weights = directory / WEIGHTS_FILE_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has {ZUTIS_FILE} but no {WEIGHTS_FILE_NAME}; {_TRAIN_HINT}")
    source = info.get("clip", "?")
    try:
        model = ZUTIS(copy.deepcopy(clip.visual), config)
    except TypeError as error:
        raise ConfigError(
            f"{directory} was trained on the CLIP {source!r}; the CLIP given cannot host it: {error}"
        ) from None
    saved_visual = info.get("visual")
    if saved_visual is not None and saved_visual != _visual_summary(model):
        raise ConfigError(
            f"{directory} was trained on a vision tower {saved_visual} (CLIP {source!r}) but the CLIP given has "
            f"{_visual_summary(model)}; load the CLIP named in {ZUTIS_FILE} and pass it"
        )
    state = {key: value.float() if value.is_floating_point() else value for key, value in load_file(weights).items()}
    expected = model.state_dict()
    missing, unexpected, mismatched = state_mismatch(expected, state)
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"the weights in {weights} do not fit a ZUTIS on the CLIP given (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatch {mismatched[:5]}); load the CLIP named in {ZUTIS_FILE} "
            f"({source!r}) and check the folder was written by save_zutis"
        )
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    return ZUTISSegmenter(model, clip.encode_text, preset, normalization=normalization)
