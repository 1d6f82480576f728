"""Dense CLIP features: the MaskCLIP value path for open_clip ViTs and ModifiedResNets, at any input size.

MaskCLIP (Zhou, Loy & Dai, "Extract Free Dense Labels from CLIP", ECCV 2022) observes that CLIP's last attention
layer mixes the patch tokens into the class token, and that the *value* embedding of each token, sent through
the rest of the network, is already aligned with the text space at that location. The official code
(chongzhou96/MaskCLIP, ``mmseg/models/backbones/vit.py`` and ``decode_heads/maskclip_head.py``) therefore:

- ViT: replaces the last block's attention output by ``out_proj(v(ln_1(x)))`` (query/key skipped), keeps the
  block's residual and MLP, then applies the final LayerNorm and the visual projection to every patch token;
- ResNet: replaces the attention pool by its value and output projections applied as 1×1 convolutions at every
  location, without the positional embedding.

Everything here is a function of an unmodified open_clip vision tower: nothing is patched or mutated, so the
model's own ``encode_image`` is unchanged after dense extraction. Any input size is accepted: the ViT
positional embedding is interpolated bicubically from the trained grid (class token kept), the ResNet attention
pool's likewise for the global embedding.

Variants of the ViT path (``variant``):

- ``"maskclip"``: ``y = x + out_proj(v(ln_1 x))``, ``y = y + mlp(ln_2 y)``, then ``ln_post``, ``proj`` (official);
- ``"value"``: ``y = out_proj(v(ln_1 x))`` only, then ``ln_post``, ``proj`` (the paper's pure value embedding);
- ``"naive"``: the patch tokens of the unmodified last block, then ``ln_post``, ``proj`` (the baseline).

Contents, in order: helpers (positional embeddings, token embedding, the value branch); ViT features;
ModifiedResNet features; dispatchers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

__all__ = [
    "DENSE_VARIANTS",
    "DenseVariant",
    "dense_clip_features",
    "feature_stride",
    "global_clip_features",
    "interpolate_positional_embedding",
    "resnet_dense_features",
    "resnet_global_features",
    "vit_dense_features",
    "vit_global_features",
]

DenseVariant = Literal["maskclip", "value", "naive"]
DENSE_VARIANTS: tuple[DenseVariant, ...] = ("maskclip", "value", "naive")

# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def interpolate_positional_embedding(
    positional_embedding: Tensor,
    source_grid: tuple[int, int],
    target_grid: tuple[int, int],
    *,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Resize a ViT positional embedding to another patch grid (bicubic, ``align_corners=False``, no antialias).

    The prefix (class) token embeddings are kept as they are; the grid part is interpolated as an image, as in
    MaskCLIP's mmseg backbone. The trained grid is returned unchanged.

    Args:
        positional_embedding: ``[P + g0 * g1, C]`` with ``P = num_prefix_tokens``.
        source_grid: ``(g0, g1)``, the trained grid.
        target_grid: ``(h, w)``, the wanted grid.
        num_prefix_tokens: Leading non-spatial tokens.

    Returns:
        ``[P + h * w, C]``.
    """
    tokens, channels = positional_embedding.shape
    if tokens != num_prefix_tokens + source_grid[0] * source_grid[1]:
        raise ValueError(
            f"positional_embedding has {tokens} rows but a {source_grid} grid with {num_prefix_tokens} prefix "
            f"token(s) needs {num_prefix_tokens + source_grid[0] * source_grid[1]}"
        )
    if tuple(target_grid) == tuple(source_grid):
        return positional_embedding
    if min(target_grid) < 1:
        raise ValueError(f"target_grid must be at least 1x1, got {target_grid}")
    prefix, grid = positional_embedding[:num_prefix_tokens], positional_embedding[num_prefix_tokens:]
    grid = grid.reshape(1, source_grid[0], source_grid[1], channels).permute(0, 3, 1, 2)
    # Interpolate in float32: bicubic is not implemented for half precision on every device.
    resized = F.interpolate(grid.float(), size=target_grid, mode="bicubic", align_corners=False)
    resized = resized.to(grid.dtype).permute(0, 2, 3, 1).reshape(target_grid[0] * target_grid[1], channels)
    return torch.cat([prefix, resized], dim=0)


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] normalised pixels, got shape {tuple(images.shape)}")


