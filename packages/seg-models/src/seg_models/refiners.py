"""Mask refiners behind :class:`seg_core.MaskRefiner`: PAMR and the fully connected CRF.

- PAMR, pixel-adaptive mask refinement (Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels",
  CVPR 2020, §3.3): each pixel's class scores are repeatedly replaced by an affinity-weighted average of its
  neighbours' scores, over 3×3 neighbourhoods at several dilations. The affinity of pixel ``i`` to neighbour
  ``j`` is ``-|I_i - I_j| / (λ σ_i)`` averaged over colour channels, with ``σ_i`` the local standard deviation of
  the image around ``i``; a softmax over all neighbours of all dilations gives convex weights, so probabilities
  stay probabilities. Implemented from the paper's description.
- Dense CRF (Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
  NeurIPS 2011) through pydensecrf2 (``pip install seg-models[crf]``), with ReCo's settings: 10 mean-field
  iterations, Gaussian kernel sxy 1 compat 3, bilateral kernel sxy 67 srgb 3 compat 4 (NoelShin/reco
  ``utils/crf.py``).

Both take images as RGB in [0, 1] (not CLIP-normalised); images at another size than the probabilities are
resized to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import MaskRefiner

__all__ = ["PAMR", "DenseCRF", "make_refiner", "pamr", "pamr_affinities"]

# ---------------------------------------------------------------------------------------------------------------
# PAMR
# ---------------------------------------------------------------------------------------------------------------


def _neighbours(x: Tensor, dilation: int) -> Tensor:
    """The 8 neighbours at ``dilation`` of every pixel, edge-replicated: ``[B, C, H, W]`` -> ``[B, C, 8, H, W]``."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    padded = F.pad(x, (dilation, dilation, dilation, dilation), mode="replicate")
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    views = [
        padded[
            ...,
            dilation + dy * dilation : dilation + dy * dilation + height,
            dilation + dx * dilation : dilation + dx * dilation + width,
        ]
        for dy, dx in shifts
    ]
    return torch.stack(views, dim=2)


def pamr_affinities(images: Tensor, dilations: Sequence[int], smoothness: float) -> Tensor:
    """Normalised local affinities ``[B, K, H, W]`` (``K = 8 * len(dilations)``, summing to 1 over ``K``).

    Args:
        images: ``[B, 3, H, W]`` images.
        dilations: Dilation rates of the 3×3 neighbourhoods.
        smoothness: λ, the scale of the local standard deviation in the kernel.
    """
    kernels = []
    for dilation in dilations:
        neighbours = _neighbours(images, dilation)  # [B, 3, 8, H, W]
        # Local standard deviation over the 3×3 window (centre included) at this dilation, per channel.
        window = torch.cat([images.unsqueeze(2), neighbours], dim=2)
        local_std = window.std(dim=2, keepdim=True)
        distance = (neighbours - images.unsqueeze(2)).abs() / (smoothness * local_std + 1e-8)
        kernels.append(-distance.mean(dim=1))  # [B, 8, H, W]
    return torch.cat(kernels, dim=1).softmax(dim=1)


def pamr(
    images: Tensor,
    masks: Tensor,
    *,
    iterations: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
    smoothness: float = 0.1,
) -> Tensor:
    """Pixel-adaptive mask refinement.

    Args:
        images: ``[B, 3, H, W]`` images (any affine pixel scale; the kernel is normalised by the local spread).
        masks: ``[B, C, H, W]`` soft masks (e.g. probabilities); other sizes than the image are fine.
        iterations: Refinement steps.
        dilations: Neighbourhood dilations.
        smoothness: λ in the kernel; smaller values make edges stronger.

    Returns:
        ``[B, C, H, W]`` refined masks at the masks' size (convex combinations of the input masks).
    """
    if masks.ndim != 4 or images.ndim != 4 or images.shape[0] != masks.shape[0]:
        raise ValueError(
            f"pamr needs images [B, 3, H, W] and masks [B, C, H, W] with the same B, got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}"
        )
    if iterations < 0 or not dilations or smoothness <= 0:
        raise ValueError(
            f"pamr needs iterations >= 0, at least one dilation and smoothness > 0; got {iterations}, "
            f"{tuple(dilations)}, {smoothness}"
        )
    size = (int(masks.shape[-2]), int(masks.shape[-1]))
    images = images.to(masks.dtype)
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    affinities = pamr_affinities(images, dilations, smoothness).unsqueeze(1)  # [B, 1, K, H, W]
    refined = masks
    for _ in range(iterations):
        gathered = torch.cat([_neighbours(refined, dilation) for dilation in dilations], dim=2)
        refined = (gathered * affinities).sum(dim=2)
    return refined


