"""GroupViT: grouping stages, text transformer, the segmenter, converters for official and transformers checkpoints.

Xu et al., "GroupViT: Semantic Segmentation Emerges from Text Supervision", CVPR 2022 (the baseline of PGSeg and
MV-SimCon). Written from the paper and the facts of the official code (NVlabs/GroupViT ``models/group_vit.py``,
``models/transformer.py``, ``models/multi_label_contrastive.py``, ``segmentation/evaluation/group_vit_seg.py``):

- **Vision.** Patch embedding (conv, LayerNorm) plus a learnable positional embedding, bicubically interpolated
  when the patch grid differs from the trained one. Each stage concatenates learnable group tokens to the image
  tokens and runs pre-norm transformer blocks over both. A stage's *grouping block* then merges the tokens into
  segments: LayerNorm on groups and tokens; a token-mixing MLP maps the ``S1`` group tokens to ``S2`` (the next
  stage's groups) followed by LayerNorm; a cross-attention block (groups query the tokens, post-norm) gives the
  *centres*; ``AssignAttention`` (one head, qkv bias, scale ``d^-1/2``) assigns every token to one centre with a
  softmax over the **group** axis, made hard by a straight-through one-hot (training: with Gumbel noise, τ = 1;
  eval: argmax); each group's weights are divided by their sum over tokens plus ``assign_eps = 1``; the segment
  is ``proj(attn · v) + centre``, then a residual MLP. Later stages' group tokens are zero-initialised learnable
  tokens plus a token-mixing MLP of the previous stage's group tokens. The last stage has no grouping block.
- **Heads.** LayerNorm on the output segments, mean over them, a two-layer MLP projector (hidden layer with
  BatchNorm and ReLU) into the joint space. Text: a causal transformer (QuickGELU) pooled at the EOT token (the
  highest token id), same projector type. A learnable logit scale, initialised to 1/0.07 and clamped at 100.
- **Inference** (the official ``GroupViTSegInference``): the *soft* assignments of all stages are multiplied into a
  pixel-to-group map, bilinearly resized to the image; each pixel takes its argmax group; a group's class scores are
  ``softmax(scale · cos)`` restricted to the image-level top-5 classes times the unrestricted softmax; background is
  where a pixel's best score is below ``min(threshold, the image's max group score)``. The group features themselves
  are pooled with the *hard* assignment, as in the official code.

Checkpoints: :func:`convert_transformers_groupvit` reads the Hugging Face ``transformers.GroupViTModel`` format
(``nvidia/groupvit-gcc-yfcc``); :func:`convert_official_groupvit` reads the official ``.pth`` layout (see the key
table there); :func:`load_groupvit` loads either, or this module's own folder format written by
:func:`save_groupvit` (``config.json`` + ``model.safetensors``).

PGSeg hooks: :meth:`GroupViT.vision_features` returns, per stage, the stage-input tokens (before its blocks), the
group tokens, the centres (projected group tokens after the pre-assign cross-attention) and both assignments, and
takes an optional hook that adds a tensor (PGSeg's prototype reconstruction) to the tokens entering each grouping
block.

Contents, in order: configs; building blocks and the straight-through assignment; the vision transformer; the text
transformer; the model; the official inference rule and the segmenter; converters; saving and loading.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from seg_core import (
    IMAGENET_MEAN_STD,
    ConceptSet,
    ConfigError,
    MaskRefiner,
    Normalization,
    ProtocolPreset,
    SegmentationOutput,
    SegModel,
)
from seg_models.clip import ConceptEmbeddings, TextEmbeddingCache, concept_embeddings
from seg_models.inference import (
    check_pixel_images,
    infer,
    normalize_images,
    pad_to_multiple,
    refine_output,
    resize_logits,
)
from seg_models.refiners import make_refiner
from seg_models.weights import export_state_dict

__all__ = [
    "CONFIG_FILE_NAME",
    "GROUPVIT_GCC_YFCC_CONFIG",
    "GROUPVIT_TINY_CONFIG",
    "WEIGHTS_FILE_NAME",
    "AssignAttention",
    "GroupViT",
    "GroupViTConfig",
    "GroupViTSegmenter",
    "GroupViTTextConfig",
    "GroupViTVisionConfig",
    "GroupViTVisionOutput",
    "GroupingBlock",
    "GroupingHook",
    "GroupingStage",
    "GroupingStageOutput",
    "assign_groups",
    "convert_official_groupvit",
    "convert_transformers_groupvit",
    "group_class_scores",
    "groupvit_config_from_transformers",
    "groupvit_tokenizer",
    "load_groupvit",
    "pixel_class_scores",
    "pixel_group_map",
    "save_groupvit",
    "threshold_background",
]

CONFIG_FILE_NAME = "config.json"
"""The config file of a saved GroupViT folder (ours: :class:`GroupViTConfig` JSON; transformers: its config)."""

WEIGHTS_FILE_NAME = "model.safetensors"
"""The weights file of a saved GroupViT folder (a plain ``state_dict`` in safetensors)."""

_PYTORCH_WEIGHTS_FILE_NAME = "pytorch_model.bin"  # the older transformers weights file
_TOP_K_CLASSES = 5  # the official inference restricts group scores to the image-level top-5 classes
_MIN_SCORE = 1e-8  # floor before taking the log of the official scores (which are 0 outside the top-5 classes)

# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


class GroupViTVisionConfig(SegModel):
    """The grouping vision transformer.

    Attributes:
        image_size: Training resolution (square); the positional embedding has ``(image_size / patch_size)²`` rows.
        patch_size: Patch side in pixels.
        embed_dim: Token width ``C`` (the same in every stage).
        depths: Transformer blocks per stage.
        num_heads: Attention heads of the blocks and of the pre-assign cross-attention.
        num_group_tokens: Learnable group tokens per stage; positive for every stage but the last, which has none.
        num_output_groups: Segments each grouping block outputs, one per stage but the last.
        mlp_ratio: Hidden width of the block MLPs (and the pre-assign cross-attention's) over ``embed_dim``.
        token_mlp_ratio: Hidden width of the grouping block's token-mixing MLP over ``embed_dim`` (official 0.5).
        channel_mlp_ratio: Hidden width of the grouping block's output MLP over ``embed_dim`` (official 4).
        hard_assignment: Pool with a hard one-hot (straight-through) assignment; soft softmax otherwise.
        gumbel: Add Gumbel noise to the assignment logits in training (the official code ties it to ``hard``).
        gumbel_tau: Gumbel-softmax temperature.
        assign_eps: Added to each group's total assignment before dividing by it.
        layer_norm_eps: Epsilon of every LayerNorm of the tower.
        drop_path_rate: Stochastic depth, linearly increasing over all blocks (training only; official 0.1).
    """

    image_size: PositiveInt = 224
    patch_size: PositiveInt = 16
    embed_dim: PositiveInt = 384
    depths: tuple[PositiveInt, ...] = (6, 3, 3)
    num_heads: PositiveInt = 6
    num_group_tokens: tuple[NonNegativeInt, ...] = (64, 8, 0)
    num_output_groups: tuple[PositiveInt, ...] = (64, 8)
    mlp_ratio: float = Field(default=4.0, gt=0)
    token_mlp_ratio: float = Field(default=0.5, gt=0)
    channel_mlp_ratio: float = Field(default=4.0, gt=0)
    hard_assignment: bool = True
    gumbel: bool = True
    gumbel_tau: float = Field(default=1.0, gt=0)
    assign_eps: float = Field(default=1.0, ge=0)
    layer_norm_eps: float = Field(default=1e-5, gt=0)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> GroupViTVisionConfig:
        stages = len(self.depths)
        if stages == 0:
            raise ValueError("depths must list at least one stage, e.g. [6, 3, 3]")
        if len(self.num_group_tokens) != stages:
            raise ValueError(
                f"num_group_tokens {list(self.num_group_tokens)} must have one entry per stage "
                f"(depths has {stages}), e.g. [64, 8, 0]"
            )
        if len(self.num_output_groups) != stages - 1:
            raise ValueError(
                f"num_output_groups {list(self.num_output_groups)} must have one entry per stage but the last "
                f"({stages - 1} for depths {list(self.depths)}), e.g. [64, 8]"
            )
        if any(count == 0 for count in self.num_group_tokens[:-1]) or self.num_group_tokens[-1] != 0:
            raise ValueError(
                f"num_group_tokens {list(self.num_group_tokens)}: every stage but the last needs group tokens and the "
                "last stage has none (it has no grouping block), e.g. [64, 8, 0]"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("mlp_ratio", "token_mlp_ratio", "channel_mlp_ratio"):
            if int(getattr(self, name) * self.embed_dim) < 1:
                raise ValueError(
                    f"{name} {getattr(self, name)} gives an empty hidden layer at embed_dim {self.embed_dim}"
                )
        return self

    @property
    def grid_size(self) -> int:
        """Patches per side at the training resolution."""
        return self.image_size // self.patch_size


class GroupViTTextConfig(SegModel):
    """The causal text transformer (CLIP's, with QuickGELU), pooled at the EOT token.

    Attributes:
        vocab_size: Token vocabulary (49408 for the CLIP BPE the tokenizer uses).
        context_length: Positional embedding rows; the tokenizer pads/truncates to it.
        width: Token width.
        layers: Transformer blocks.
        heads: Attention heads (the official code uses ``width // 64``).
        mlp_ratio: MLP hidden width over ``width``.
        layer_norm_eps: Epsilon of every LayerNorm of the tower.
    """

    vocab_size: PositiveInt = 49408
    context_length: PositiveInt = 77
    width: PositiveInt = 256
    layers: PositiveInt = 12
    heads: PositiveInt = 4
    mlp_ratio: float = Field(default=4.0, gt=0)
    layer_norm_eps: float = Field(default=1e-5, gt=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GroupViTTextConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self


class GroupViTConfig(SegModel):
    """A whole GroupViT: vision and text towers, projectors, logit scale and pixel normalisation.

    Attributes:
        vision: The grouping vision transformer.
        text: The text transformer.
        projection_dim: Joint embedding size ``D``.
        projection_hidden_dim: Hidden width of both two-layer MLP projectors (official 4096).
        logit_scale_init: Initial logit scale (the parameter holds its log); official 1/0.07.
        logit_scale_max: Clamp of the logit scale.
        normalization: Pixel mean/std the model was trained with (GroupViT: ImageNet's, it is trained from scratch).
    """

    vision: GroupViTVisionConfig = GroupViTVisionConfig()
    text: GroupViTTextConfig = GroupViTTextConfig()
    projection_dim: PositiveInt = 256
    projection_hidden_dim: PositiveInt = 4096
    logit_scale_init: float = Field(default=1 / 0.07, gt=0)
    logit_scale_max: float = Field(default=100.0, gt=0)
    normalization: Normalization = IMAGENET_MEAN_STD


GROUPVIT_GCC_YFCC_CONFIG = GroupViTConfig(vision=GroupViTVisionConfig(drop_path_rate=0.1))
"""The official ``group_vit_gcc_yfcc_30e`` (and ``gcc_redcap_30e``) architecture: 224 px, patch 16, 384-d, depths
6/3/3, 6 heads, group tokens 64/8/0, output groups 64/8, drop path 0.1; text 12 layers, 256 wide, 4 heads, context
77; projection 4096 → 256 (NVlabs/GroupViT ``configs/group_vit_gcc_yfcc_30e.yml``)."""

GROUPVIT_TINY_CONFIG = GroupViTConfig(
    vision=GroupViTVisionConfig(
        image_size=64,
        patch_size=8,
        embed_dim=64,
        depths=(2, 1, 1),
        num_heads=4,
        num_group_tokens=(8, 4, 0),
        num_output_groups=(8, 4),
    ),
    text=GroupViTTextConfig(context_length=32, width=64, layers=2, heads=2),
    projection_dim=64,
    projection_hidden_dim=256,
)
"""A tiny CPU GroupViT for the synthetic world: 64 px, patch 8 (an 8×8 grid), 64-d, depths 2/1/1, group tokens
8/4/0 (64 patches → 8 → 4 segments); text 2 layers, 64 wide, context 32; projection 256 → 64."""

# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


class _QuickGELU(nn.Module):
    """``x · sigmoid(1.702 x)``, the activation of CLIP's (and GroupViT's) text transformer."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``rate`` and scale the kept
    ones by ``1 / (1 - rate)``; identity in eval."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class _Mlp(nn.Module):
    """``fc2(act(fc1(x)))`` on the last axis."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = activation()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class _TokenMixer(_Mlp):
    """An MLP over the token axis: ``[B, S_in, C] -> [B, S_out, C]`` (the official ``MixerMlp``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head (self- or cross-) attention with separate q/k/v projections, scale ``head_dim^-1/2``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor | None = None, *, causal: bool = False) -> Tensor:
        """``query [B, L, C]`` attends to ``key [B, S, C]`` (itself when ``None``); returns ``[B, L, C]``."""
        source = query if key is None else key
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(source)), self._split(self.v_proj(source))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        batch, _, length, _ = attended.shape
        out: Tensor = self.out_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return out


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln x)``, then ``x + mlp(ln x)`` (stochastic depth on both)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        activation: Callable[[], nn.Module],
        *,
        eps: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, mlp_hidden, dim, activation)
        self.drop_path = _DropPath(drop_path)

    def forward(self, x: Tensor, *, causal: bool = False) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), causal=causal))
        out: Tensor = x + self.drop_path(self.mlp(self.norm2(x)))
        return out