def _vit_embed(visual: VisionTransformer, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Patch + class tokens with the interpolated positional embedding and ``ln_pre``: ``[B, 1 + h * w, C]``.

    Patch dropout is skipped on purpose: it is the identity in eval mode, and a dense map needs every patch.
    """
    _check_images(images)
    patch = _pair(visual.patch_size)
    if images.shape[-2] < patch[0] or images.shape[-1] < patch[1]:
        raise ValueError(f"images of size {tuple(images.shape[-2:])} are smaller than one {patch} patch")
    conv: nn.Conv2d = visual.conv1
    x = conv(images.to(conv.weight.dtype))
    grid = (int(x.shape[-2]), int(x.shape[-1]))
    x = x.flatten(2).transpose(1, 2)
    class_token = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([class_token, x], dim=1)
    positional = interpolate_positional_embedding(visual.positional_embedding, _pair(visual.grid_size), grid)
    x = x + positional.to(x.dtype)
    x = visual.ln_pre(x)
    return x, grid


def _sequence_first(blocks: nn.ModuleList) -> bool:
    """Whether the blocks expect ``[L, B, C]`` (older open_clip, or a transformer built with batch_first=False)."""
    attn = getattr(blocks[0], "attn", None)
    return isinstance(attn, nn.MultiheadAttention) and not attn.batch_first


def _run_blocks(blocks: nn.ModuleList, x: Tensor) -> Tensor:
    """Run ``[B, L, C]`` tokens through ``blocks`` in whatever layout they expect; returns ``[B, L, C]``."""
    if len(blocks) == 0:
        return x
    sequence_first = _sequence_first(blocks)
    if sequence_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    return x.transpose(0, 1) if sequence_first else x


def _submodule(parent: nn.Module, key: str | int) -> nn.Module:
    """``parent.key`` (or ``parent[key]``) as a module, with a clear error for unexpected block layouts."""
    if isinstance(key, int) and isinstance(parent, nn.ModuleList):
        child: object = parent[key]
    else:
        child = getattr(parent, str(key), None)
    if not isinstance(child, nn.Module):
        raise TypeError(
            f"{type(parent).__name__} has no submodule {key!r}; dense features expect open_clip's residual attention "
            "blocks (ln_1, attn, ls_1, ln_2, mlp, ls_2)"
        )
    return child


def _apply_optional(module: object, x: Tensor) -> Tensor:
    return module(x) if isinstance(module, nn.Module) else x


def _value_branch(block: nn.Module, normed: Tensor) -> Tensor:
    """The attention branch of ``block`` with attention replaced by the identity: ``out_proj(v(normed))``.

    Args:
        block: An open_clip ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) or
            ``CustomResidualAttentionBlock`` (open_clip ``Attention``; head scaling, inner norm and the block's
            post-attention norm are applied as the block would).
        normed: ``[B, L, C]`` tokens after ``ln_1``.

    Returns:
        ``[B, L, C]``, before the block's layer scale.
    """
    attn = _submodule(block, "attn")
    if isinstance(attn, nn.MultiheadAttention):
        width = attn.embed_dim
        value_weight = attn.in_proj_weight[2 * width :] if attn._qkv_same_embed_dim else attn.v_proj_weight
        if value_weight is None:
            raise TypeError("the last block's nn.MultiheadAttention has no value projection weight")
        in_proj_bias = getattr(attn, "in_proj_bias", None)  # None for bias=False
        value_bias = in_proj_bias[2 * width :] if isinstance(in_proj_bias, Tensor) else None
        values = F.linear(normed, value_weight, value_bias)
        return F.linear(values, attn.out_proj.weight, attn.out_proj.bias)
    in_proj_weight = getattr(attn, "in_proj_weight", None)
    out_proj = getattr(attn, "out_proj", None)
    if not isinstance(in_proj_weight, Tensor) or not isinstance(out_proj, nn.Linear):
        raise TypeError(
            f"cannot find the value projection of {type(attn).__name__} in the last block; dense features support "
            "open_clip's nn.MultiheadAttention and Attention blocks"
        )
    width = in_proj_weight.shape[1]
    in_proj_bias = getattr(attn, "in_proj_bias", None)
    custom_value_bias = in_proj_bias[2 * width :] if isinstance(in_proj_bias, Tensor) else None
    values = F.linear(normed, in_proj_weight[2 * width :], custom_value_bias)
    head_scale = getattr(attn, "head_scale", None)
    if isinstance(head_scale, Tensor):
        batch, length, _ = values.shape
        heads = head_scale.shape[0]
        values = (values.reshape(batch, length, heads, -1) * head_scale.reshape(1, 1, heads, 1)).reshape(
            batch, length, width
        )
    values = _apply_optional(getattr(attn, "ln_inner", None), values)
    values = out_proj(values)
    return _apply_optional(getattr(block, "ln_attn", None), values)


def _project_tokens(visual: VisionTransformer, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """``ln_post`` and ``proj`` on every ``[B, h * w, C]`` token, reshaped to ``[B, D, h, w]``."""
    x: Tensor = visual.ln_post(tokens)
    if visual.proj is not None:
        x = x @ visual.proj
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], grid[0], grid[1])


# ---------------------------------------------------------------------------------------------------------------
# ViT
# ---------------------------------------------------------------------------------------------------------------


def vit_dense_features(visual: VisionTransformer, images: Tensor, variant: DenseVariant = "maskclip") -> Tensor:
    """Dense features of an open_clip ``VisionTransformer`` (see the module docstring for the variants).

    ``ln_post`` is applied per token even for towers with ``final_ln_after_pool`` (where open_clip applies it
    after pooling); the attentional-pool (CoCa) towers have no per-patch path into the joint space and are refused.

    Args:
        visual: The vision tower (``model.visual``), not modified.
        images: ``[B, 3, H, W]`` normalised pixels, any size of at least one patch.
        variant: ``"maskclip"``, ``"value"`` or ``"naive"``.

    Returns:
        ``[B, D, H // p, W // p]`` in the joint embedding space, in the tower's dtype (``p``: patch size).
    """
    if variant not in DENSE_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(DENSE_VARIANTS)}, got {variant!r}")
    if visual.attn_pool is not None:
        raise NotImplementedError(
            "dense features are not defined for open_clip towers with an attentional pooler (CoCa-style): their "
            "tokens reach the joint space only through the pooler's queries"
        )
    x, grid = _vit_embed(visual, images)
    blocks: nn.ModuleList = visual.transformer.resblocks
    x = _run_blocks(blocks[:-1], x)
    last = _submodule(blocks, -1)
    ln_1, ln_2 = _submodule(last, "ln_1"), _submodule(last, "ln_2")
    ls_1, ls_2, mlp = _submodule(last, "ls_1"), _submodule(last, "ls_2"), _submodule(last, "mlp")
    if variant == "naive":
        y = _run_blocks(blocks[-1:], x)
    elif variant == "value":
        y = _value_branch(last, ln_1(x))
    else:
        y = x + ls_1(_value_branch(last, ln_1(x)))
        y = y + ls_2(mlp(ln_2(y)))
    return _project_tokens(visual, y[:, 1:], grid)


def vit_global_features(visual: VisionTransformer, images: Tensor) -> Tensor:
    """The image embedding of an open_clip ``VisionTransformer`` at any input size.

    The same computation as ``visual(images)`` (open_clip's ``encode_image``), with the positional embedding
    interpolated to the input's patch grid; at the training size the two are equal.

    Args:
        visual: The vision tower, not modified.
        images: ``[B, 3, H, W]`` normalised pixels.

    Returns:
        ``[B, D]`` (not L2-normalised).
    """
    x, _ = _vit_embed(visual, images)
    x = _run_blocks(visual.transformer.resblocks, x)
    if visual.attn_pool is not None:
        pooled: Tensor = visual._pool(x)[0]  # CoCa-style pooling: defer to open_clip's own code
    elif visual.final_ln_after_pool:
        pooled = visual.ln_post(_global_pool(x, visual.pool_type))
    else:
        pooled = _global_pool(visual.ln_post(x), visual.pool_type)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


def _global_pool(x: Tensor, pool_type: str) -> Tensor:
    if pool_type == "avg":
        return x[:, 1:].mean(dim=1)
    if pool_type == "tok":
        return x[:, 0]
    return x


# ---------------------------------------------------------------------------------------------------------------
# ModifiedResNet
# ---------------------------------------------------------------------------------------------------------------


def _resnet_trunk(visual: ModifiedResNet, images: Tensor) -> Tensor:
    _check_images(images)
    x: Tensor = visual.stem(images.to(visual.conv1.weight.dtype))
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def resnet_dense_features(visual: ModifiedResNet, images: Tensor) -> Tensor:
    """Dense features of an open_clip ``ModifiedResNet``: layer4, then the attention pool's ``v_proj`` and
    ``c_proj`` at every location (1×1 convolutions), no positional embedding (MaskCLIP, ReCo's DenseCLIP).

    Args:
        visual: The vision tower, not modified.
        images: ``[B, 3, H, W]`` normalised pixels.

    Returns:
        ``[B, D, h, w]`` with ``h, w`` the layer4 grid (about ``H / 32``, ``W / 32``).
    """
    x = _resnet_trunk(visual, images).permute(0, 2, 3, 1)
    pool = visual.attnpool
    x = F.linear(x, pool.v_proj.weight, pool.v_proj.bias)
    x = F.linear(x, pool.c_proj.weight, pool.c_proj.bias)
    return x.permute(0, 3, 1, 2).contiguous()


def resnet_global_features(visual: ModifiedResNet, images: Tensor) -> Tensor:
    """The image embedding of an open_clip ``ModifiedResNet`` at any input size.

    Open_clip's attention pool with its positional embedding interpolated (bicubic, mean token kept) to the
    layer4 grid; equal to ``visual(images)`` at the training size.

    Returns:
        ``[B, D]`` (not L2-normalised).
    """
    x = _resnet_trunk(visual, images)
    pool = visual.attnpool
    batch, channels, height, width = x.shape
    tokens = x.reshape(batch, channels, height * width).permute(2, 0, 1)  # (HW)BC
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    trained = pool.positional_embedding
    side = math.isqrt(trained.shape[0] - 1)
    positional = interpolate_positional_embedding(trained, (side, side), (height, width))
    tokens = tokens + positional[:, None, :].to(tokens.dtype)
    pooled, _ = F.multi_head_attention_forward(
        query=tokens[:1],
        key=tokens,
        value=tokens,
        embed_dim_to_check=channels,
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=pool.training,
        need_weights=False,
    )
    result: Tensor = pooled[0]
    return result


# ---------------------------------------------------------------------------------------------------------------
# Dispatchers
# ---------------------------------------------------------------------------------------------------------------


def dense_clip_features(visual: nn.Module, images: Tensor, variant: DenseVariant = "maskclip") -> Tensor:
    """Dense features ``[B, D, h, w]`` of any supported open_clip vision tower (ViT or ModifiedResNet).

    ``variant`` applies to ViTs; a ModifiedResNet has only the value path and accepts ``"maskclip"`` or
    ``"value"`` (the same thing there).
    """
    if isinstance(visual, VisionTransformer):
        return vit_dense_features(visual, images, variant)
    if isinstance(visual, ModifiedResNet):
        if variant == "naive":
            raise ValueError("variant 'naive' is defined for ViTs only; a ModifiedResNet has just the value path")
        if variant not in DENSE_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(DENSE_VARIANTS)}, got {variant!r}")
        return resnet_dense_features(visual, images)
    raise TypeError(
        f"dense CLIP features support open_clip VisionTransformer and ModifiedResNet towers, got "
        f"{type(visual).__name__} (timm-based towers are not supported)"
    )


def global_clip_features(visual: nn.Module, images: Tensor) -> Tensor:
    """Image embeddings ``[B, D]`` at any input size (other towers: their own forward, at their own size)."""
    if isinstance(visual, VisionTransformer):
        return vit_global_features(visual, images)
    if isinstance(visual, ModifiedResNet):
        return resnet_global_features(visual, images)
    features: Tensor = visual(images)
    return features


def feature_stride(visual: nn.Module) -> tuple[int, int]:
    """Pixels per dense-feature cell, ``(sy, sx)``: the patch size of a ViT, 32 for a ModifiedResNet."""
    if isinstance(visual, VisionTransformer):
        return _pair(visual.patch_size)
    if isinstance(visual, ModifiedResNet):
        return 32, 32
    raise TypeError(f"no dense feature stride for {type(visual).__name__}")
