"""ReCLIP++'s contrastive rectification loss (Eqs. 5 and 7) and its distillation losses (Eqs. 8-10).

Wang et al., "ReCLIP++: Learn to Rectify the Bias of CLIP for Unsupervised Semantic Segmentation" (TPAMI), Secs.
III-C to III-E; equation numbers are the paper's.

- :func:`gumbel_masks`: Eq. 5, ``M̂ = Gumbel-Softmax(M_o, τ_1)`` over the class channel, straight-through when hard
  (forward one-hot, backward the gradient of the soft sample), with the noise drawn from an explicit
  ``torch.Generator`` so that a seeded run is reproducible.
- :func:`masked_pooling`: the class-level masked features ``Z_g`` of Sec. III-D ("apply ``M̂`` to ``Z`` and perform a
  global average pooling"), as a masked average (``normalize="area"``, the reading used here) or divided by the whole
  map's ``h·w`` (``normalize="image"``, the official code's ``AdaptiveAvgPool2d`` over the masked map).
- :func:`rectification_loss`: Eq. 7, the cross-entropy over all ``C`` classes of ``S_{k,·}/τ`` with target ``k``,
  averaged over the hypothesis classes ``k ∈ H`` of each image (the multi-label hypotheses of Eq. 6 come from
  ``seg_retrieval.hypotheses``) and over the images that have a hypothesis.
- :func:`mask_guided_loss` (Eq. 8), :func:`feature_guided_loss` (Eq. 9) and :func:`distillation_loss` (Eq. 10,
  ``L_mask + α L_feat + β L_text`` with ``L_text`` the rectification loss on the student's features and masks).

Where the official code (dogehhh/ReCLIP) differs from the paper, the paper is the default and the official behaviour
an option (see docs/reference/official-implementations.md §3):

============================  ===========================================  =========================================
choice                        paper (default)                              official code (option)
============================  ===========================================  =========================================
pooling of ``Z_g``            masked average (``pooling="area"``)          ``÷ h·w`` (``pooling="image"``)
``S_{k,j}``                   cosine (``similarity="cosine"``)             pooled vector not re-normalised
                                                                           (``similarity="dot"``)
temperature                   a constant ``τ`` (value not stated;          CLIP's ``logit_scale`` = 100, i.e.
                              default 0.01)                                ``tau=0.01`` or ``logit_scale=100.0``
Gumbel input                  ``M_o`` with ``τ_1`` (default 1)             the caller multiplies ``M_o`` by 100
                                                                           (ReCLIP v1: 1000), ``gumbel_tau=1``
============================  ===========================================  =========================================

Scaling the logits is not the same as lowering ``τ_1``: ``softmax((100·M + g)/1)`` keeps the Gumbel noise ``g`` at
its scale while ``softmax((M + g)/0.01)`` multiplies it too, so the official sampling is reproduced by scaling the
logits, not by the temperature.

Every loss is computed in float32 with autocast disabled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_TAU",
    "DistillationLosses",
    "distillation_loss",
    "feature_guided_loss",
    "gumbel_masks",
    "mask_guided_loss",
    "masked_pooling",
    "rectification_loss",
]

DEFAULT_TAU = 0.01
"""Default ``τ`` of Eq. 7: the paper calls it "a constant" without a value; the official code's CLIP logit scale 100
is ``1/τ`` with ``τ = 0.01``."""

Pooling = Literal["area", "image"]
Similarity = Literal["cosine", "dot"]

_POOLINGS = ("area", "image")
_SIMILARITIES = ("cosine", "dot")


# --- validation helpers ------------------------------------------------------------------------------------------


def _check_float(name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d tensor {layout}, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}; pass {name}.float()")


def _check_positive(name: str, value: float, meaning: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite float ({meaning}), got {value!r}")
    return number


def _check_choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def _safe_unit(vectors: Tensor) -> Tensor:
    """L2-normalise the last dim; a zero vector stays zero, with a finite gradient (the norm is replaced by 1).

    ``F.normalize`` divides by ``max(‖x‖, 1e-12)``, so at ``x = 0`` (the pooled feature of an empty mask) its gradient
    is ``1e12`` times the upstream one; dividing by 1 there keeps the gradient of the empty class bounded.
    """
    norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    return vectors / torch.where(norm > 0, norm, torch.ones_like(norm))


def _zero_like_graph(*tensors: Tensor) -> Tensor:
    """A float32 scalar zero attached to the graph of ``tensors`` (zero gradient), for empty losses."""
    total = torch.zeros((), dtype=torch.float32, device=tensors[0].device)
    for tensor in tensors:
        total = total + tensor.float().sum() * 0.0
    return total


# --- Eq. 5: Gumbel-softmax masks ---------------------------------------------------------------------------------


def gumbel_masks(
    logits: Tensor, tau: float = 1.0, *, hard: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Per-pixel class masks by Gumbel-softmax over the class channel (Eq. 5, ``M̂ = Gumbel-Softmax(M_o, τ_1)``).

    ``y = softmax((logits + g) / tau)`` over dim 1, with ``g = -log(-log(U))`` and ``U = torch.rand(logits.shape,
    generator=generator)`` drawn in float32 on the generator's device (the default generator on ``logits``' device
    when ``generator`` is ``None``) and clamped to ``[finfo.tiny, 1)``. With ``hard=True`` the forward value is the
    one-hot of ``argmax(logits + g)`` (independent of ``tau``) and the backward pass is the gradient of the soft ``y``
    (straight-through: ``one_hot - y.detach() + y``). ``F.gumbel_softmax`` does the same but takes no generator.

    Args:
        logits: ``[B, C, h, w]`` class logits (ReCLIP++'s decoder output ``M_o``). The official code multiplies them
            by 100 (ReCLIP v1: 1000) before sampling; do that here, before the call, to reproduce it.
        tau: Gumbel-softmax temperature ``τ_1`` (> 0; default 1, the official value).
        hard: Straight-through one-hot masks (default, as in the official code) or the soft sample.
        generator: Random generator of the noise (its device is where the noise is drawn; it is then moved to
            ``logits``' device), or ``None`` for torch's default generator.

    Returns:
        ``[B, C, h, w]`` float32 masks; each pixel's values sum to 1 over the classes (one-hot when ``hard``).
    """
    _check_float("logits", logits, 4, "[B, C, h, w] of class logits")
    temperature = _check_positive("tau", tau, "the Gumbel-softmax temperature τ_1, e.g. 1.0")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.float()
        noise_device = generator.device if generator is not None else x.device
        uniform = torch.rand(x.shape, generator=generator, device=noise_device, dtype=torch.float32)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
        perturbed = x + gumbel.to(x.device)
        soft = (perturbed / temperature).softmax(dim=1)
        if not hard:
            return soft
        index = perturbed.detach().argmax(dim=1, keepdim=True)
        one_hot = torch.zeros_like(soft).scatter_(1, index, 1.0)
        return one_hot - soft.detach() + soft