@dataclass(frozen=True)
class PAMR:
    """:class:`seg_core.MaskRefiner` running :func:`pamr` (defaults from the paper: 10 iterations, dilations
    1, 2, 4, 8, 12, 24, λ = 0.1)."""

    iterations: int = 10
    dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    smoothness: float = 0.1

    def refine(self, images: Tensor, probabilities: Tensor) -> Tensor:
        """Refine ``[B, C, H, W]`` probabilities with ``[B, 3, H, W]`` RGB images in [0, 1]."""
        with torch.no_grad():
            return pamr(
                images,
                probabilities,
                iterations=self.iterations,
                dilations=self.dilations,
                smoothness=self.smoothness,
            )


# ---------------------------------------------------------------------------------------------------------------
# Dense CRF
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseCRF:
    """:class:`seg_core.MaskRefiner` running pydensecrf2's fully connected CRF, ReCo's settings by default.

    The unary is ``-log p`` (probabilities clipped at ``1e-5``); the result is the mean-field marginals.
    Runs on the CPU, one image at a time.
    """

    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0

    def refine(self, images: Tensor, probabilities: Tensor) -> Tensor:
        """Refine ``[B, C, H, W]`` probabilities with ``[B, 3, H, W]`` RGB images in [0, 1]."""
        try:
            from pydensecrf import densecrf
        except ImportError as error:
            raise ImportError(
                "the dense CRF refiner needs pydensecrf2; install it with `pip install seg-models[crf]`"
            ) from error
        if probabilities.ndim != 4 or images.ndim != 4 or images.shape[0] != probabilities.shape[0]:
            raise ValueError(
                f"DenseCRF needs images [B, 3, H, W] and probabilities [B, C, H, W] with the same B, got "
                f"{tuple(images.shape)} and {tuple(probabilities.shape)}"
            )
        batch, classes, height, width = (int(v) for v in probabilities.shape)
        if tuple(images.shape[-2:]) != (height, width):
            images = F.interpolate(images.float(), size=(height, width), mode="bilinear", align_corners=False)
        # Arrays go to pydensecrf through Tensor.numpy() (seg-models does not import numpy itself).
        rgb = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        unary = -probabilities.detach().float().clamp(1e-5, 1.0).log().cpu().reshape(batch, classes, -1)
        refined = []
        for index in range(batch):
            crf = densecrf.DenseCRF2D(width, height, classes)
            crf.setUnaryEnergy(unary[index].contiguous().numpy())
            crf.addPairwiseGaussian(sxy=self.gaussian_sxy, compat=self.gaussian_compat)
            crf.addPairwiseBilateral(
                sxy=self.bilateral_sxy,
                srgb=self.bilateral_srgb,
                rgbim=rgb[index].contiguous().numpy(),
                compat=self.bilateral_compat,
            )
            refined.append(_matrix_to_tensor(crf.inference(self.iterations)).reshape(classes, height, width))
        return torch.stack(refined).to(device=probabilities.device, dtype=probabilities.dtype)


def _matrix_to_tensor(matrix: object) -> Tensor:
    """A pydensecrf ``MatrixXf`` (column-major float32 buffer) as a ``[rows, cols]`` tensor."""
    view = memoryview(matrix)  # type: ignore[arg-type]
    shape = view.shape
    if view.format != "f" or shape is None or len(shape) != 2:
        raise TypeError(f"expected a 2-D float32 matrix from pydensecrf, got format {view.format!r}, shape {shape}")
    data = bytearray(view.tobytes(order="C"))
    return torch.frombuffer(data, dtype=torch.float32).reshape(shape[0], shape[1])


def make_refiner(name: Literal["none", "pamr", "crf"]) -> MaskRefiner | None:
    """The refiner a :class:`seg_core.ProtocolPreset` ``refinement`` names (``None`` for ``"none"``)."""
    if name == "none":
        return None
    if name == "pamr":
        return PAMR()
    if name == "crf":
        return DenseCRF()
    raise ValueError(f"unknown refinement {name!r}; use 'none', 'pamr' or 'crf'")
