"""ZUTIS's set criterion: Hungarian-matched dice + binary cross-entropy mask loss on every decoder layer.

Shin, Albanie and Xie, 2023, "Zero-shot Unsupervised Transfer Instance Segmentation" (ZUTIS), Sec. 3.3
("Instance segmentation"): the mask proposals of the query-based decoder are matched one-to-one to the pseudo-masks
of the image (bipartite matching) and trained with ``L_mask = L_dice + L_bce`` (equal weights); Sec. 4.1: the mask
loss is computed for the predictions of every transformer decoder layer, and the final loss is
``L = L_ce + λ_mask L_mask`` with ``λ_mask = 1`` (the paper numbers neither formula; Eqs. 4-6 are the semantic
probabilities and the inference-time classification). ``L_ce`` belongs to the semantic head, not to this module.

What the official code (``criterion.py``) decides that the paper does not, and this module follows:

* The dice loss has "+1 smoothing", ``1 - (2 Σ p t + 1) / (Σ p + Σ t + 1)``; the BCE is the mean over pixels.
* The matching cost is exactly ``dice + BCE`` of every (query, target) pair -- there is no class cost -- minimised by
  ``scipy.optimize.linear_sum_assignment`` (here :func:`seg_losses.matching.batched_hungarian_match`), per image and
  per decoder layer (each layer has its own matching).
* The loss is the **sum** of the matched costs over the instances of the image and over the layers, summed over the
  images and divided by the batch size (``reduction="official"``).
* The predicted masks are upsampled bilinearly (``align_corners=False``) to the target resolution (384 in training)
  before the cost and the loss.

Where this module differs from the official code (documented, deliberate):

* It takes **logits** ``q·V`` (the official decoder returns ``sigmoid(q·V)`` with an unnormalised ``V``, so the
  logits can be large). The BCE is computed from logits (``binary_cross_entropy_with_logits``), exact for any logit;
  the official ``F.binary_cross_entropy`` on probabilities clamps ``log`` at ``-100``, i.e. caps a pixel's BCE at 100.
  The logits are upsampled and then passed through the sigmoid; the official code upsamples the probabilities. The
  two agree exactly when no resizing is needed and differ slightly on boundaries otherwise.
* Empty target masks (instances fully occluded by later pastes in copy-paste) are **dropped before matching**. The
  official code keeps them in the target list (a query is spent on predicting nothing) unless *every* mask of the
  image is empty, in which case the image is skipped; here an image whose masks are all empty contributes nothing
  either, as does an image with no targets.
* ``reduction="mean"`` (not in the official code) averages over matched pairs and layers, so the loss scale does not
  grow with the number of instances or of decoder layers.

Cost: per image one ``[L, Q, T]`` cost (no gradient) and one host round trip for the ``L`` Hungarian solves; the
loss itself is recomputed on the ``min(Q, T)`` matched pairs only, with gradients to the logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_losses.matching import batched_hungarian_match, hungarian_match

__all__ = [
    "SetCriterionResult",
    "dice_loss",
    "match_masks",
    "pairwise_mask_cost",
    "set_criterion_loss",
    "sigmoid_bce_loss",
]

_REDUCTIONS = ("official", "mean")


@dataclass(frozen=True, eq=False)
class SetCriterionResult:
    """Output of :func:`set_criterion_loss`.

    Attributes:
        loss: Scalar float32 mask loss, differentiable w.r.t. the mask logits. ``reduction="official"``: the sum of
            the matched pair costs over images, instances and layers, divided by the batch size ``B``
            (``== sum(per_layer)``); ``reduction="mean"``: that sum divided by the number of matched pairs over all
            layers (``== mean(per_layer)``). ``0.0`` (still attached to the graph, zero gradient) when no image has
            a non-empty target.
        per_layer: One float per decoder layer, in the order given: the layer's matched costs summed over the batch
            and divided by ``B`` (official) or averaged over the layer's matched pairs (mean).
        num_targets: Number of non-empty target masks in the batch (after resizing; counted once, not per layer).
            Each layer matches ``Σ_b min(Q, T_b)`` pairs.
        indices: ``indices[layer][image] = (pred_idx, target_idx)``, two int64 tensors of length ``min(Q, T_b)`` on
            the logits' device, ``pred_idx`` ascending; ``target_idx`` indexes the image's **original** target
            list (empty masks included), so ``targets[image][target_idx[k]]`` is the mask matched to query
            ``pred_idx[k]``. Empty tensors for an image without (non-empty) targets.
    """

    loss: Tensor
    per_layer: tuple[float, ...]
    num_targets: int
    indices: tuple[tuple[tuple[Tensor, Tensor], ...], ...]


# --------------------------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------------------------


def _check_logits_2d(name: str, logits: Tensor) -> None:
    if logits.ndim != 2 or logits.shape[1] < 1 or not logits.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point [N, P] tensor of mask logits with P >= 1 pixels (flatten H x W), got "
            f"shape {tuple(logits.shape)} and dtype {logits.dtype}"
        )


def _check_targets_2d(name: str, targets: Tensor, pixels: int, logits_name: str) -> None:
    if targets.ndim != 2 or targets.shape[1] != pixels:
        raise ValueError(
            f"{name} must be a [T, P] tensor of masks with the P = {pixels} pixels of {logits_name}, got shape "
            f"{tuple(targets.shape)}; flatten each mask to P pixels at the logits' resolution"
        )
    if targets.is_complex():
        raise ValueError(f"{name} must be a bool or real tensor of 0/1 masks, got dtype {targets.dtype}")


def _check_smooth(smooth: float) -> float:
    if not (math.isfinite(float(smooth)) and smooth >= 0):
        raise ValueError(f"smooth must be a finite float >= 0 (official ZUTIS: 1.0), got {smooth!r}")
    return float(smooth)


# --------------------------------------------------------------------------------------------------------------------
# Per-mask losses and the pairwise cost
# --------------------------------------------------------------------------------------------------------------------


def _dice(logits: Tensor, targets: Tensor, smooth: float) -> Tensor:
    """Row-wise dice loss of float32 logits and float32 targets of the same shape ``[..., P]``."""
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(dim=-1) + smooth
    denominator = probs.sum(dim=-1) + targets.sum(dim=-1) + smooth
    return 1.0 - numerator / denominator


def _bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Row-wise mean BCE of float32 logits and float32 targets of the same shape ``[..., P]``."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=-1)


def _pairwise_cost(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """``[..., Q, T]`` dice + mean BCE of every row of float32 ``logits [..., Q, P]`` and ``targets [T, P]``.

    The BCE uses ``BCE(x, t) = softplus(x) - x t`` per pixel, so its mean over pixels is
    ``(Σ softplus(x) - x·t) / P``: one matrix product instead of a ``[Q, T, P]`` tensor.
    """
    pixels = logits.shape[-1]
    targets_t = targets.transpose(0, 1)
    probs = logits.sigmoid()
    numerator = 2.0 * (probs @ targets_t) + smooth
    denominator = probs.sum(dim=-1).unsqueeze(-1) + targets.sum(dim=-1) + smooth
    dice = 1.0 - numerator / denominator
    bce = (F.softplus(logits).sum(dim=-1).unsqueeze(-1) - logits @ targets_t) / pixels
    return dice + bce


def dice_loss(pred_logits: Tensor, target: Tensor, *, smooth: float = 1.0) -> Tensor:
    """Dice loss of each predicted mask against its target, with additive smoothing (official: "+1").

    ``1 - (2 Σ_p σ(x_p) t_p + smooth) / (Σ_p σ(x_p) + Σ_p t_p + smooth)`` per row. Computed in float32 with autocast
    disabled.

    Args:
        pred_logits: ``[N, P]`` mask logits (``P`` flattened pixels); any float dtype.
        target: ``[N, P]`` target masks, bool or float in ``[0, 1]``.
        smooth: Additive smoothing of numerator and denominator (official ZUTIS: 1.0); ``>= 0``.

    Returns:
        ``[N]`` float32 dice losses in ``[0, 1)`` (for binary targets), differentiable w.r.t. ``pred_logits``.

    Raises:
        ValueError: If the shapes differ or are not ``[N, P]`` with ``P >= 1``, or ``smooth`` is negative or not
            finite.
    """
    _check_logits_2d("pred_logits", pred_logits)
    if target.shape != pred_logits.shape:
        raise ValueError(
            f"target must have the shape of pred_logits {tuple(pred_logits.shape)} (row i is the target of "
            f"prediction i), got {tuple(target.shape)}"
        )
    smooth = _check_smooth(smooth)
    with torch.autocast(device_type=pred_logits.device.type, enabled=False):
        return _dice(pred_logits.float(), target.to(device=pred_logits.device, dtype=torch.float32), smooth)


def sigmoid_bce_loss(pred_logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of each predicted mask against its target, averaged over the pixels.

    ``-(1/P) Σ_p [t_p log σ(x_p) + (1 - t_p) log(1 - σ(x_p))]`` per row, computed from the logits (numerically
    stable for any logit; the official code's probability-space BCE caps a pixel's term at 100). Float32, autocast
    disabled.

    Args:
        pred_logits: ``[N, P]`` mask logits; any float dtype.
        target: ``[N, P]`` target masks, bool or float in ``[0, 1]``.

    Returns:
        ``[N]`` float32 mean BCE per mask, differentiable w.r.t. ``pred_logits``.

    Raises:
        ValueError: If the shapes differ or are not ``[N, P]`` with ``P >= 1``.
    """
    _check_logits_2d("pred_logits", pred_logits)
    if target.shape != pred_logits.shape:
        raise ValueError(
            f"target must have the shape of pred_logits {tuple(pred_logits.shape)} (row i is the target of "
            f"prediction i), got {tuple(target.shape)}"
        )
    with torch.autocast(device_type=pred_logits.device.type, enabled=False):
        return _bce(pred_logits.float(), target.to(device=pred_logits.device, dtype=torch.float32))