# --- class-level masked features ---------------------------------------------------------------------------------


def masked_pooling(features: Tensor, masks: Tensor, *, normalize: Pooling = "area") -> Tensor:
    """Class-level masked features ``Z_g``: each class's mask applied to the feature map, then pooled (Sec. III-D).

    ``Z_g[b, c] = Σ_p masks[b, c, p] · features[b, :, p] / n`` over the pixels ``p``, with

    - ``normalize="area"`` (default): ``n = Σ_p masks[b, c, p]``, the mask area, i.e. the masked average of the
      features; the paper's "apply ``M̂`` to ``Z`` and perform a global average pooling" read as an average over the
      class's region. A class with an empty mask (area 0) pools to the zero vector, never NaN (its denominator is
      replaced by 1, so its gradient w.r.t. the mask is the features themselves);
    - ``normalize="image"``: ``n = h·w``, the official code's ``AdaptiveAvgPool2d(1)`` over the whole masked map, so
      the pooled vector shrinks with the class's area.

    Args:
        features: ``[B, D, h, w]`` feature map ``Z``.
        masks: ``[B, C, h, w]`` masks at the feature resolution (from :func:`gumbel_masks`; non-negative values).
        normalize: ``"area"`` or ``"image"``, see above.

    Returns:
        ``[B, C, D]`` float32 pooled features, differentiable w.r.t. features and masks.
    """
    _check_float("features", features, 4, "[B, D, h, w] feature map")
    _check_float("masks", masks, 4, "[B, C, h, w] class masks")
    _check_choice("normalize", normalize, _POOLINGS)
    if features.shape[0] != masks.shape[0] or features.shape[2:] != masks.shape[2:]:
        raise ValueError(
            f"features [B, D, h, w] and masks [B, C, h, w] must share B, h and w, got {tuple(features.shape)} and "
            f"{tuple(masks.shape)}; resize the masks (or logits) to the feature grid first"
        )
    with torch.autocast(device_type=features.device.type, enabled=False):
        weighted = torch.einsum("bchw,bdhw->bcd", masks.float(), features.float())
        if normalize == "image":
            return weighted / float(features.shape[2] * features.shape[3])
        area = masks.float().sum(dim=(2, 3)).unsqueeze(-1)  # [B, C, 1]
        return weighted / torch.where(area > 0, area, torch.ones_like(area))