class _CrossAttentionBlock(nn.Module):
    """Post-norm cross-attention: ``x = q + attn(q, k)``, ``x = x + mlp(ln x)``, ``ln_post(x)`` (official
    ``CrossAttnBlock(post_norm=True)``: neither the query nor the key is normalised before the attention)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, eps: float) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, mlp_hidden, dim, nn.GELU)
        self.norm_post = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm_mlp(x))
        out: Tensor = self.norm_post(x)
        return out


class _ProjectionHead(nn.Module):
    """Two-layer MLP projector ``fc2(relu(bn(fc1(x))))`` on the last axis of ``[..., C]`` (official ``ProjectMLP``
    with ``num_layers=2``; its 1×1 Conv1d layers are linear layers here). BatchNorm sees every leading position
    as a sample, as the official Conv1d layout does for ``[B, L, C]`` inputs."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out: Tensor = self.fc2(F.relu(self.bn(self.fc1(flat))))
        return out.reshape(*x.shape[:-1], out.shape[-1])


def assign_groups(
    logits: Tensor,
    *,
    hard: bool,
    gumbel: bool = False,
    tau: float = 1.0,
    dim: int = -2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Softmax assignment over ``dim``, optionally with Gumbel noise and a straight-through hard one-hot.

    With ``gumbel``, ``g = -log(-log u)`` (``u`` uniform) is added and the sum divided by ``tau`` before the softmax
    (Gumbel-softmax). With ``hard``, the result is ``one_hot(argmax) - stop_grad(soft) + soft``: exactly one-hot in
    the forward pass, the softmax's gradient in the backward pass (straight-through estimator).

    Args:
        logits: Assignment logits, e.g. ``[B, G, N]`` (groups × tokens) with ``dim=-2``: softmax over groups.
        hard: Return the straight-through one-hot instead of the softmax.
        gumbel: Add Gumbel(0, 1) noise first (training-time sampling).
        tau: Gumbel-softmax temperature (used with ``gumbel``).
        dim: The axis the assignment is normalised over.
        generator: Random generator for the noise.

    Returns:
        Same shape as ``logits``; sums to 1 over ``dim``.
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if gumbel:
        tiny = torch.finfo(logits.dtype).tiny
        eps = torch.finfo(logits.dtype).eps
        # Clamped like torch.distributions.Gumbel: u = 0 or 1 would give infinite noise.
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        noise = -torch.log(-torch.log(uniform.clamp(tiny, 1 - eps)))
        logits = (logits + noise) / tau
    soft = logits.softmax(dim)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


class AssignAttention(nn.Module):
    """Single-head assignment of tokens to groups (official ``AssignAttention``, ``sum_assign=False``).

    ``A = assign_groups(q(groups) k(tokens)ᵀ · C^-1/2)`` with the softmax over groups; each group's row is divided by
    its sum over tokens plus ``assign_eps``; the output is ``proj(A v(tokens))``.

    Args:
        dim: Token width ``C``.
        hard: Pool with the straight-through one-hot.
        gumbel: Gumbel noise while training.
        tau: Gumbel temperature.
        assign_eps: Added to each group's total weight.
    """

    def __init__(self, dim: int, *, hard: bool = True, gumbel: bool = True, tau: float = 1.0, assign_eps: float = 1.0):
        super().__init__()
        self.scale = dim**-0.5
        self.hard = hard
        self.gumbel = gumbel
        self.tau = tau
        self.assign_eps = assign_eps
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, groups: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pool ``tokens [B, N, C]`` into ``groups [B, G, C]``.

        Returns:
            ``(out [B, G, C], soft [B, G, N], used [B, G, N])``: the pooled features, the plain softmax over groups
            (no noise, not hard: what the official inference visualises and segments with) and the assignment the
            pooling used (before the per-group normalisation).
        """
        logits = self.q_proj(groups) @ self.k_proj(tokens).transpose(-2, -1) * self.scale
        soft = logits.softmax(dim=-2)
        gumbel = self.gumbel and self.training
        used = assign_groups(logits, hard=self.hard, gumbel=gumbel, tau=self.tau) if gumbel or self.hard else soft
        weights = used / (used.sum(dim=-1, keepdim=True) + self.assign_eps)
        out: Tensor = self.out_proj(weights @ self.v_proj(tokens))
        return out, soft, used


class GroupingBlock(nn.Module):
    """Merges ``N`` tokens into ``G`` segments with ``S`` group tokens (official ``GroupingBlock``).

    Args:
        config: The vision config (widths, heads, ratios, assignment flags).
        num_group_tokens: ``S``, the stage's group tokens.
        num_output_groups: ``G``, the segments out.
    """

    def __init__(self, config: GroupViTVisionConfig, num_group_tokens: int, num_output_groups: int) -> None:
        super().__init__()
        dim, eps = config.embed_dim, config.layer_norm_eps
        self.norm_groups = nn.LayerNorm(dim, eps=eps)
        hidden = int(config.token_mlp_ratio * dim)
        self.group_mixer = _TokenMixer(num_group_tokens, hidden, num_output_groups, nn.GELU)
        self.norm_mixed = nn.LayerNorm(dim, eps=eps)
        self.norm_inputs = nn.LayerNorm(dim, eps=eps)
        self.pre_assign = _CrossAttentionBlock(dim, config.num_heads, int(config.mlp_ratio * dim), eps)
        self.assign = AssignAttention(
            dim,
            hard=config.hard_assignment,
            gumbel=config.gumbel,
            tau=config.gumbel_tau,
            assign_eps=config.assign_eps,
        )
        self.norm_out = nn.LayerNorm(dim, eps=eps)
        self.mlp_out = _Mlp(dim, int(config.channel_mlp_ratio * dim), dim, nn.GELU)

    def forward(self, tokens: Tensor, group_tokens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Group ``tokens [B, N, C]`` with ``group_tokens [B, S, C]``.

        Returns:
            ``(segments [B, G, C], centres [B, G, C], soft [B, G, N], used [B, G, N])``; the centres are the mixed
            group tokens after the pre-assign cross-attention (what PGSeg regularises).
        """
        groups = self.norm_groups(group_tokens)
        tokens = self.norm_inputs(tokens)
        centres = self.pre_assign(self.norm_mixed(self.group_mixer(groups)), tokens)
        pooled, soft, used = self.assign(centres, tokens)
        segments = pooled + centres
        segments = segments + self.mlp_out(self.norm_out(segments))
        return segments, centres, soft, used


# ---------------------------------------------------------------------------------------------------------------
# The vision transformer
# ---------------------------------------------------------------------------------------------------------------

GroupingHook = Callable[[int, Tensor, Tensor], "Tensor | None"]
"""``hook(stage_index, stage_input [B, N, C], grouping_input [B, N, C]) -> addition [B, N, C] or None``.

Called before each grouping block with the tokens that entered the stage (before its blocks) and the tokens about
to be grouped; what it returns is added to the latter (PGSeg adds its prototype reconstruction there)."""


@dataclass(frozen=True, eq=False)
class GroupingStageOutput:
    """What one stage computed.

    Attributes:
        tokens: ``[B, N_out, C]`` the stage's output: the segments (``N_out = G``), or for the last stage (no
            grouping block) its input tokens after the blocks.
        input_tokens: ``[B, N_in, C]`` the tokens that entered the stage, before its blocks.
        group_tokens: ``[B, S, C]`` the stage's group tokens after its blocks (the next stage mixes them into its
            own), or ``None`` for the last stage.
        centres: ``[B, G, C]`` the mixed group tokens after the pre-assign cross-attention, or ``None``.
        soft_assignment: ``[B, N_in, G]`` softmax over groups (rows sum to 1), or ``None``.
        assignment: ``[B, N_in, G]`` the assignment the pooling used (one-hot with hard assignment), or ``None``.
    """

    tokens: Tensor
    input_tokens: Tensor
    group_tokens: Tensor | None
    centres: Tensor | None
    soft_assignment: Tensor | None
    assignment: Tensor | None


@dataclass(frozen=True, eq=False)
class GroupViTVisionOutput:
    """The vision tower's output.

    Attributes:
        tokens: ``[B, G, C]`` the final segments after the final LayerNorm (``G``: the last grouping block's groups).
        stages: One :class:`GroupingStageOutput` per stage.
        grid: ``(h, w)`` patch grid of the input.
    """

    tokens: Tensor
    stages: tuple[GroupingStageOutput, ...]
    grid: tuple[int, int]

    def assignments(self, *, hard: bool = False) -> list[Tensor]:
        """``[B, N_in, G]`` per grouping stage: soft, or the assignments the pooling used (``hard=True``)."""
        chosen = [stage.assignment if hard else stage.soft_assignment for stage in self.stages]
        return [item for item in chosen if item is not None]


class _GroupProjector(nn.Module):
    """LayerNorm then a token-mixing MLP from the previous stage's ``S_prev`` group tokens to ``S``."""

    def __init__(self, dim: int, previous: int, current: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mixer = _TokenMixer(previous, dim // 2, current, nn.GELU)

    def forward(self, previous_groups: Tensor) -> Tensor:
        out: Tensor = self.mixer(self.norm(previous_groups))
        return out


class GroupingStage(nn.Module):
    """One stage: group tokens concatenated to the image tokens, transformer blocks, then a grouping block.

    Args:
        config: The vision config.
        index: The stage's position (0-based).
        drop_paths: Stochastic-depth rate of each of the stage's blocks.
    """

    group_tokens: nn.Parameter | None

    def __init__(self, config: GroupViTVisionConfig, index: int, drop_paths: Sequence[float]) -> None:
        super().__init__()
        dim, eps = config.embed_dim, config.layer_norm_eps
        self.index = index
        self.num_group_tokens = config.num_group_tokens[index]
        self.group_tokens = nn.Parameter(torch.zeros(1, self.num_group_tokens, dim)) if self.num_group_tokens else None
        self.group_projector = (
            _GroupProjector(dim, config.num_group_tokens[index - 1], self.num_group_tokens, eps)
            if index > 0 and self.num_group_tokens
            else None
        )
        mlp_hidden = int(config.mlp_ratio * dim)
        self.blocks = nn.ModuleList(
            _Block(dim, config.num_heads, mlp_hidden, nn.GELU, eps=eps, drop_path=drop_path) for drop_path in drop_paths
        )
        self.grouping = (
            GroupingBlock(config, self.num_group_tokens, config.num_output_groups[index])
            if index < len(config.depths) - 1
            else None
        )

    def forward(
        self, tokens: Tensor, previous_groups: Tensor | None = None, *, hook: GroupingHook | None = None
    ) -> GroupingStageOutput:
        """Run the stage on ``tokens [B, N, C]`` given the previous stage's group tokens ``[B, S_prev, C]``."""
        groups: Tensor | None = None
        if self.group_tokens is not None:
            groups = self.group_tokens.expand(tokens.shape[0], -1, -1)
            if self.group_projector is not None:
                if previous_groups is None:
                    raise ValueError(f"stage {self.index} mixes the previous stage's group tokens; pass them")
                groups = groups + self.group_projector(previous_groups)
        x = tokens if groups is None else torch.cat([tokens, groups], dim=1)
        for block in self.blocks:
            x = block(x)
        if groups is not None:
            x, groups = x[:, : tokens.shape[1]], x[:, tokens.shape[1] :]
        if self.grouping is None or groups is None:
            return GroupingStageOutput(x, tokens, groups, None, None, None)
        if hook is not None:
            addition = hook(self.index, tokens, x)
            if addition is not None:
                x = x + addition
        segments, centres, soft, used = self.grouping(x, groups)
        return GroupingStageOutput(segments, tokens, groups, centres, soft.transpose(1, 2), used.transpose(1, 2))


class GroupViTVisionTransformer(nn.Module):
    """Patch embedding, positional embedding, grouping stages and the final LayerNorm."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.patch_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size**2, dim))
        total = sum(config.depths)  # stochastic depth rises linearly from 0 to drop_path_rate over all blocks
        rates = [config.drop_path_rate * index / max(total - 1, 1) for index in range(total)]
        starts = [sum(config.depths[:index]) for index in range(len(config.depths))]
        self.stages = nn.ModuleList(
            GroupingStage(config, index, rates[start : start + depth])
            for index, (start, depth) in enumerate(zip(starts, config.depths, strict=True))
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def stage_list(self) -> list[GroupingStage]:
        """The stages, typed."""
        return [stage for stage in self.stages if isinstance(stage, GroupingStage)]

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """``[1, h·w, C]``: the learnt embedding, bicubically interpolated when ``grid`` is not the trained one."""
        side = self.config.grid_size
        if grid == (side, side):
            return self.pos_embed
        table = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)

    def forward(self, images: Tensor, *, hook: GroupingHook | None = None) -> GroupViTVisionOutput:
        """Normalised ``[B, 3, H, W]`` images (any size; the patch grid is ``floor(H / p) × floor(W / p)``)."""
        patches = self.patch_embed(images)
        grid = (int(patches.shape[-2]), int(patches.shape[-1]))
        x = self.patch_norm(patches.flatten(2).transpose(1, 2))
        x = x + self.position_embedding(grid)
        outputs: list[GroupingStageOutput] = []
        previous: Tensor | None = None
        for stage in self.stages:
            output: GroupingStageOutput = stage(x, previous, hook=hook)
            outputs.append(output)
            x, previous = output.tokens, output.group_tokens
        return GroupViTVisionOutput(tokens=self.norm(x), stages=tuple(outputs), grid=grid)


# ---------------------------------------------------------------------------------------------------------------
# The text transformer
# ---------------------------------------------------------------------------------------------------------------


class GroupViTTextTransformer(nn.Module):
    """Token and positional embeddings, causal blocks, final LayerNorm, pooled at the EOT token."""

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(config.context_length, width))
        hidden = int(config.mlp_ratio * width)
        self.blocks = nn.ModuleList(
            _Block(width, config.heads, hidden, _QuickGELU, eps=config.layer_norm_eps) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def block_list(self) -> list[_Block]:
        """The blocks, typed."""
        return [block for block in self.blocks if isinstance(block, _Block)]

    def forward(self, token_ids: Tensor) -> Tensor:
        """``[N, L]`` token ids (``L <= context_length``) -> ``[N, width]`` at the EOT token.

        The EOT token is found as the highest id of each row (CLIP's end-of-text id is the vocabulary's last).
        """
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be [N, L], got shape {tuple(token_ids.shape)}")
        length = int(token_ids.shape[1])
        if length > self.config.context_length:
            raise ValueError(
                f"token_ids have length {length} but the context length is {self.config.context_length}; "
                "tokenize with GroupViT.tokenize"
            )
        x = self.token_embedding(token_ids) + self.pos_embed[:length]
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.norm(x)
        rows = torch.arange(x.shape[0], device=x.device)
        pooled: Tensor = x[rows, token_ids.argmax(dim=-1)]
        return pooled


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


def pixel_group_map(assignments: Sequence[Tensor], grid: tuple[int, int], size: tuple[int, int] | None) -> Tensor:
    """Multiply per-stage assignments into a pixel-to-group map (official ``get_attn_maps``).

    Args:
        assignments: ``[B, N_i, G_i]`` per grouping stage, ``N_0 = h·w`` patches and ``N_{i+1} = G_i``.
        grid: ``(h, w)`` patch grid.
        size: ``(H, W)`` to bilinearly resize to (``align_corners=False``), or ``None`` for the patch grid.

    Returns:
        ``[B, G, H, W]`` (``G``: the last stage's groups).
    """
    if not assignments:
        raise ValueError("assignments is empty: the model has no grouping stage")
    product = assignments[0]
    for assignment in assignments[1:]:
        product = product @ assignment
    batch, tokens, groups = product.shape
    if tokens != grid[0] * grid[1]:
        raise ValueError(f"the first assignment has {tokens} tokens but the grid {grid} has {grid[0] * grid[1]}")
    maps = product.transpose(1, 2).reshape(batch, groups, grid[0], grid[1])
    return maps if size is None else resize_logits(maps, size)


@functools.cache
def _clip_tokenizer(context_length: int) -> Any:
    """open_clip's CLIP BPE tokenizer (the one the official code uses), built once per context length."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def groupvit_tokenizer(context_length: int) -> Callable[[list[str]], Tensor]:
    """The tokenizer GroupViT's text tower reads: texts -> ``[N, context_length]`` CPU token ids (CLIP BPE; SOT,
    text, EOT, zero padding). Picklable, so DataLoader workers can tokenise captions."""
    tokenizer: Callable[[list[str]], Tensor] = _clip_tokenizer(context_length)
    return tokenizer


def _init_weights(module: nn.Module) -> None:
    # The official GroupViT initialisation: truncated normal 0.02 for linear layers of the vision tower, unit
    # LayerNorms; the projectors keep PyTorch's default initialisation (official ProjectMLP's Conv1d default).
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class GroupViT(nn.Module):
    """GroupViT: the grouping vision tower, the text tower, two projectors and a logit scale.

    Images are normalised pixels ``[B, 3, H, W]`` (any size; see :attr:`GroupViTConfig.normalization`); texts are
    token ids ``[N, L]`` or strings (tokenised with open_clip's CLIP BPE, :meth:`tokenize`).

    Args:
        config: The architecture.

    Attributes:
        config: As given.
        visual, text: The towers.
        image_projector, text_projector: The MLP projectors into the joint space.
        logit_scale: The log of the logit scale (a parameter).
        identity: Names the weights for text-embedding caches (a random id unless set by a loader).
    """

    def __init__(self, config: GroupViTConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = GroupViTVisionTransformer(config.vision)
        self.text = GroupViTTextTransformer(config.text)
        self.image_projector = _ProjectionHead(
            config.vision.embed_dim, config.projection_hidden_dim, config.projection_dim
        )
        self.text_projector = _ProjectionHead(config.text.width, config.projection_hidden_dim, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self.identity = f"groupvit:random:{uuid.uuid4().hex}"
        self._tokenizer: Callable[..., Tensor] | None = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if torch.device("meta") == self.logit_scale.device:
            return  # shape-only instance (converters check key names and shapes on the meta device)
        self.visual.apply(_init_weights)
        nn.init.trunc_normal_(self.visual.pos_embed, std=0.02)
        for stage in self.visual.stage_list():
            # Zero group tokens where a projector feeds them (official zero_init_group_token).
            if stage.group_tokens is not None and stage.group_projector is None:
                nn.init.trunc_normal_(stage.group_tokens, std=0.02)
        text = self.text
        width, layers = self.config.text.width, self.config.text.layers
        nn.init.normal_(text.token_embedding.weight, std=0.02)
        nn.init.normal_(text.pos_embed, std=0.01)
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        for block in text.block_list():  # CLIP's text initialisation (official models/transformer.py)
            for projection in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj):
                nn.init.normal_(projection.weight, std=attn_std)
                nn.init.zeros_(projection.bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
            nn.init.normal_(block.mlp.fc2.weight, std=proj_std)

    @property
    def embed_dim(self) -> int:
        """Dimension ``D`` of the joint embedding space."""
        return self.config.projection_dim

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.logit_scale.device

    def clamped_logit_scale(self) -> Tensor:
        """The logit scale ``min(exp(logit_scale), logit_scale_max)`` (a 0-d tensor)."""
        return self.logit_scale.exp().clamp(max=self.config.logit_scale_max)

    # -- text ---------------------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """``[N, context_length]`` token ids (open_clip's CLIP BPE; SOT, text, EOT, zero padding) on the device."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
        if self._tokenizer is None:
            tokenizer = _clip_tokenizer(self.config.text.context_length)
            if tokenizer.vocab_size > self.config.text.vocab_size:
                raise ValueError(
                    f"the CLIP tokenizer has {tokenizer.vocab_size} tokens but text.vocab_size is "
                    f"{self.config.text.vocab_size}; use vocab_size {tokenizer.vocab_size} or pass token ids"
                )
            self._tokenizer = tokenizer
        ids: Tensor = self._tokenizer(list(texts))
        return ids.to(self.device)

    def encode_text(self, text: Tensor | Sequence[str]) -> Tensor:
        """Embed token ids ``[N, L]`` or ``N`` strings into ``[N, D]`` (not L2-normalised)."""
        token_ids = text if isinstance(text, Tensor) else self.tokenize(text)
        out: Tensor = self.text_projector(self.text(token_ids.to(self.device)))
        return out

    # -- images -------------------------------------------------------------------------------------------------

    def vision_features(self, images: Tensor, *, hook: GroupingHook | None = None) -> GroupViTVisionOutput:
        """Run the vision tower on normalised ``[B, 3, H, W]`` images (see :class:`GroupViTVisionOutput`)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] normalised pixels, got shape {tuple(images.shape)}")
        patch = self.config.vision.patch_size
        if images.shape[-2] < patch or images.shape[-1] < patch:
            raise ValueError(f"images of size {tuple(images.shape[-2:])} are smaller than one {patch}-px patch")
        output: GroupViTVisionOutput = self.visual(images, hook=hook)
        return output

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """Project vision tokens ``[B, G, C]`` one by one into the joint space: ``[B, G, D]`` (not L2-normalised)."""
        out: Tensor = self.image_projector(tokens)
        return out

    def encode_image(self, images: Tensor) -> Tensor:
        """Embed normalised images ``[B, 3, H, W]`` into ``[B, D]`` (mean of the segments, projected; not
        L2-normalised)."""
        out: Tensor = self.image_projector(self.vision_features(images).tokens.mean(dim=1))
        return out

    def encode_image_and_groups(self, images: Tensor) -> tuple[Tensor, Tensor, GroupViTVisionOutput]:
        """One vision pass: ``(image [B, D], groups [B, G, D], vision output)``, embeddings not L2-normalised."""
        vision = self.vision_features(images)
        image: Tensor = self.image_projector(vision.tokens.mean(dim=1))
        return image, self.project_tokens(vision.tokens), vision

    def group_assignments(self, images: Tensor, hard: bool = False) -> list[Tensor]:
        """Token-to-group assignments ``[B, N_in, G]`` of every grouping stage.

        Args:
            images: Normalised ``[B, 3, H, W]``.
            hard: ``False`` (the official inference): the plain softmax over groups, rows sum to 1. ``True``: the
                assignment the pooling used (the straight-through one-hot with ``hard_assignment``; with Gumbel
                noise in training mode).
        """
        return self.vision_features(images).assignments(hard=hard)

    def pixel_group_map(self, images: Tensor, hard: bool = False) -> Tensor:
        """``[B, G, H, W]``: the stages' assignments multiplied and bilinearly resized to the image size."""
        vision = self.vision_features(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return pixel_group_map(vision.assignments(hard=hard), vision.grid, size)

    def forward(self, images: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(image_emb [B, D], text_emb [N, D], logit_scale)``: L2-normalised embeddings and the clamped scale
        (the contrastive logits are ``logit_scale · image_emb @ text_embᵀ``)."""
        image = F.normalize(self.encode_image(images), dim=-1)
        text = F.normalize(self.encode_text(token_ids), dim=-1)
        return image, text, self.clamped_logit_scale()


# ---------------------------------------------------------------------------------------------------------------
# The official inference rule and the segmenter
# ---------------------------------------------------------------------------------------------------------------


def group_class_scores(
    group_embeddings: Tensor,
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    logit_scale: float | Tensor,
    *,
    top_k: int = _TOP_K_CLASSES,
) -> Tensor:
    """Group-to-class scores of the official inference.

    ``s = scale · cos(group, text)``; the result is ``softmax(s restricted to the image's top-k classes) ·
    softmax(s)``, where the top-k classes are those with the largest ``softmax(scale · cos(image, text))``.

    Args:
        group_embeddings: ``[B, G, D]`` (any norm).
        image_embeddings: ``[B, D]`` (any norm).
        text_embeddings: ``[K, D]`` (any norm).
        logit_scale: The scale (the model's clamped one in the official code).
        top_k: Classes kept per image (official 5; ``min(top_k, K)`` are kept).

    Returns:
        ``[B, G, K]`` in [0, 1]; zero outside each image's top-k classes.
    """
    if group_embeddings.ndim != 3 or image_embeddings.ndim != 2 or text_embeddings.ndim != 2:
        raise ValueError(
            "expected groups [B, G, D], images [B, D], texts [K, D]; got "
            f"{tuple(group_embeddings.shape)}, {tuple(image_embeddings.shape)}, {tuple(text_embeddings.shape)}"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    text = F.normalize(text_embeddings, dim=-1)
    group_logits = torch.einsum("bgd,kd->bgk", F.normalize(group_embeddings, dim=-1), text) * logit_scale
    image_probabilities = (F.normalize(image_embeddings, dim=-1) @ text.T * logit_scale).softmax(dim=-1)
    kept = torch.zeros_like(image_probabilities, dtype=torch.bool)
    kept.scatter_(-1, image_probabilities.topk(min(top_k, text.shape[0]), dim=-1).indices, value=True)
    restricted = group_logits.masked_fill(~kept[:, None, :], float("-inf")).softmax(dim=-1)
    return restricted * group_logits.softmax(dim=-1)


def pixel_class_scores(group_map: Tensor, group_scores: Tensor) -> Tensor:
    """Each pixel takes the class scores of its argmax group (the official one-hot ``attn_map @ affinity``).

    Args:
        group_map: ``[B, G, H, W]`` pixel-to-group map.
        group_scores: ``[B, G, K]`` from :func:`group_class_scores`.

    Returns:
        ``[B, K, H, W]``.
    """
    if group_map.ndim != 4 or group_scores.ndim != 3 or group_map.shape[1] != group_scores.shape[1]:
        raise ValueError(
            f"group_map [B, G, H, W] and group_scores [B, G, K] must agree on G; got {tuple(group_map.shape)} "
            f"and {tuple(group_scores.shape)}"
        )
    winner = group_map.argmax(dim=1)  # [B, H, W]
    batch = torch.arange(group_map.shape[0], device=group_map.device)[:, None, None]
    return group_scores[batch, winner].permute(0, 3, 1, 2)


def threshold_background(pixel_scores: Tensor, group_scores: Tensor, threshold: float) -> Tensor:
    """The official background channel: 1 where a pixel's best class score is below
    ``min(threshold, max of the image's group scores)``, else 0.

    Args:
        pixel_scores: ``[B, K, H, W]`` from :func:`pixel_class_scores`.
        group_scores: ``[B, G, K]`` of the same images.
        threshold: The dataset's ``bg_thresh`` (e.g. 0.95 on VOC).

    Returns:
        ``[B, 1, H, W]`` in {0, 1}.
    """
    limit = group_scores.flatten(1).amax(dim=1).clamp(max=threshold)  # [B]
    below = pixel_scores.amax(dim=1, keepdim=True) < limit[:, None, None, None]
    return below.to(pixel_scores.dtype)


class GroupViTSegmenter:
    """GroupViT as a :class:`seg_core.Segmenter`, with the official inference rule.

    Per window: the soft pixel-to-group map, the group-to-class scores (top-k restricted × unrestricted softmax),
    each pixel's argmax group's scores, and a background channel under a threshold policy; windows are averaged
    by :func:`seg_models.inference.infer` (as mmseg averages the official ``pred_logits``). The returned logits are
    the logs of those scores, so ``softmax(logits)`` is the scores normalised per pixel and the argmax is the
    official one.

    Background policies: ``BackgroundThreshold`` (score ``"probability"``) is the official rule;
    ``BackgroundClass`` prompts the background names as classes (label 0 scores the best of them); ``NoBackground``
    segments into the concepts only.

    Args:
        model: The GroupViT (run in eval mode during :meth:`segment`; its own mode is restored afterwards).
        preset: Resize rule, whole or sliding-window inference, pixel normalisation, optional logit scale (``None``:
            the model's clamped scale) and refinement. ``None``: whole-image inference at the input size with the
            model's normalisation. The preset's ``class_names``, ``templates`` and ``background`` describe the concept
            set the evaluator builds and passes to :meth:`segment`; they are not read here.
        refiner: A :class:`seg_core.MaskRefiner` for the probabilities; ``None`` takes the preset's ``refinement``.
        top_k: Image-level classes kept per window (official 5).

    Attributes:
        model, preset, refiner, top_k: As given (``refiner`` resolved).
        text_cache: In-memory ensembled text embeddings (call ``clear()`` after changing the text tower).
    """

    def __init__(
        self,
        model: GroupViT,
        preset: ProtocolPreset | None = None,
        refiner: MaskRefiner | None = None,
        *,
        top_k: int = _TOP_K_CLASSES,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.model = model
        self.preset = (
            preset
            if preset is not None
            else ProtocolPreset(name="groupvit-whole", templates="single", normalization=model.config.normalization)
        )
        self.refiner = refiner if refiner is not None else make_refiner(self.preset.refinement)
        self.top_k = top_k
        self.text_cache = TextEmbeddingCache()

    def concept_embeddings(self, concepts: ConceptSet) -> ConceptEmbeddings:
        """Ensembled text embeddings of the concept set (its templates; GroupViT's is ``"a photo of a {}."``)."""
        with torch.no_grad():
            return concept_embeddings(
                self.model.encode_text, concepts, identity=self.model.identity, cache=self.text_cache, persistent=False
            )

    def label_scores(
        self, images: Tensor, text: ConceptEmbeddings, concepts: ConceptSet, logit_scale: float | Tensor
    ) -> Tensor:
        """The official scores of normalised images ``[B, 3, H, W]`` -> ``[B, len(label_names), H, W]``.

        The image is zero-padded to a multiple of the patch size so patches line up with pixels; the group map is
        resized to the padded size and the padding cut off (the official code stretches the floor-sized grid
        over the whole image instead; the two agree when the size is a multiple of the patch, e.g. 448 windows).
        """
        height, width = int(images.shape[-2]), int(images.shape[-1])
        patch = self.model.config.vision.patch_size
        padded = pad_to_multiple(images, (patch, patch))
        image_embeddings, group_embeddings, vision = self.model.encode_image_and_groups(padded)
        size = (int(padded.shape[-2]), int(padded.shape[-1]))
        group_map = pixel_group_map(vision.assignments(hard=False), vision.grid, size)[..., :height, :width]
        rows = text.embeddings.to(device=group_embeddings.device, dtype=group_embeddings.dtype)
        group_scores = group_class_scores(group_embeddings, image_embeddings, rows, logit_scale, top_k=self.top_k)
        row_scores = pixel_class_scores(group_map, group_scores)
        label_scores = text.reduce_rows(row_scores)  # several background names: label 0 takes their best
        background = concepts.background
        if background.kind != "threshold":
            return label_scores
        return torch.cat([threshold_background(row_scores, group_scores, background.threshold), label_scores], dim=1)

    @torch.no_grad()
    def segment(self, images: Tensor, concepts: ConceptSet) -> SegmentationOutput:
        """Segment RGB images in [0, 1] into ``concepts.label_names``.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1], not normalised (normalised here with the preset's mean/std;
                refiners see the raw pixels).
            concepts: Classes, templates, synonyms and background policy.

        Returns:
            Log-scores ``[B, C, H, W]`` at the input resolution (with a centre-cropping preset: the
            :func:`seg_models.inference.center_crop_box` region), background first when the concept set has one.
        """
        check_pixel_images(images)
        background = concepts.background
        if background.kind == "threshold" and background.score != "probability":
            raise ValueError(
                f"GroupViT thresholds the group-to-class probability; background.score={background.score!r} is not "
                "supported: use BackgroundThreshold(score='probability')"
            )
        was_training = self.model.training
        self.model.eval()  # no Gumbel noise, BatchNorm running statistics; the caller's mode is restored below
        try:
            images = images.to(self.model.device)
            text = self.concept_embeddings(concepts)
            normalization = self.preset.normalization
            normalized = normalize_images(images.float(), normalization.mean, normalization.std)
            preset_scale = self.preset.logit_scale
            scale = preset_scale if preset_scale is not None else self.model.clamped_logit_scale()
            scores = infer(lambda batch: self.label_scores(batch, text, concepts, scale), normalized, self.preset)
        finally:
            self.model.train(was_training)
        output = SegmentationOutput(logits=scores.clamp_min(_MIN_SCORE).log(), label_names=concepts.label_names)
        return refine_output(output, images, self.preset, self.refiner)


# ---------------------------------------------------------------------------------------------------------------
# Converters
# ---------------------------------------------------------------------------------------------------------------

_Transform = Callable[[Tensor], Tensor]
_Rule = tuple[re.Pattern[str], str]


def _rules(pairs: Sequence[tuple[str, str]]) -> list[_Rule]:
    return [(re.compile(pattern), replacement) for pattern, replacement in pairs]


# Grouping block names: identical in the official code and transformers, except transformers' `out_proj` for the
# pre-assign attention's output projection (the official `proj`).
_GROUPING_RULES = _rules(
    [
        (r"norm_tokens\.(weight|bias)", r"norm_groups.\1"),
        (r"mlp_inter\.(fc[12]\.(?:weight|bias))", r"group_mixer.\1"),
        (r"norm_post_tokens\.(weight|bias)", r"norm_mixed.\1"),
        (r"norm_x\.(weight|bias)", r"norm_inputs.\1"),
        (r"pre_assign_attn\.attn\.([qkv]_proj\.(?:weight|bias))", r"pre_assign.attn.\1"),
        (r"pre_assign_attn\.attn\.(?:out_proj|proj)\.(weight|bias)", r"pre_assign.attn.out_proj.\1"),
        (r"pre_assign_attn\.norm2\.(weight|bias)", r"pre_assign.norm_mlp.\1"),
        (r"pre_assign_attn\.mlp\.(fc[12]\.(?:weight|bias))", r"pre_assign.mlp.\1"),
        (r"pre_assign_attn\.norm_post\.(weight|bias)", r"pre_assign.norm_post.\1"),
        (r"assign\.([qkv]_proj\.(?:weight|bias))", r"assign.\1"),
        (r"assign\.proj\.(weight|bias)", r"assign.out_proj.\1"),
        (r"norm_new_x\.(weight|bias)", r"norm_out.\1"),
        (r"mlp_channels\.(fc[12]\.(?:weight|bias))", r"mlp_out.\1"),
    ]
)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

_TRANSFORMERS_RULES = _rules(
    [
        (r"vision_model\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"visual.patch_embed.\1"),
        (r"vision_model\.embeddings\.layernorm\.(weight|bias)", r"visual.patch_norm.\1"),
        (r"vision_model\.embeddings\.position_embeddings", r"visual.pos_embed"),
        (r"vision_model\.encoder\.stages\.(\d+)\.group_token", r"visual.stages.\1.group_tokens"),
        (
            r"vision_model\.encoder\.stages\.(\d+)\.group_projector\.0\.(weight|bias)",
            r"visual.stages.\1.group_projector.norm.\2",
        ),
        (
            r"vision_model\.encoder\.stages\.(\d+)\.group_projector\.1\.(fc[12]\.(?:weight|bias))",
            r"visual.stages.\1.group_projector.mixer.\2",
        ),
        (
            r"vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.([qkv]_proj|out_proj)\.(weight|bias)",
            r"visual.stages.\1.blocks.\2.attn.\3.\4",
        ),
        (
            r"vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)",
            r"visual.stages.\1.blocks.\2.norm\3.\4",
        ),
        (
            r"vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))",
            r"visual.stages.\1.blocks.\2.mlp.\3",
        ),
        (r"vision_model\.encoder\.stages\.(\d+)\.downsample\.(.+)", r"visual.stages.\1.grouping.<\2>"),
        (r"vision_model\.layernorm\.(weight|bias)", r"visual.norm.\1"),
        (r"text_model\.embeddings\.token_embedding\.weight", r"text.token_embedding.weight"),
        (r"text_model\.embeddings\.position_embedding\.weight", r"text.pos_embed"),
        (
            r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv]_proj|out_proj)\.(weight|bias)",
            r"text.blocks.\1.attn.\2.\3",
        ),
        (r"text_model\.encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"text.blocks.\1.norm\2.\3"),
        (r"text_model\.encoder\.layers\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))", r"text.blocks.\1.mlp.\2"),
        (r"text_model\.final_layer_norm\.(weight|bias)", r"text.norm.\1"),
        (r"visual_projection\.0\.(weight|bias)", r"image_projector.fc1.\1"),
        (rf"visual_projection\.1\.{_BN}", r"image_projector.bn.\1"),
        (r"visual_projection\.3\.(weight|bias)", r"image_projector.fc2.\1"),
        (r"text_projection\.0\.(weight|bias)", r"text_projector.fc1.\1"),
        (rf"text_projection\.1\.{_BN}", r"text_projector.bn.\1"),
        (r"text_projection\.3\.(weight|bias)", r"text_projector.fc2.\1"),
        (r"logit_scale", r"logit_scale"),
    ]
)
_TRANSFORMERS_IGNORED = re.compile(r"text_model\.embeddings\.position_ids")  # a buffer older versions saved

_OFFICIAL_RULES = _rules(
    [
        (r"img_encoder\.patch_embed\.proj\.(weight|bias)", r"visual.patch_embed.\1"),
        (r"img_encoder\.patch_embed\.norm\.(weight|bias)", r"visual.patch_norm.\1"),
        (r"img_encoder\.pos_embed", r"visual.pos_embed"),
        (r"img_encoder\.layers\.(\d+)\.group_token", r"visual.stages.\1.group_tokens"),
        (r"img_encoder\.layers\.(\d+)\.group_projector\.0\.(weight|bias)", r"visual.stages.\1.group_projector.norm.\2"),
        (
            r"img_encoder\.layers\.(\d+)\.group_projector\.1\.(fc[12]\.(?:weight|bias))",
            r"visual.stages.\1.group_projector.mixer.\2",
        ),
        (
            r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
            r"visual.stages.\1.blocks.\2.attn.<qkv>.\3",
        ),
        (
            r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)",
            r"visual.stages.\1.blocks.\2.attn.out_proj.\3",
        ),
        (
            r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.norm([12])\.(weight|bias)",
            r"visual.stages.\1.blocks.\2.norm\3.\4",
        ),
        (
            r"img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12]\.(?:weight|bias))",
            r"visual.stages.\1.blocks.\2.mlp.\3",
        ),
        (r"img_encoder\.layers\.(\d+)\.downsample\.(.+)", r"visual.stages.\1.grouping.<\2>"),
        (r"img_encoder\.norm\.(weight|bias)", r"visual.norm.\1"),
        (r"text_encoder\.token_embedding\.weight", r"text.token_embedding.weight"),
        (r"text_encoder\.positional_embedding", r"text.pos_embed"),
        (r"text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", r"text.blocks.\1.attn.<qkv>.\2"),
        (
            r"text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)",
            r"text.blocks.\1.attn.out_proj.\2",
        ),
        (r"text_encoder\.transformer\.resblocks\.(\d+)\.ln_([12])\.(weight|bias)", r"text.blocks.\1.norm\2.\3"),
        (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"text.blocks.\1.mlp.fc1.\2"),
        (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"text.blocks.\1.mlp.fc2.\2"),
        (r"text_encoder\.ln_final\.(weight|bias)", r"text.norm.\1"),
        (r"img_projector\.linear_hidden\.0\.(weight|bias)", r"image_projector.fc1.\1"),
        (rf"img_projector\.linear_hidden\.1\.{_BN}", r"image_projector.bn.\1"),
        (r"img_projector\.linear_out\.(weight|bias)", r"image_projector.fc2.\1"),
        (r"text_projector\.linear_hidden\.0\.(weight|bias)", r"text_projector.fc1.\1"),
        (rf"text_projector\.linear_hidden\.1\.{_BN}", r"text_projector.bn.\1"),
        (r"text_projector\.linear_out\.(weight|bias)", r"text_projector.fc2.\1"),
        (r"logit_scale", r"logit_scale"),
    ]
)
# Training-only: the multi-label loss's own temperature (official multi_label > 0, e.g. the YFCC model).
_OFFICIAL_IGNORED = re.compile(r"multi_label_logit_scale")


def _rename(key: str, rules: Sequence[_Rule]) -> str | None:
    for pattern, replacement in rules:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        renamed = match.expand(replacement)
        inner = re.search(r"<(.+)>$", renamed)
        if inner is not None and inner.group(1) != "qkv":  # a grouping-block sub-key
            sub = _rename(inner.group(1), _GROUPING_RULES)
            return None if sub is None else renamed[: inner.start()] + sub
        return renamed
    return None


def _map_state_dict(
    state_dict: Mapping[str, Tensor], rules: Sequence[_Rule], ignored: re.Pattern[str], source: str
) -> dict[str, Tensor]:
    """Rename keys by ``rules``; ``<qkv>`` keys are fused q/k/v rows split into three; conv-1×1 weights squeezed."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if ignored.fullmatch(key):
            continue
        renamed = _rename(key, rules)
        if renamed is None:
            unknown.append(key)
            continue
        if ".<qkv>." in renamed:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[renamed.replace("<qkv>", name)] = part.clone()
            continue
        if renamed.endswith(("fc1.weight", "fc2.weight")) and "projector" in renamed and value.ndim == 3:
            out[renamed] = value.reshape(value.shape[0], value.shape[1])  # official 1×1 Conv1d weight [out, in, 1]
        else:
            out[renamed] = value
    if unknown:
        raise ConfigError(f"{source} state dict has keys this converter does not know: {unknown[:8]}")
    return out


def _check_against_model(config: GroupViTConfig, state_dict: Mapping[str, Tensor], source: str) -> None:
    with torch.device("meta"):
        reference = GroupViT(config).state_dict()
    missing = sorted(set(reference) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(reference))
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} vs {tuple(reference[key].shape)}"
        for key in sorted(set(reference) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(reference[key].shape)
    ]
    if missing or unexpected or wrong:
        raise ConfigError(
            f"{source} checkpoint does not match its config: missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"shape mismatches {wrong[:6]}"
        )


def _ratio(hidden: int, width: int, field: str) -> float:
    ratio = hidden / width
    if int(ratio * width) != hidden:
        raise ConfigError(f"{field}: hidden size {hidden} is not int(ratio · {width}) for any ratio we can store")
    return ratio


def _sub_config(hf_config: Mapping[str, Any], name: str) -> dict[str, Any]:
    # Old configs (e.g. nvidia/groupvit-gcc-yfcc) may carry `text_config_dict`; values there win, as in transformers.
    merged: dict[str, Any] = dict(hf_config.get(f"{name}_config") or {})
    merged.update(hf_config.get(f"{name}_config_dict") or {})
    return merged


def groupvit_config_from_transformers(hf_config: Mapping[str, Any]) -> GroupViTConfig:
    """Our :class:`GroupViTConfig` from a ``transformers`` ``GroupViTConfig`` dict (its ``config.json``).

    Fields absent from the dict take transformers' defaults (the ``nvidia/groupvit-gcc-yfcc`` architecture). The
    pixel normalisation is ImageNet's, which the official models were trained with (the Hub repositories'
    preprocessor config lists CLIP's statistics, which the official evaluation does not use).

    Raises:
        ConfigError: An architecture this module does not build (naming the transformers field).
    """
    vision = _sub_config(hf_config, "vision")
    text = _sub_config(hf_config, "text")
    hidden = int(vision.get("hidden_size", 384))
    depths = tuple(int(v) for v in vision.get("depths", (6, 3, 3)))
    group_tokens = tuple(int(v) for v in vision.get("num_group_tokens", (64, 8, 0)))
    output_groups = tuple(int(v) for v in vision.get("num_output_groups", (64, 8, 8)))
    if group_tokens and group_tokens[-1] != 0:
        raise ConfigError(
            f"vision_config.num_group_tokens: {list(group_tokens)} has group tokens in the last stage; only "
            "architectures whose last stage has no grouping block (e.g. [64, 8, 0]) are supported"
        )
    for key, expected in (("hidden_act", "gelu"), ("num_channels", 3)):
        if vision.get(key, expected) != expected:
            raise ConfigError(f"vision_config.{key}: only {expected!r} is supported (got {vision[key]!r})")
    if text.get("hidden_act", "quick_gelu") != "quick_gelu":
        raise ConfigError(f"text_config.hidden_act: only 'quick_gelu' is supported (got {text['hidden_act']!r})")
    image_size = vision.get("image_size", 224)
    patch_size = vision.get("patch_size", 16)
    sizes = {"image_size": image_size, "patch_size": patch_size}
    for key, value in sizes.items():
        if isinstance(value, list | tuple):
            if len(set(value)) != 1:
                raise ConfigError(f"vision_config.{key}: only square sizes are supported (got {value!r})")
            sizes[key] = value[0]
    assign_ratio = vision.get("assign_mlp_ratio", (0.5, 4))
    if not isinstance(assign_ratio, list | tuple):
        assign_ratio = (assign_ratio, assign_ratio)
    text_width = int(text.get("hidden_size", 256))
    data = {
        "vision": {
            "image_size": int(sizes["image_size"]),
            "patch_size": int(sizes["patch_size"]),
            "embed_dim": hidden,
            "depths": depths,
            "num_heads": int(vision.get("num_attention_heads", 6)),
            "num_group_tokens": group_tokens,
            "num_output_groups": output_groups[: max(len(depths) - 1, 0)],
            "mlp_ratio": _ratio(int(vision.get("intermediate_size", 1536)), hidden, "vision_config.intermediate_size"),
            "token_mlp_ratio": float(assign_ratio[0]),
            "channel_mlp_ratio": float(assign_ratio[1]),
            "assign_eps": float(vision.get("assign_eps", 1.0)),
            "layer_norm_eps": float(vision.get("layer_norm_eps", 1e-5)),
        },
        "text": {
            "vocab_size": int(text.get("vocab_size", 49408)),
            "context_length": int(text.get("max_position_embeddings", 77)),
            "width": text_width,
            "layers": int(text.get("num_hidden_layers", 12)),
            "heads": int(text.get("num_attention_heads", 4)),
            "mlp_ratio": _ratio(int(text.get("intermediate_size", 1024)), text_width, "text_config.intermediate_size"),
            "layer_norm_eps": float(text.get("layer_norm_eps", 1e-5)),
        },
        "projection_dim": int(hf_config.get("projection_dim", 256)),
        "projection_hidden_dim": int(hf_config.get("projection_intermediate_dim", 4096)),
        "logit_scale_init": math.exp(float(hf_config.get("logit_scale_init_value", 2.6592))),
    }
    return GroupViTConfig.parse(data, source="transformers GroupViT config")


def convert_transformers_groupvit(
    state_dict: Mapping[str, Tensor], hf_config_dict: Mapping[str, Any]
) -> tuple[GroupViTConfig, dict[str, Tensor]]:
    """Convert a ``transformers.GroupViTModel`` checkpoint (e.g. ``nvidia/groupvit-gcc-yfcc``) to this module.

    Key mapping (transformers -> ours): ``vision_model.embeddings.{patch_embeddings.projection, layernorm,
    position_embeddings}`` -> ``visual.{patch_embed, patch_norm, pos_embed}``; ``vision_model.encoder.stages.i`` ->
    ``visual.stages.i`` with ``layers.j.{self_attn, layer_norm1, layer_norm2, mlp}`` -> ``blocks.j.{attn, norm1,
    norm2, mlp}``, ``group_token`` -> ``group_tokens``, ``group_projector.{0, 1}`` -> ``group_projector.{norm,
    mixer}`` and ``downsample`` -> ``grouping`` (see the grouping-block table in :func:`convert_official_groupvit`);
    ``text_model.*`` -> ``text.*``; ``{visual,text}_projection.{0, 1, 3}`` -> ``{image,text}_projector.{fc1, bn,
    fc2}``; ``logit_scale`` as is (both hold its log).

    Args:
        state_dict: The transformers model's ``state_dict()`` (or the loaded ``model.safetensors``).
        hf_config_dict: Its ``config.json`` as a dict (``GroupViTConfig.to_dict()``).

    Returns:
        ``(config, state_dict)`` loadable with ``GroupViT(config).load_state_dict(state_dict)``.

    Raises:
        ConfigError: Unknown keys, or keys/shapes that do not match the config.
    """
    config = groupvit_config_from_transformers(hf_config_dict)
    converted = _map_state_dict(state_dict, _TRANSFORMERS_RULES, _TRANSFORMERS_IGNORED, "transformers GroupViT")
    _check_against_model(config, converted, "transformers GroupViT")
    return config, converted


def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key)) is not None}
    return max(found) + 1 if found else 0


def _official_setting(official_cfg: Mapping[str, Any] | None, section: str, key: str) -> Any:
    if official_cfg is None:
        return None
    part = official_cfg.get(section) if section else official_cfg
    return None if part is None else part.get(key)


def _official_config(state_dict: Mapping[str, Tensor], official_cfg: Mapping[str, Any] | None) -> GroupViTConfig:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise ConfigError(f"official GroupViT state dict lacks {key!r}; is this an official GroupViT checkpoint?")
        return tuple(state_dict[key].shape)

    embed_dim, _, patch, _ = shape("img_encoder.patch_embed.proj.weight")
    positions = shape("img_encoder.pos_embed")[1]
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConfigError(f"img_encoder.pos_embed has {positions} rows, not a square grid")
    stages = _count(state_dict, r"img_encoder\.layers\.(\d+)\.")
    depths = tuple(_count(state_dict, rf"img_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
    group_tokens = tuple(
        shape(f"img_encoder.layers.{i}.group_token")[1] if f"img_encoder.layers.{i}.group_token" in state_dict else 0
        for i in range(stages)
    )
    output_groups = tuple(
        shape(f"img_encoder.layers.{i}.downsample.mlp_inter.fc2.weight")[0] for i in range(stages - 1)
    )
    if any(key.startswith("img_encoder.layers.") and ".reduction." in key for key in state_dict):
        raise ConfigError("official checkpoint uses embed_factors (a width change between stages); not supported")
    width = shape("text_encoder.token_embedding.weight")[1]
    heads = _official_setting(official_cfg, "img_encoder", "num_heads")
    if isinstance(heads, list | tuple):
        if len(set(heads)) != 1:
            raise ConfigError(f"official_cfg.img_encoder.num_heads: only equal heads per stage are supported ({heads})")
        heads = heads[0]
    if "img_projector.linear_hidden.0.weight" not in state_dict:
        raise ConfigError("official checkpoint has no 2-layer projector (proj_num_layers != 2); not supported")
    hidden = shape("img_projector.linear_hidden.0.weight")[0]
    temperature = _official_setting(official_cfg, "", "contrast_temperature")
    drop_path = _official_setting(official_cfg, "img_encoder", "drop_path_rate")
    hard = _official_setting(official_cfg, "img_encoder", "hard_assignment")
    data = {
        "vision": {
            "image_size": side * patch,
            "patch_size": patch,
            "embed_dim": embed_dim,
            "depths": depths,
            "num_heads": 6 if heads is None else int(heads),  # the official GroupViT default, both releases
            "num_group_tokens": group_tokens,
            "num_output_groups": output_groups,
            "mlp_ratio": _ratio(shape("img_encoder.layers.0.blocks.0.mlp.fc1.weight")[0], embed_dim, "mlp_ratio"),
            "token_mlp_ratio": _ratio(
                shape("img_encoder.layers.0.downsample.mlp_inter.fc1.weight")[0], embed_dim, "token_mlp_ratio"
            )
            if stages > 1
            else 0.5,
            "channel_mlp_ratio": _ratio(
                shape("img_encoder.layers.0.downsample.mlp_channels.fc1.weight")[0], embed_dim, "channel_mlp_ratio"
            )
            if stages > 1
            else 4.0,
            "hard_assignment": True if hard is None else bool(hard),
            "gumbel": True if hard is None else bool(hard),  # official: gumbel=hard_assignment
            "drop_path_rate": 0.1 if drop_path is None else float(drop_path),
        },
        "text": {
            "vocab_size": shape("text_encoder.token_embedding.weight")[0],
            "context_length": shape("text_encoder.positional_embedding")[0],
            "width": width,
            "layers": _count(state_dict, r"text_encoder\.transformer\.resblocks\.(\d+)\."),
            "heads": max(width // 64, 1),  # official TextTransformer: heads = width // 64
            "mlp_ratio": _ratio(
                shape("text_encoder.transformer.resblocks.0.mlp.c_fc.weight")[0], width, "text.mlp_ratio"
            ),
        },
        "projection_dim": shape("img_projector.linear_out.weight")[0],
        "projection_hidden_dim": hidden,
        "logit_scale_init": 1 / (0.07 if temperature is None else float(temperature)),
    }
    config = GroupViTConfig.parse(data, source="official GroupViT checkpoint")
    _cross_check(config, official_cfg)
    return config


def _cross_check(config: GroupViTConfig, official_cfg: Mapping[str, Any] | None) -> None:
    """Values given in ``official_cfg`` must agree with what the state dict shows."""
    checks = {
        ("img_encoder", "embed_dim"): config.vision.embed_dim,
        ("img_encoder", "depths"): list(config.vision.depths),
        ("img_encoder", "num_group_tokens"): list(config.vision.num_group_tokens),
        ("img_encoder", "num_output_groups"): list(config.vision.num_output_groups),
        ("img_encoder", "patch_size"): config.vision.patch_size,
        ("text_encoder", "width"): config.text.width,
        ("text_encoder", "layers"): config.text.layers,
        ("text_encoder", "context_length"): config.text.context_length,
        ("text_encoder", "vocab_size"): config.text.vocab_size,
        ("", "output_dim"): config.projection_dim,
    }
    for (section, key), actual in checks.items():
        given = _official_setting(official_cfg, section, key)
        if given is None:
            continue
        if (list(given) if isinstance(given, list | tuple) else given) != actual:
            where = f"{section}.{key}" if section else key
            raise ConfigError(f"official_cfg.{where}: {given!r} disagrees with the checkpoint, which has {actual!r}")


def convert_official_groupvit(
    checkpoint_state_dict: Mapping[str, Tensor], official_cfg: Mapping[str, Any] | None = None
) -> tuple[GroupViTConfig, dict[str, Tensor]]:
    """Convert an official NVlabs/GroupViT state dict (``checkpoint["model"]`` of a released ``.pth``).

    The architecture is read off the tensor shapes (embed dim, patch, grid, stages, depths, group tokens, output
    groups, MLP ratios, text width/layers/context/vocabulary, projector sizes); what shapes cannot tell comes from
    ``official_cfg``, the ``model:`` section of the official YAML config (``img_encoder.num_heads``, default 6;
    ``img_encoder.drop_path_rate``, default 0.1; ``img_encoder.hard_assignment``, default true;
    ``contrast_temperature``, default 0.07). Text heads follow the official rule ``width // 64``. Values given in
    ``official_cfg`` are checked against the shapes.

    Key mapping (official -> ours), from the official module structure (``models/group_vit.py``,
    ``models/transformer.py``, ``models/multi_label_contrastive.py``) as transformers' own
    ``convert_groupvit_nvlab_to_hf.py`` reads it:

    - ``img_encoder.patch_embed.{proj, norm}`` -> ``visual.{patch_embed, patch_norm}``; ``img_encoder.pos_embed`` ->
      ``visual.pos_embed``; ``img_encoder.norm`` -> ``visual.norm``;
    - ``img_encoder.layers.i.blocks.j.{norm1, norm2, mlp.fc1, mlp.fc2, attn.proj}`` ->
      ``visual.stages.i.blocks.j.{norm1, norm2, mlp.fc1, mlp.fc2, attn.out_proj}``; the fused ``attn.qkv`` rows are
      split into ``attn.{q,k,v}_proj`` (q first);
    - ``img_encoder.layers.i.group_token`` -> ``visual.stages.i.group_tokens``; ``group_projector.{0, 1.fcN}`` ->
      ``group_projector.{norm, mixer.fcN}``;
    - grouping block ``img_encoder.layers.i.downsample.X`` -> ``visual.stages.i.grouping.Y``: ``norm_tokens`` ->
      ``norm_groups``, ``mlp_inter`` -> ``group_mixer``, ``norm_post_tokens`` -> ``norm_mixed``, ``norm_x`` ->
      ``norm_inputs``, ``pre_assign_attn.attn.{q,k,v}_proj`` / ``.proj`` -> ``pre_assign.attn.{q,k,v}_proj`` /
      ``.out_proj``, ``pre_assign_attn.{norm2, mlp, norm_post}`` -> ``pre_assign.{norm_mlp, mlp, norm_post}``,
      ``assign.{q,k,v}_proj`` / ``assign.proj`` -> ``assign.{q,k,v}_proj`` / ``assign.out_proj``, ``norm_new_x`` ->
      ``norm_out``, ``mlp_channels`` -> ``mlp_out``;
    - ``text_encoder.{token_embedding, positional_embedding, ln_final}`` -> ``text.{token_embedding, pos_embed,
      norm}``; ``text_encoder.transformer.resblocks.j.{ln_1, ln_2, mlp.c_fc, mlp.c_proj, attn.out_proj}`` ->
      ``text.blocks.j.{norm1, norm2, mlp.fc1, mlp.fc2, attn.out_proj}``; ``attn.in_proj_{weight,bias}`` (PyTorch
      ``MultiheadAttention``) split into ``attn.{q,k,v}_proj``;
    - ``{img,text}_projector.linear_hidden.{0, 1}`` / ``.linear_out`` -> ``{image,text}_projector.{fc1, bn}`` /
      ``.fc2`` (the 1×1 Conv1d weights ``[out, in, 1]`` squeezed); ``logit_scale`` as is;
      ``multi_label_logit_scale`` (training only) is dropped. A leading ``module.`` (DDP) is stripped.

    Assumptions (the official code allows more): equal widths in all stages (``embed_factors`` all 1, so no
    ``reduction`` layer), ``pos_embed_type='simple'``, ``proj_num_layers=2``, equal heads in every stage.

    Returns:
        ``(config, state_dict)`` loadable with ``GroupViT(config).load_state_dict(state_dict)``.

    Raises:
        ConfigError: Unknown keys, unsupported architecture, or ``official_cfg`` disagreeing with the shapes.
    """
    stripped = {key.removeprefix("module."): value for key, value in checkpoint_state_dict.items()}
    config = _official_config(stripped, official_cfg)
    converted = _map_state_dict(stripped, _OFFICIAL_RULES, _OFFICIAL_IGNORED, "official GroupViT")
    _check_against_model(config, converted, "official GroupViT")
    return config, converted


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------


def save_groupvit(model: GroupViT, directory: str | Path, *, fp16: bool = False) -> Path:
    """Write ``config.json`` (:class:`GroupViTConfig`) and ``model.safetensors`` (the ``state_dict``) to a folder.

    Args:
        model: The model.
        directory: Output folder (created).
        fp16: Store floating-point tensors in float16 (half the size; loaded back into float32).

    Returns:
        The folder; :func:`load_groupvit` reads it back.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / CONFIG_FILE_NAME)
    tensors = export_state_dict(model, fp16=fp16)
    tmp = folder / f".{WEIGHTS_FILE_NAME}.{uuid.uuid4().hex}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": "seg_models.groupvit.GroupViT"})
    tmp.replace(folder / WEIGHTS_FILE_NAME)
    return folder


def _is_transformers_config(data: Mapping[str, Any]) -> bool:
    return data.get("model_type") == "groupvit" or "vision_config" in data or "vision_config_dict" in data


def _load_weights_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _from_folder_files(config_file: Path, weights_file: Path, source: str) -> GroupViT:
    import json

    data = json.loads(config_file.read_text(encoding="utf-8"))
    weights = _load_weights_file(weights_file)
    if _is_transformers_config(data):
        config, state_dict = convert_transformers_groupvit(weights, data)
    else:
        config, state_dict = GroupViTConfig.parse(data, source=str(config_file)), weights
    model = GroupViT(config)
    model.load_state_dict(state_dict)
    model.identity = f"groupvit:{source}"
    return model


def _folder_weights(folder: Path) -> Path:
    for name in (WEIGHTS_FILE_NAME, _PYTORCH_WEIGHTS_FILE_NAME):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder} has {CONFIG_FILE_NAME} but no {WEIGHTS_FILE_NAME} or {_PYTORCH_WEIGHTS_FILE_NAME}; save the model "
        "with save_groupvit(model, folder)"
    )


def _hub_files(repo_id: str, revision: str | None, cache_dir: str | Path | None, local_only: bool) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def download(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, local_files_only=local_only))

    config_file = download(CONFIG_FILE_NAME)
    try:
        weights_file = download(WEIGHTS_FILE_NAME)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        weights_file = download(_PYTORCH_WEIGHTS_FILE_NAME)
    return config_file, weights_file


def _plain(value: Any) -> Any:
    """A mapping-like config (e.g. an OmegaConf ``DictConfig``) as plain dicts and lists."""
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):
        return {str(key): _plain(value[key]) for key in value.keys()}  # noqa: SIM118 - not always a dict
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return value
    return [_plain(item) for item in value]


def _load_official(path: Path, official_cfg: Mapping[str, Any] | None, trust_pickle: bool) -> GroupViT:
    import pickle

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds pickled objects besides tensors (the official checkpoints also store their OmegaConf "
            "config and optimizer state), which weights_only loading refuses. Pass trust_pickle=True only for a file "
            f"you trust: unpickling can run arbitrary code. ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} does not hold a checkpoint dict")
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: checkpoint['model'] is not a state dict")
    if official_cfg is None and checkpoint.get("config") is not None:
        # The official trainer saves its whole config; its `model` section names heads and temperature.
        try:
            model_cfg = _plain(checkpoint["config"]).get("model")
        except (AttributeError, TypeError, KeyError):
            model_cfg = None
        official_cfg = model_cfg if isinstance(model_cfg, Mapping) else None
    config, state_dict = convert_official_groupvit(state, official_cfg)
    model = GroupViT(config)
    model.load_state_dict(state_dict)
    model.identity = f"groupvit:{path.resolve()}"
    return model


def load_groupvit(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    official_cfg: Mapping[str, Any] | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> GroupViT:
    """Load a GroupViT in eval mode from the Hub, a folder, or an official ``.pth``.

    Args:
        source: ``"hf-hub:org/name"`` (``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``, in this
            module's format or transformers', e.g. ``hf-hub:nvidia/groupvit-gcc-yfcc``), a folder holding the same
            (e.g. written by :func:`save_groupvit` or ``GroupViTModel.save_pretrained``), or an official
            ``.pth``/``.pt`` checkpoint (see :func:`convert_official_groupvit`).
        device: Where to put the model.
        trust_pickle: Allow full unpickling of an official ``.pth`` (the released files hold an OmegaConf config
            besides tensors; loading is ``weights_only=True`` otherwise). Only for files you trust.
        official_cfg: The official ``model:`` config section for a ``.pth`` (default: the one stored in the
            checkpoint when it can be read, else the released models' defaults).
        revision: Hub revision (branch, tag or commit).
        cache_dir: Hub cache folder.
        local_files_only: Use the Hub cache only (no network).

    Raises:
        FileNotFoundError: A missing folder, file or weights file.
        ValueError: A pickled ``.pth`` without ``trust_pickle``.
        ConfigError: A checkpoint whose keys or shapes do not match its config.
    """
    text = str(source)
    if text.startswith("hf-hub:"):
        repo_id = text.removeprefix("hf-hub:")
        config_file, weights_file = _hub_files(repo_id, revision, cache_dir, local_files_only)
        model = _from_folder_files(config_file, weights_file, text)
    else:
        path = Path(source)
        if path.is_dir():
            if (path / "pgseg.json").is_file():
                raise ConfigError(
                    f"{path} holds a PGSeg model (pgseg.json), not a GroupViT: load it with "
                    "seg_models.pgseg.load_pgseg, or use --method pgseg"
                )
            if not (path / CONFIG_FILE_NAME).is_file():
                raise FileNotFoundError(f"{path} has no {CONFIG_FILE_NAME}; save the model with save_groupvit")
            model = _from_folder_files(path / CONFIG_FILE_NAME, _folder_weights(path), str(path.resolve()))
        elif path.is_file() and path.suffix in {".pth", ".pt"}:
            model = _load_official(path, official_cfg, trust_pickle)
        elif path.is_file():
            raise ValueError(f"{path}: expected a folder, an official .pth/.pt checkpoint or 'hf-hub:org/name'")
        else:
            raise FileNotFoundError(f"{source}: no such folder or file (use 'hf-hub:org/name' for the Hub)")
    return model.to(device).eval()