def pairwise_mask_cost(pred_logits: Tensor, targets: Tensor) -> Tensor:
    """Matching cost of every prediction/target pair: dice loss (+1 smoothing) + mean BCE, no class cost.

    ``cost[q, t] = dice_loss(x_q, m_t) + sigmoid_bce_loss(x_q, m_t)``, vectorised (two matrix products, no
    ``[Q, T, P]`` tensor). This is the official ZUTIS cost, and the official loss of a matched pair is the same
    expression. Float32, autocast disabled; differentiable (detach it, or call it under ``torch.no_grad()``, when it
    only feeds the matching).

    Args:
        pred_logits: ``[Q, P]`` mask logits of the ``Q`` queries (``P`` flattened pixels).
        targets: ``[T, P]`` target masks (bool or float in ``[0, 1]``) at the same resolution; ``T = 0`` is allowed.

    Returns:
        ``[Q, T]`` float32 cost matrix.

    Raises:
        ValueError: If ``pred_logits`` is not ``[Q, P]`` with ``P >= 1`` or ``targets`` is not ``[T, P]``.
    """
    _check_logits_2d("pred_logits", pred_logits)
    _check_targets_2d("targets", targets, pred_logits.shape[1], "pred_logits")
    with torch.autocast(device_type=pred_logits.device.type, enabled=False):
        return _pairwise_cost(pred_logits.float(), targets.to(device=pred_logits.device, dtype=torch.float32))