# --- Eq. 7: the rectification (contrastive) loss -----------------------------------------------------------------


def _scale_of(tau: float | None, logit_scale: Tensor | float | None) -> Tensor | float:
    if logit_scale is None:
        return 1.0 / _check_positive("tau", DEFAULT_TAU if tau is None else tau, "the temperature of Eq. 7, e.g. 0.01")
    if tau is not None:
        raise ValueError(
            f"pass either tau (a temperature, S / tau) or logit_scale (S * scale), not both; got tau={tau!r} and "
            f"logit_scale={logit_scale!r}"
        )
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(
                f"logit_scale as a tensor is the log of the scale (CLIP's parameter) and must have one element, got "
                f"shape {tuple(logit_scale.shape)}"
            )
        return logit_scale.float().reshape(()).exp()
    return _check_positive("logit_scale", logit_scale, "the inverse temperature itself, e.g. 100.0 for CLIP")


def _check_text(text: Tensor, classes: int, dim: int) -> None:
    _check_float("text", text, 2, "[C, D] of class text embeddings")
    if text.shape != (classes, dim):
        raise ValueError(
            f"text must be [C, D] = [{classes}, {dim}] (C from the logits, D from the features), got "
            f"{tuple(text.shape)}"
        )


def _check_hypotheses(hypotheses: Tensor, batch: int, classes: int) -> None:
    if hypotheses.dtype != torch.bool or hypotheses.shape != (batch, classes):
        raise ValueError(
            f"hypotheses must be a [B, C] = [{batch}, {classes}] bool tensor (Hypotheses.labels from "
            f"seg_retrieval.hypotheses; cast a 0/1 mask with .bool()), got shape {tuple(hypotheses.shape)} of "
            f"{hypotheses.dtype}"
        )


