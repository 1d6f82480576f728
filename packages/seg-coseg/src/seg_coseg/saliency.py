"""Training-free saliency pseudo-masks: normalised-cut bipartition of dense patch features (TokenCut family).

ZUTIS (Shin, Albanie & Xie, "Zero-shot Unsupervised Transfer Instance Segmentation", 2023), Sec. 3.2
"Unsupervised saliency detection", gives every archive image a category-agnostic saliency mask ``S_i ∈ {0, 1}^{H×W}``
from "an unsupervised saliency detector (e.g. SelfMask)". The official code (NoelShin/zutis,
``index_dataset.py generate_pseudo_masks``) runs **SelfMask**, a *trained* detector (DINO ViT-S/8, 20 queries, the
query of highest objectness thresholded at 0.5, then a bilateral solver). This module replaces it by a
**training-free** default from the same family SelfMask is trained from (Wang et al., "TokenCut", CVPR 2022;
Melas-Kyriazi et al., "Deep Spectral Methods", CVPR 2022), working on whatever dense features the caller passes in:

1. the patch affinity graph from cosine similarities, TokenCut's hard threshold
   ``W_ij = 1 if cos(f_i, f_j) >= tau else eps`` (``eps > 0`` keeps the graph connected);
2. the normalised cut's relaxation, the generalised eigenproblem ``(D - W) y = λ D y`` with ``D = diag(W 1)``,
   solved through its symmetric form ``D^{-1/2} (D - W) D^{-1/2} z = λ z``, ``y = D^{-1/2} z``, with
   :func:`torch.linalg.eigh` in float64; ``y`` is the eigenvector of the second smallest eigenvalue;
3. the bipartition ``y > mean(y)``, and a rule choosing which side is the foreground (``foreground_rule``):

   * ``"less_border"`` (default): the side with fewer patches on the outer ring of the grid is the foreground -- the
     background of an object-centric archive image wraps around the object and so touches the border more
     (the boundary prior). Ties fall back to ``"max_abs"``.
   * ``"max_abs"``: TokenCut's rule, the side holding the patch of largest ``|y|``. Because ``y`` is D-orthogonal to
     the constant vector, the smaller side carries the larger values, so in practice this picks the smaller side.
   * ``"smaller"``: the side with fewer patches.

   The default was chosen on synthetic blobs (see ``tests/test_saliency.py``): all three agree while the object
   covers less than half the grid; once it covers more (close-ups, common in retrieved archives) ``"max_abs"`` and
   ``"smaller"`` return the background, ``"less_border"`` still the object. ``"less_border"`` fails instead when the
   object touches more of the border than the background does (an object filling a whole side of the image).

TokenCut's further steps (keeping only the connected component of the seed patch, a bilateral solver or CRF on the
pixel mask) are not done here; a caller can refine the masks with a :class:`seg_core.MaskRefiner`.

:class:`SaliencyDetector` is the seam: anything with ``masks(images) -> [B, H, W] bool`` serves, so a trained
SelfMask can replace :class:`SpectralSaliency` later. This package imports no encoder: :class:`SpectralSaliency`
takes a ``feature_fn`` (e.g. CLIP's or DINO's dense features from seg-models) from the caller.

Contents: :class:`SaliencyResult`, :func:`spectral_bipartition`, :func:`saliency_masks`, :class:`SaliencyDetector`,
:class:`SpectralSaliency`, :func:`mask_iou`, and two feature builders for it: :func:`colour_features` (mean colour
per cell, the low-level cue) and :func:`concat_features` (several feature maps on one grid, each weighted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ForegroundRule",
    "SaliencyDetector",
    "SaliencyResult",
    "SpectralSaliency",
    "Upsample",
    "colour_features",
    "concat_features",
    "mask_iou",
    "saliency_masks",
    "spectral_bipartition",
]

#: How :func:`spectral_bipartition` decides which side of the cut is the foreground (see the module docstring).
ForegroundRule = Literal["less_border", "max_abs", "smaller"]
#: How :func:`saliency_masks` brings the patch decision to pixels.
Upsample = Literal["bilinear", "nearest"]


@dataclass(frozen=True, eq=False)
class SaliencyResult:
    """The foreground patches of a batch and the eigenvector they were cut from.

    Attributes:
        mask: ``[B, h, w]`` bool, True on the foreground patches (``[h, w]`` for unbatched input).
        score: ``[B, h, w]`` the generalised eigenvector ``y`` of the second smallest eigenvalue, its sign chosen so
            that ``mask == score > score.mean()`` per sample (float64 for float64 features, else float32).
        eigenvalue: ``[B]`` the second smallest generalised eigenvalue ``λ`` (``[]`` for unbatched input), the
            relaxed normalised-cut value: near 0 for a clean two-region image.

    Nothing here carries a gradient (the cut is a pseudo-label).
    """

    mask: Tensor
    score: Tensor
    eigenvalue: Tensor


def _check_options(tau: object, eps: object, foreground_rule: object) -> None:
    if not (isinstance(tau, int | float) and math.isfinite(tau) and -1.0 <= tau <= 1.0):
        raise ValueError(f"tau must be a cosine threshold in [-1, 1], got {tau!r} (TokenCut uses 0.2 on DINO keys)")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and 0.0 < eps <= 1.0):
        raise ValueError(
            f"eps must be in (0, 1], the weight of edges below tau, got {eps!r}; it must be > 0 so the graph stays "
            "connected (TokenCut uses 1e-5)"
        )
    if foreground_rule not in get_args(ForegroundRule):
        raise ValueError(f"foreground_rule must be one of {get_args(ForegroundRule)}, got {foreground_rule!r}")


def _check_features(features: object) -> Tensor:
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor [B, C, h, w] or [C, h, w], got {type(features).__name__}")
    if features.ndim not in (3, 4):
        raise ValueError(f"features must be [B, C, h, w] or [C, h, w], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"features must be floating point, got dtype {features.dtype}; use .float()")
    if features.shape[-1] * features.shape[-2] < 2 or features.shape[-3] < 1:
        raise ValueError(
            f"features must have at least one channel and two patches to cut, got shape {tuple(features.shape)}"
        )
    if features.numel() and not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values; check the feature extractor")
    return features


def _border(height: int, width: int, device: torch.device) -> Tensor:
    """``[h*w]`` bool, True on the outer ring of an ``h×w`` grid."""
    ring = torch.ones(height, width, dtype=torch.bool, device=device)
    if height > 2 and width > 2:
        ring[1:-1, 1:-1] = False
    return ring.flatten()


def spectral_bipartition(
    features: Tensor,
    *,
    tau: float = 0.2,
    eps: float = 1e-5,
    foreground_rule: ForegroundRule = "less_border",
) -> SaliencyResult:
    """Cut each feature map into foreground and background with the normalised cut (TokenCut).

    Args:
        features: ``[B, C, h, w]`` (or unbatched ``[C, h, w]``) dense features, any scale (L2-normalised over ``C``
            here). Each sample is cut on its own; the cost is one ``h·w × h·w`` float64 eigendecomposition per
            sample (24×24 patches: 576², about 50 ms on one CPU core).
        tau: Cosine threshold of an edge: ``W_ij = 1`` where ``cos >= tau``. TokenCut's 0.2 is for DINO keys;
            features whose cosines are all high (CLIP patch tokens often are) need a higher value.
        eps: Weight of the edges below ``tau`` (> 0 keeps the graph connected and the problem well posed).
        foreground_rule: Which side is the foreground: ``"less_border"`` (default), ``"max_abs"`` (TokenCut) or
            ``"smaller"``; see the module docstring.

    Returns:
        :class:`SaliencyResult` with ``[B, h, w]`` masks and eigenvectors and ``[B]`` eigenvalues (the batch
        dimension is dropped for unbatched input).

    Raises:
        ValueError: bad shape, non-finite values or options out of range.
        TypeError: ``features`` is not a floating-point tensor.
    """
    _check_options(tau, eps, foreground_rule)
    checked = _check_features(features)
    unbatched = checked.ndim == 3
    batch = checked[None] if unbatched else checked
    num, channels, height, width = batch.shape
    out_dtype = torch.float64 if batch.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        flat = F.normalize(batch.detach().to(torch.float64).reshape(num, channels, height * width), dim=1)
        cosine = flat.transpose(1, 2) @ flat  # [B, N, N]
        ones = torch.ones((), dtype=torch.float64, device=flat.device)
        weights = torch.where(cosine >= tau, ones, ones * eps)
        degree = weights.sum(dim=2)  # [B, N], >= 1 (the diagonal is cos 1 >= tau)
        inv_sqrt = degree.rsqrt()
        # Symmetric form of (D - W) y = λ D y: L_sym = I - D^{-1/2} W D^{-1/2}, z = D^{1/2} y.
        laplacian = torch.eye(height * width, dtype=torch.float64, device=flat.device) - (
            inv_sqrt[:, :, None] * weights * inv_sqrt[:, None, :]
        )
        eigenvalues, eigenvectors = torch.linalg.eigh(laplacian)
        vector = eigenvectors[:, :, 1] * inv_sqrt  # [B, N], the generalised eigenvector y
        side = vector > vector.mean(dim=1, keepdim=True)  # one side of the cut (which one is decided below)
        seed = vector.abs().argmax(dim=1, keepdim=True)
        max_abs_side = side.gather(1, seed)[:, 0]  # True: the max-|y| patch lies on `side`
        if foreground_rule == "max_abs":
            keep = max_abs_side
        elif foreground_rule == "smaller":
            size = side.sum(dim=1)
            keep = size * 2 <= height * width  # ties: keep `side`
        else:
            ring = _border(height, width, flat.device)
            on_side = (side & ring).sum(dim=1)
            off_side = (~side & ring).sum(dim=1)
            keep = torch.where(on_side == off_side, max_abs_side, on_side < off_side)
        sign = torch.where(keep, 1.0, -1.0).to(torch.float64)[:, None]
        score = vector * sign
        mask = torch.where(keep[:, None], side, ~side)
    result_mask = mask.reshape(num, height, width)
    result_score = score.to(out_dtype).reshape(num, height, width)
    result_value = eigenvalues[:, 1].to(out_dtype)
    if unbatched:
        return SaliencyResult(mask=result_mask[0], score=result_score[0], eigenvalue=result_value[0])
    return SaliencyResult(mask=result_mask, score=result_score, eigenvalue=result_value)


def _check_image_size(image_size: object) -> tuple[int, int]:
    if (
        not isinstance(image_size, tuple | list)
        or len(image_size) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in image_size)
    ):
        raise ValueError(f"image_size must be (H, W) with two positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def saliency_masks(
    features: Tensor,
    image_size: tuple[int, int],
    *,
    upsample: Upsample = "bilinear",
    tau: float = 0.2,
    eps: float = 1e-5,
    foreground_rule: ForegroundRule = "less_border",
) -> Tensor:
    """Pixel saliency masks: :func:`spectral_bipartition` on the patches, brought to ``image_size``.

    Args:
        features: ``[B, C, h, w]`` (or unbatched ``[C, h, w]``) dense features of the images.
        image_size: ``(H, W)`` of the output masks.
        upsample: ``"bilinear"`` (default): bilinear resizing (``align_corners=False``) of the 0/1 patch mask,
            thresholded at 0.5: the boundary runs halfway between patch centres, with cut corners instead of
            steps on diagonals, and every patch centre keeps its patch's decision. ``"nearest"``: nearest resizing
            of the patch mask (blocks). The raw eigenvector is not interpolated: its magnitude is larger on the
            smaller side (it is D-orthogonal to the constant vector), so thresholding an interpolated score at its
            mean would push every boundary into the larger side.
        tau: See :func:`spectral_bipartition`.
        eps: See :func:`spectral_bipartition`.
        foreground_rule: See :func:`spectral_bipartition`.

    Returns:
        ``[B, H, W]`` bool (``[H, W]`` for unbatched input), True on the foreground.

    Raises:
        ValueError: bad ``image_size``, ``upsample`` or any error of :func:`spectral_bipartition`.
    """
    size = _check_image_size(image_size)
    if upsample not in get_args(Upsample):
        raise ValueError(f"upsample must be one of {get_args(Upsample)}, got {upsample!r}")
    result = spectral_bipartition(features, tau=tau, eps=eps, foreground_rule=foreground_rule)
    unbatched = result.mask.ndim == 2
    mask = result.mask[None] if unbatched else result.mask
    if upsample == "nearest":
        pixels = F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    else:
        pixels = F.interpolate(mask[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5
    return pixels[0] if unbatched else pixels


@runtime_checkable
class SaliencyDetector(Protocol):
    """A category-agnostic foreground detector (ZUTIS Sec. 3.2: SelfMask in the paper, trained or not)."""

    def masks(self, images: Tensor) -> Tensor:
        """From ``[B, 3, H, W]`` RGB images in [0, 1], return ``[B, H, W]`` bool foreground masks."""
        ...


def _check_images(images: object) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got dtype {images.dtype}; use .float() / 255")
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError(
            f"images must lie in [0, 1], got values in [{float(images.min()):.4g}, {float(images.max()):.4g}]; "
            "pass unnormalised RGB (divide uint8 images by 255) and normalise inside feature_fn"
        )
    return images


class SpectralSaliency:
    """Training-free :class:`SaliencyDetector`: :func:`saliency_masks` on the caller's dense features.

    Args:
        feature_fn: ``images [B, 3, H, W] in [0, 1] -> [B, C, h, w]`` dense features (any encoder; it does its own
            normalisation and resizing).
        upsample: See :func:`saliency_masks`.
        tau: See :func:`spectral_bipartition`.
        eps: See :func:`spectral_bipartition`.
        foreground_rule: See :func:`spectral_bipartition`.

    Raises:
        ValueError: an option out of range (checked here, not at the first call).
    """

    def __init__(
        self,
        feature_fn: Callable[[Tensor], Tensor],
        *,
        upsample: Upsample = "bilinear",
        tau: float = 0.2,
        eps: float = 1e-5,
        foreground_rule: ForegroundRule = "less_border",
    ) -> None:
        if not callable(feature_fn):
            raise TypeError(f"feature_fn must be callable (images -> [B, C, h, w]), got {type(feature_fn).__name__}")
        _check_options(tau, eps, foreground_rule)
        if upsample not in get_args(Upsample):
            raise ValueError(f"upsample must be one of {get_args(Upsample)}, got {upsample!r}")
        self.feature_fn = feature_fn
        self.upsample: Upsample = upsample
        self.tau = tau
        self.eps = eps
        self.foreground_rule: ForegroundRule = foreground_rule

    def masks(self, images: Tensor) -> Tensor:
        """From ``[B, 3, H, W]`` RGB images in [0, 1], return ``[B, H, W]`` bool foreground masks.

        Raises:
            ValueError: bad images, or ``feature_fn`` returned something other than ``[B, C, h, w]``.
        """
        checked = _check_images(images)
        features: object = self.feature_fn(checked)
        if not isinstance(features, Tensor) or features.ndim != 4 or features.shape[0] != checked.shape[0]:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"feature_fn must return [B, C, h, w] features with B={checked.shape[0]} (one map per image), got "
                f"{shape}"
            )
        height, width = checked.shape[-2:]
        return saliency_masks(
            features,
            (int(height), int(width)),
            upsample=self.upsample,
            tau=self.tau,
            eps=self.eps,
            foreground_rule=self.foreground_rule,
        )


def mask_iou(pred: Tensor, target: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Per-image foreground IoU of predicted against ground-truth masks (pseudo-mask quality).

    Args:
        pred: ``[B, H, W]`` bool predicted foreground.
        target: ``[B, H, W]`` bool ground-truth foreground.
        ignore: Optional ``[B, H, W]`` bool, True on pixels left out of both counts (e.g. void labels).

    Returns:
        ``[B]`` float32 ``|pred ∩ target| / |pred ∪ target|`` over the counted pixels; 1.0 where the union is empty
        (both masks agree there is no foreground).

    Raises:
        ValueError: shapes differ or are not ``[B, H, W]``.
        TypeError: a mask is not bool.
    """
    named = {"pred": pred, "target": target} if ignore is None else {"pred": pred, "target": target, "ignore": ignore}
    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a bool torch.Tensor [B, H, W], got {type(value).__name__}")
        if value.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, got dtype {value.dtype}; compare with a threshold first")
        if value.ndim != 3 or value.shape != pred.shape:
            raise ValueError(
                f"{name} must be [B, H, W] with the shape of pred {tuple(pred.shape)}, got {tuple(value.shape)}"
            )
    counted = ~ignore if ignore is not None else torch.ones_like(pred)
    intersection = (pred & target & counted).flatten(1).sum(dim=1)
    union = ((pred | target) & counted).flatten(1).sum(dim=1)
    iou = intersection.float() / union.clamp(min=1).float()
    return torch.where(union == 0, torch.ones_like(iou), iou)