def match_masks(pred_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """One-to-one matching of queries to targets minimising the total :func:`pairwise_mask_cost`.

    Runs without gradient (scipy's Hungarian solver via :func:`seg_losses.matching.hungarian_match`).
    ``K = min(Q, T)`` pairs: every target is matched when ``T <= Q`` (the usual case, 100 queries), otherwise the
    ``T - Q`` targets left over are unmatched.

    Args:
        pred_logits: ``[Q, P]`` mask logits.
        targets: ``[T, P]`` target masks (bool or float in ``[0, 1]``).

    Returns:
        ``(pred_idx, target_idx)``, two int64 tensors of length ``min(Q, T)`` on ``pred_logits``' device with
        ``pred_idx`` ascending: query ``pred_idx[k]`` is matched to target ``target_idx[k]``.

    Raises:
        ValueError: On badly shaped inputs, or when ``pred_logits`` holds NaN/infinite values that make the cost
            non-finite.
    """
    with torch.no_grad():
        cost = pairwise_mask_cost(pred_logits, targets)
    try:
        return hungarian_match(cost, maximize=False)
    except ValueError as error:
        raise ValueError(
            f"pred_logits produced a non-finite matching cost ({error}); check the mask logits for NaN/inf"
        ) from error


# --------------------------------------------------------------------------------------------------------------------
# The set criterion
# --------------------------------------------------------------------------------------------------------------------


def _check_layers(layer_mask_logits: object) -> Tensor:
    """Validate the per-layer logits and stack them to ``[B, L, Q, h, w]`` float32."""
    if (
        isinstance(layer_mask_logits, Tensor)
        or not isinstance(layer_mask_logits, Sequence)
        or len(layer_mask_logits) == 0
    ):
        raise ValueError(
            "layer_mask_logits must be a non-empty sequence (list/tuple) of [B, Q, H, W] mask logits, one per "
            "decoder layer; wrap a single layer's tensor in a list"
        )
    layers: list[Tensor] = []
    for index, logits in enumerate(layer_mask_logits):
        if not isinstance(logits, Tensor) or logits.ndim != 4 or not logits.is_floating_point():
            raise ValueError(
                f"layer_mask_logits[{index}] must be a floating-point [B, Q, H, W] tensor of mask logits, got "
                f"{_describe(logits)}"
            )
        first = layers[0] if layers else logits
        if logits.shape != first.shape or logits.device != first.device:
            raise ValueError(
                f"layer_mask_logits[{index}] must have the shape and device of layer_mask_logits[0] "
                f"({tuple(first.shape)} on {first.device}), got {tuple(logits.shape)} on {logits.device}"
            )
        if min(logits.shape) < 1:
            raise ValueError(f"layer_mask_logits[{index}] must have B, Q, H, W >= 1, got shape {tuple(logits.shape)}")
        layers.append(logits)
    return torch.stack([logits.float() for logits in layers], dim=1)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _check_targets(targets: object, batch: int) -> list[Tensor]:
    """Validate the per-image target stacks and return them as a list."""
    if isinstance(targets, Tensor) or not isinstance(targets, Sequence) or len(targets) != batch:
        got = f"{len(targets)} entries" if isinstance(targets, Sequence) else _describe(targets)
        raise ValueError(
            f"targets must be a sequence (list/tuple) of B = {batch} tensors (one [T_b, H, W] bool stack of instance "
            f"masks per image, T_b may differ and be 0), got {got}"
        )
    checked: list[Tensor] = []
    for index, masks in enumerate(targets):
        if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.dtype != torch.bool:
            raise ValueError(
                f"targets[{index}] must be a bool [T, H, W] tensor of instance masks (T may be 0; cast 0/1 masks "
                f"with `masks > 0`), got {_describe(masks)}"
            )
        if masks.shape[1] < 1 or masks.shape[2] < 1:
            raise ValueError(f"targets[{index}] must have H, W >= 1, got shape {tuple(masks.shape)}")
        checked.append(masks)
    return checked


def _check_size(target_size: object) -> tuple[int, int] | None:
    if target_size is None:
        return None
    if (
        isinstance(target_size, tuple | list)
        and len(target_size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in target_size)
    ):
        return int(target_size[0]), int(target_size[1])
    raise ValueError(
        f"target_size must be None or a (height, width) pair of positive ints (official ZUTIS: (384, 384)), "
        f"got {target_size!r}"
    )


def set_criterion_loss(
    layer_mask_logits: Sequence[Tensor],
    targets: Sequence[Tensor],
    *,
    target_size: tuple[int, int] | None = None,
    reduction: Literal["official", "mean"] = "official",
) -> SetCriterionResult:
    """ZUTIS's mask loss ``L_mask`` (Sec. 3.3, Sec. 4.1): Hungarian-matched dice + BCE on every decoder layer.

    For every decoder layer ``l`` and image ``b``: the predicted masks are resized bilinearly
    (``align_corners=False``) to the target resolution, the ``[Q, T_b]`` cost ``dice + BCE``
    (:func:`pairwise_mask_cost`) is minimised by the Hungarian algorithm (no gradient), and the cost of each
    matched pair, ``c_{l,b,k} = dice(x_q, m_t) + BCE(x_q, m_t)``, is recomputed with gradients. Then

    * ``reduction="official"`` (default, the official ``criterion.py``): ``L = (1/B) Σ_l Σ_b Σ_k c_{l,b,k}`` -- a
      *sum* over instances and layers, so its scale grows with the number of instances (up to 10 pasted images)
      and of layers (6);
    * ``reduction="mean"``: ``L = Σ_{l,b,k} c_{l,b,k} / (L · Σ_b min(Q, T_b))``, the mean over matched pairs and
      layers: the average cost of one matched pair, on the same scale whatever the batch composition.

    Target masks that are empty (after resizing) are dropped before matching: in copy-paste an instance can be
    fully occluded by later pastes (the official code keeps such masks unless all masks of the image are empty).
    Images without (non-empty) targets contribute nothing; they still count in ``B`` for the official reduction,
    as in the official code. When the whole batch has no target the loss is a zero attached to the logits (its
    gradient is zero, ``backward()`` works). With ``T_b > Q`` only ``Q`` targets are matched.

    Everything is computed in float32 with autocast disabled (the sigmoid, the dice ratio and the BCE are
    precision-sensitive under bf16/fp16).

    Args:
        layer_mask_logits: One ``[B, Q, h, w]`` tensor of mask **logits** per decoder layer (official: all 6 layers),
            all of the same shape and device; the logits are ``q·V`` before the sigmoid (the official decoder
            applies the sigmoid itself; pass the pre-sigmoid values here).
        targets: ``B`` bool tensors ``[T_b, H_b, W_b]`` of instance (pseudo-)masks; ``T_b`` may differ per image
            and be 0; moved to the logits' device.
        target_size: ``(H, W)`` at which the loss is computed (official: the 384 crop). ``None``: each image's target
            resolution ``(H_b, W_b)``. Otherwise targets are resized to it by nearest neighbour and predictions
            bilinearly.
        reduction: ``"official"`` (default) or ``"mean"``, see above.

    Returns:
        A :class:`SetCriterionResult` (loss, per-layer values, number of targets, matched indices).

    Raises:
        ValueError: If ``layer_mask_logits`` is empty or its tensors are not ``[B, Q, h, w]`` floats of one shape,
            ``targets`` does not hold ``B`` bool ``[T, H, W]`` tensors, ``target_size`` is not a pair of positive
            ints, ``reduction`` is unknown, or the logits are NaN/infinite (non-finite matching cost).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    size = _check_size(target_size)
    stacked = _check_layers(layer_mask_logits)  # [B, L, Q, h, w], float32
    batch, num_layers = stacked.shape[:2]
    target_list = _check_targets(targets, batch)
    device = stacked.device
    with torch.autocast(device_type=device.type, enabled=False):
        layer_sums: list[Tensor] = []  # one [L] tensor per image with matched pairs
        indices: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(num_layers)]
        empty_index = torch.zeros(0, dtype=torch.int64, device=device)
        num_targets = 0
        num_pairs = 0
        for image, image_masks in enumerate(target_list):
            masks = image_masks.to(device)
            if size is not None and tuple(masks.shape[-2:]) != size and masks.shape[0] > 0:
                masks = F.interpolate(masks[None].float(), size=size, mode="nearest")[0] > 0.5
            height, width = size if size is not None else (int(masks.shape[1]), int(masks.shape[2]))
            kept = masks.flatten(1).any(dim=1).nonzero().flatten()  # original indices of non-empty masks
            if kept.numel() == 0:
                for layer in range(num_layers):
                    indices[layer].append((empty_index, empty_index))
                continue
            flat_targets = masks[kept].flatten(1).float()  # [T, P]

            logits = stacked[image]  # [L, Q, h, w]
            if tuple(logits.shape[-2:]) != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            logits = logits.flatten(2)  # [L, Q, P]

            with torch.no_grad():
                cost = _pairwise_cost(logits, flat_targets)  # [L, Q, T]
            try:
                rows, cols = batched_hungarian_match(cost, maximize=False)  # [L, K] each
            except ValueError as error:
                raise ValueError(
                    f"layer_mask_logits produced a non-finite matching cost for image {image} ({error}); check the "
                    "mask logits for NaN/inf"
                ) from error

            layer_index = torch.arange(num_layers, device=device).unsqueeze(1).expand_as(rows)
            matched_logits = logits[layer_index, rows]  # [L, K, P]
            matched_targets = flat_targets[cols]  # [L, K, P]
            pair_costs = _dice(matched_logits, matched_targets, 1.0) + _bce(matched_logits, matched_targets)
            layer_sums.append(pair_costs.sum(dim=1))

            num_targets += int(kept.numel())
            num_pairs += int(rows.shape[1])
            original_cols = kept[cols]
            for layer in range(num_layers):
                indices[layer].append((rows[layer], original_cols[layer]))

        if layer_sums:
            per_layer_sum = torch.stack(layer_sums).sum(dim=0)  # [L]
        else:
            # No pair anywhere: a zero still attached to the graph (zero gradient), so backward() works.
            per_layer_sum = stacked.flatten()[:0].sum().expand(num_layers)
        if reduction == "official":
            per_layer = per_layer_sum / batch
            loss = per_layer.sum()
        else:
            per_layer = per_layer_sum / max(num_pairs, 1)
            loss = per_layer.mean()

    return SetCriterionResult(
        loss=loss,
        per_layer=tuple(float(value) for value in per_layer.detach().tolist()),
        num_targets=num_targets,
        indices=tuple(tuple(per_image) for per_image in indices),
    )