def rectification_loss(
    features: Tensor,
    logits: Tensor,
    text: Tensor,
    hypotheses: Tensor,
    *,
    tau: float | None = None,
    logit_scale: Tensor | float | None = None,
    gumbel_tau: float = 1.0,
    generator: torch.Generator | None = None,
    pooling: Pooling = "area",
    similarity: Similarity = "cosine",
) -> Tensor:
    """The contrastive rectification loss (Eq. 7) on Gumbel-softmax masks of the logits.

    ``M̂ = gumbel_masks(logits, gumbel_tau)`` (hard, straight-through), ``Z_g = masked_pooling(features, M̂)`` and
    ``S_{k,j}`` the similarity of ``Z_g[k]`` with ``text[j]``; for image ``b`` with hypotheses ``H_b``::

        L_b = -1/|H_b| Σ_{k ∈ H_b} log softmax_j(S_{k,j} / τ)[k]
        L   = mean of L_b over the images with |H_b| >= 1

    An image without hypotheses contributes nothing; when no image has any, the loss is a zero attached to the graph
    (zero gradient), not NaN.

    Args:
        features: ``[B, D, h, w]`` visual features ``Z`` (rectification: CLIP's dense features; distillation: the
            student's).
        logits: ``[B, C, h, w]`` logits ``M_o`` on the same grid (rectification: the mask decoder's output;
            distillation: the student's ``M^D``). The gradient of the loss reaches them through the
            straight-through masks.
        text: ``[C, D]`` Query text features ``W_q`` (L2-normalised here in both similarity modes, as the official
            prompt-ensembled embeddings already are).
        hypotheses: ``[B, C]`` bool, the multi-label hypotheses ``H`` of Eq. 6 (``Hypotheses.labels``).
        tau: Temperature ``τ`` of Eq. 7 (``S / τ``); ``None`` means :data:`DEFAULT_TAU` (0.01) unless
            ``logit_scale`` is given.
        logit_scale: Alternative to ``tau``: multiply ``S`` by it instead. A tensor is the log of the scale (CLIP's
            ``logit_scale`` parameter, exp'ed here, gradient kept), a float the scale itself (100.0 = ``tau=0.01``).
            Passing both ``tau`` and ``logit_scale`` is an error.
        gumbel_tau: ``τ_1`` of Eq. 5 (default 1).
        generator: Random generator of the Gumbel noise (see :func:`gumbel_masks`).
        pooling: ``"area"`` (masked average, paper) or ``"image"`` (``÷ h·w``, official), see :func:`masked_pooling`.
        similarity: ``"cosine"`` (paper: ``Z_g`` and ``text`` normalised; an empty class's zero vector has
            similarity 0 with every class) or ``"dot"`` (official: ``Z_g`` not re-normalised, ``text`` normalised).

    Returns:
        The scalar float32 loss, differentiable w.r.t. features, logits (and a tensor ``logit_scale``).
    """
    _check_float("features", features, 4, "[B, D, h, w] feature map")
    _check_float("logits", logits, 4, "[B, C, h, w] class logits")
    if features.shape[0] != logits.shape[0] or features.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"features [B, D, h, w] and logits [B, C, h, w] must share B, h and w, got {tuple(features.shape)} and "
            f"{tuple(logits.shape)}; resize the logits to the feature grid first"
        )
    batch, classes = logits.shape[:2]
    _check_text(text, classes, features.shape[1])
    _check_hypotheses(hypotheses, batch, classes)
    _check_choice("pooling", pooling, _POOLINGS)
    _check_choice("similarity", similarity, _SIMILARITIES)
    scale = _scale_of(tau, logit_scale)
    masks = gumbel_masks(logits, gumbel_tau, hard=True, generator=generator)
    with torch.autocast(device_type=features.device.type, enabled=False):
        pooled = masked_pooling(features, masks, normalize=pooling)  # [B, C, D]
        if similarity == "cosine":
            pooled = _safe_unit(pooled)
        text_unit = _safe_unit(text.float().to(pooled.device))
        sims = torch.einsum("bkd,jd->bkj", pooled, text_unit)  # S_{k,j} per image
        log_probs = (sims * scale).log_softmax(dim=-1)
        per_class = -torch.diagonal(log_probs, dim1=1, dim2=2)  # [B, C]: CE of row k with target k
        chosen = hypotheses.to(per_class.device).float()
        per_image_count = chosen.sum(dim=1, keepdim=True)
        images_with_hypotheses = (per_image_count > 0).sum().clamp_min(1)
        weights = chosen / per_image_count.clamp_min(1) / images_with_hypotheses
        return (per_class * weights).sum()


# --- Eqs. 8-10: distillation -------------------------------------------------------------------------------------


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    values = list(size)
    if len(values) != 2 or not all(int(v) == v and v > 0 for v in values):
        raise ValueError(f"size must be (H, W), two positive ints (the image size), got {size!r}")
    return int(values[0]), int(values[1])