def colour_features(images: Tensor, cell: int = 4) -> Tensor:
    """Mean colour of every ``cell × cell`` block, centred per image: ``[B, 3, H // cell, W // cell]``.

    A low-level affinity cue for :func:`spectral_bipartition`: cosine similarity of centred colours is high between
    cells whose colour departs from the image mean in the same direction. On scene images where a thing's colour
    is much of its identity (the synthetic world) it complements semantic features (``docs/methods/zutis.md``).

    Args:
        images: ``[B, 3, H, W]`` RGB in [0, 1], ``H`` and ``W`` at least ``cell``.
        cell: Block side in pixels (>= 1).

    Raises:
        ValueError: bad images or cell.
    """
    checked = _check_images(images)
    if isinstance(cell, bool) or cell < 1:
        raise ValueError(f"cell must be an int >= 1 (block side in pixels), got {cell!r}")
    if checked.shape[-2] < cell or checked.shape[-1] < cell:
        raise ValueError(f"images of size {tuple(checked.shape[-2:])} are smaller than one {cell}-pixel cell")
    pooled = F.avg_pool2d(checked.float(), cell)
    return pooled - pooled.mean(dim=(2, 3), keepdim=True)


def concat_features(maps: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """Concatenate feature maps on the grid of the first one, each L2-normalised per location, then weighted.

    Normalising each map per location makes its contribution to a cosine affinity independent of its scale and
    channel count, so ``weights`` say how much each cue counts: with two maps and weights ``(1, w)`` the cosine of
    the concatenation is ``(cos_1 + w² cos_2) / (1 + w²)``.

    Args:
        maps: ``[B, C_i, h_i, w_i]`` feature maps of one batch; later maps are resized bilinearly to the first grid.
        weights: One non-negative weight per map (default all 1).

    Raises:
        ValueError: no maps, different batch sizes, or a bad weight list.
    """
    if len(maps) == 0:
        raise ValueError("maps must hold at least one [B, C, h, w] feature map")
    weights = [1.0] * len(maps) if weights is None else list(weights)
    if len(weights) != len(maps) or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be {len(maps)} finite numbers >= 0, got {weights!r}")
    first = maps[0]
    if first.ndim != 4:
        raise ValueError(f"maps[0] must be [B, C, h, w], got shape {tuple(first.shape)}")
    grid = (int(first.shape[-2]), int(first.shape[-1]))
    parts = []
    for index, (feature, weight) in enumerate(zip(maps, weights, strict=True)):
        if feature.ndim != 4 or feature.shape[0] != first.shape[0]:
            raise ValueError(
                f"maps[{index}] must be [B, C, h, w] with B={first.shape[0]}, got shape {tuple(feature.shape)}"
            )
        resized = feature.float()
        if tuple(resized.shape[-2:]) != grid:
            resized = F.interpolate(resized, size=grid, mode="bilinear", align_corners=False)
        parts.append(F.normalize(resized, dim=1) * weight)
    return torch.cat(parts, dim=1)