def mask_guided_loss(student_logits: Tensor, pseudo_labels: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Mask-guided loss (Eq. 8): pixel-wise cross-entropy of the student's logits against the teacher's labels.

    ``L_mask = -1/|V| Σ_{(i,j) ∈ V} log softmax(M^D_ij)[M̃_ij]`` over the pixels ``V`` whose label is not
    ``ignore_index`` (Eq. 8's ``1/HW`` when no pixel is ignored). Logits at a lower resolution than the labels are
    upsampled bilinearly (``align_corners=False``) to the label size first. When every pixel is ignored the loss is a
    zero attached to the graph (``F.cross_entropy`` would return NaN).

    Args:
        student_logits: ``[B, C, h, w]`` student predictions ``M^D`` (any resolution).
        pseudo_labels: ``[B, H, W]`` integer class indices in ``[0, C)`` (the rectified teacher's argmax ``M̃``) or
            ``ignore_index``.
        ignore_index: Label value excluded from the loss (default 255).

    Returns:
        The scalar float32 loss.
    """
    _check_float("student_logits", student_logits, 4, "[B, C, h, w] class logits")
    if pseudo_labels.ndim != 3:
        raise ValueError(f"pseudo_labels must be a [B, H, W] integer tensor, got shape {tuple(pseudo_labels.shape)}")
    if pseudo_labels.is_floating_point() or pseudo_labels.is_complex() or pseudo_labels.dtype == torch.bool:
        raise ValueError(f"pseudo_labels must hold integer class indices, got dtype {pseudo_labels.dtype}; use .long()")
    if pseudo_labels.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"pseudo_labels {tuple(pseudo_labels.shape)} and student_logits {tuple(student_logits.shape)} must have "
            f"the same batch size"
        )
    classes = student_logits.shape[1]
    labels = pseudo_labels.to(device=student_logits.device, dtype=torch.long)
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= classes))
    if bool(bad.any()):
        raise ValueError(
            f"pseudo_labels must be in [0, {classes}) or ignore_index={ignore_index}, found "
            f"{torch.unique(labels[bad]).tolist()[:5]}"
        )
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        logits = student_logits.float()
        if logits.shape[2:] != labels.shape[1:]:
            logits = F.interpolate(logits, size=tuple(labels.shape[1:]), mode="bilinear", align_corners=False)
        if not bool(valid.any()):
            return _zero_like_graph(logits)
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)


def feature_guided_loss(teacher: Tensor, student: Tensor, size: tuple[int, int]) -> Tensor:
    """Feature-guided loss (Eq. 9): L1 between teacher and student features resized to the image size.

    Both maps are resized bilinearly (``align_corners=False``) to ``size`` and ``L_feat = mean |Z - Ẑ|`` over all
    ``B·D·H·W`` elements: the paper writes ``‖Z - Ẑ‖_1``; the mean (the official ``nn.L1Loss`` default) keeps the
    term on the scale of the cross-entropy, which the literal sum (``B·D·H·W`` times larger) would swamp at
    ``α = 0.5``.
    The teacher (the frozen rectified CLIP) is detached: no gradient reaches it.

    Args:
        teacher: ``[B, D, h, w]`` features ``Z`` of the rectified CLIP.
        student: ``[B, D, h2, w2]`` features ``Ẑ`` of the student backbone (projected to ``D``).
        size: ``(H, W)``, the image size both are resized to.

    Returns:
        The scalar float32 loss, differentiable w.r.t. ``student``.
    """
    _check_float("teacher", teacher, 4, "[B, D, h, w] feature map")
    _check_float("student", student, 4, "[B, D, h2, w2] feature map")
    if teacher.shape[:2] != student.shape[:2]:
        raise ValueError(
            f"teacher and student must share B and D (project the student's features to the teacher's width), got "
            f"{tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    target_size = _check_size(size)
    with torch.autocast(device_type=student.device.type, enabled=False):
        maps = []
        for tensor in (teacher.detach().to(student.device), student):
            resized = tensor.float()
            if tuple(resized.shape[2:]) != target_size:
                resized = F.interpolate(resized, size=target_size, mode="bilinear", align_corners=False)
            maps.append(resized)
        return (maps[0] - maps[1]).abs().mean()


@dataclass(frozen=True, eq=False)
class DistillationLosses:
    """Output of :func:`distillation_loss` (Eq. 10).

    Attributes:
        total: ``mask + alpha * feat + beta * text``, the scalar to back-propagate.
        mask: ``L_mask`` (Eq. 8).
        feat: ``L_feat`` (Eq. 9).
        text: ``L_text``, the rectification loss (Eq. 7) on the student's features and logits.
    """

    total: Tensor
    mask: Tensor
    feat: Tensor
    text: Tensor


def distillation_loss(
    student_logits: Tensor,
    student_features: Tensor,
    teacher_features: Tensor,
    pseudo_labels: Tensor,
    *,
    text: Tensor,
    hypotheses: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    ignore_index: int = 255,
    feature_size: tuple[int, int] | None = None,
    mask_scale: float = 1.0,
    tau: float | None = None,
    logit_scale: Tensor | float | None = None,
    gumbel_tau: float = 1.0,
    generator: torch.Generator | None = None,
    pooling: Pooling = "area",
    similarity: Similarity = "cosine",
) -> DistillationLosses:
    """The distillation objective (Eq. 10): ``L_mask + α L_feat + β L_text``.

    - ``L_mask`` = :func:`mask_guided_loss` of ``student_logits`` (upsampled to the labels) against ``pseudo_labels``;
    - ``L_feat`` = :func:`feature_guided_loss` of ``teacher_features`` and ``student_features`` at ``feature_size``;
    - ``L_text`` = :func:`rectification_loss` of ``student_features`` and ``mask_scale · student_logits`` (the
      text-guided loss uses the student's features and masks, Sec. III-E, with the Gumbel input scaled as in the
      rectification stage).

    ``α = β = 0.5`` are the paper's values (Sec. IV, implementation details; the official distillation uses the same).

    Args:
        student_logits: ``[B, C, h, w]`` the student's rectified predictions ``M^D`` on its feature grid.
        student_features: ``[B, D, h, w]`` the student's features ``Ẑ``.
        teacher_features: ``[B, D, h', w']`` the rectified CLIP's features ``Z``.
        pseudo_labels: ``[B, H, W]`` the teacher's masks ``M̃`` as class indices (``ignore_index`` excluded).
        text: ``[C, D]`` Query text features ``W_q``.
        hypotheses: ``[B, C]`` bool multi-label hypotheses (Eq. 6).
        alpha: Weight of ``L_feat`` (default 0.5).
        beta: Weight of ``L_text`` (default 0.5).
        ignore_index: Ignored label value of ``pseudo_labels`` (default 255).
        feature_size: ``(H, W)`` for Eq. 9; ``None`` (default) is the labels' size, the image size.
        mask_scale: Factor on ``student_logits`` before the Gumbel-softmax of ``L_text`` only (the rectifier's
            ``logit_scale``: 1 as the paper, 100 as the official code); ``L_mask`` reads the logits unscaled.
        tau: See :func:`rectification_loss`.
        logit_scale: See :func:`rectification_loss`.
        gumbel_tau: See :func:`rectification_loss`.
        generator: See :func:`rectification_loss`.
        pooling: See :func:`rectification_loss`.
        similarity: See :func:`rectification_loss`.

    Returns:
        A :class:`DistillationLosses` of float32 scalars.
    """
    weight_feat = float(alpha)
    weight_text = float(beta)
    for name, weight in (("alpha", weight_feat), ("beta", weight_text)):
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{name} must be a non-negative finite weight (paper: 0.5), got {weight!r}")
    mask = mask_guided_loss(student_logits, pseudo_labels, ignore_index=ignore_index)
    size = (int(pseudo_labels.shape[1]), int(pseudo_labels.shape[2])) if feature_size is None else feature_size
    feat = feature_guided_loss(teacher_features, student_features, size)
    text_loss = rectification_loss(
        student_features,
        student_logits * mask_scale,
        text,
        hypotheses,
        tau=tau,
        logit_scale=logit_scale,
        gumbel_tau=gumbel_tau,
        generator=generator,
        pooling=pooling,
        similarity=similarity,
    )
    total = mask + weight_feat * feat + weight_text * text_loss
    return DistillationLosses(total=total, mask=mask, feat=feat, text=text_loss)
