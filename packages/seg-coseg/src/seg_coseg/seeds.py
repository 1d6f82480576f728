"""Seed pixels and reference embeddings, computed block by block without the k·h·w square adjacency.

Shin, Albanie & Xie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022, Sec. 3.1 and Alg. 1
(Appendix B). Given L2-normalised dense features of the ``K`` images of a concept's archive, every pixel ``p`` gets
a *support*: the mean over the archive images ``i`` of its best match in image ``i``,

    best[p, i] = max_q w(q) · <f_p, f_q>   over the pixels q of image i,
    support[p] = mean_i best[p, i],

where ``w`` are optional non-negative gating weights on the pixels being matched to (ReCo Sec. 3.2: language
guidance times context elimination; the official code multiplies the *columns* of the adjacency by them). The seed
of an image is its pixel of highest support, and the reference embedding of the concept is the L2-normalised mean
of the ``K`` seed features.

Divergences from the official code (NoelShin/reco, networks/reco.py), written down on purpose:

* The official code builds the whole ``(K·h·w)²`` adjacency in one matmul (K=50 and 14×14 tokens: 9,800² fp32,
  about 384 MB; 20×20 tokens: 1.6 GB). :func:`seed_pixels` computes the same numbers one block of target images at
  a time, so its extra memory is ``K·h·w × block columns`` instead; :func:`naive_seed_pixels` is the full-matrix
  version, kept for checking only.
* The official code (and the paper's Alg. 1) slices the columns of image ``i`` as ``[i·hw, (2i+1)·hw)``, so every
  "per-image" maximum after the first spans several images. We implement what the paper's text means: image ``i``'s
  own ``hw`` columns ``[i·hw, (i+1)·hw)``.

The self block (a pixel against its own image, where the unweighted best match is the pixel itself) is included by
default, as in the official code; ``include_self=False`` averages over the other ``K - 1`` images only.

Contents: :class:`SeedPixels`, :func:`seed_pixels`, :func:`naive_seed_pixels`, :func:`reference_embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_BLOCK_COLUMNS",
    "SeedPixels",
    "default_block_size",
    "naive_seed_pixels",
    "reference_embedding",
    "seed_pixels",
]

#: Target number of adjacency columns (target pixels) per block when ``block_size`` is ``None``. Measured with
#: ``tools/bench/coseg.py`` on a 2-core CPU (K=50, 20×20 tokens, D=384, N=20,000 archive pixels): blocks of 400,
#: 800 and 1,600 columns all ran at 0.83-0.88x the time of one plain N×N matmul (which also page-faults its 1.6 GB
#: output), with 63, 95 and 160 MB extra peak memory against 1,569 MB for the full adjacency (25x, 16.5x, 9.8x).
#: 800 keeps a margin on both targets (time <= 1.3x the matmul, memory >= 10x less than the full matrix).
DEFAULT_BLOCK_COLUMNS = 800


@dataclass(frozen=True, eq=False)
class SeedPixels:
    """The seed pixel of every archive image and the support of every pixel.

    Attributes:
        indices: ``[K]`` int64 flat index (``row * w + col``) of each image's seed pixel in its ``h×w`` grid.
        support: ``[K, h*w]`` mean over the archive images of each pixel's best (weighted) match in that image;
            ``indices`` is its argmax over the last dimension. Carries no gradient.
        grid: ``(h, w)``, the feature grid the flat indices refer to.
    """

    indices: Tensor
    support: Tensor
    grid: tuple[int, int]

    def __post_init__(self) -> None:
        height, width = self.grid
        if self.support.ndim != 2 or self.support.shape[1] != height * width:
            raise ValueError(
                f"support must be [K, h*w] = [K, {height * width}] for grid {self.grid}, "
                f"got shape {tuple(self.support.shape)}"
            )
        if tuple(self.indices.shape) != (self.support.shape[0],):
            raise ValueError(
                f"indices must be [K] with K={self.support.shape[0]} images, got shape {tuple(self.indices.shape)}"
            )

    @property
    def positions(self) -> Tensor:
        """``[K, 2]`` int64 ``(row, col)`` of each seed pixel in the ``h×w`` grid."""
        width = self.grid[1]
        return torch.stack((self.indices // width, self.indices % width), dim=1)


def default_block_size(pixels_per_image: int) -> int:
    """Images per block when ``block_size`` is ``None``: about :data:`DEFAULT_BLOCK_COLUMNS` target pixels, >= 1."""
    if pixels_per_image < 1:
        raise ValueError(f"pixels_per_image must be >= 1, got {pixels_per_image}")
    return max(1, DEFAULT_BLOCK_COLUMNS // pixels_per_image)


def _check_block_size(block_size: object) -> None:
    """Raise unless ``block_size`` is ``None`` or a positive int (a bool is rejected although it is an int)."""
    valid = block_size is None or (type(block_size) is int and block_size >= 1)
    if not valid:
        raise ValueError(f"block_size must be a positive int (target images per block) or None, got {block_size!r}")


def _check_inputs(features: Tensor, column_weights: Tensor | None, *, include_self: bool) -> None:
    """Validate the shared arguments of :func:`seed_pixels` and :func:`naive_seed_pixels`."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor [K, D, h, w], got {type(features).__name__}")
    if features.ndim != 4:
        raise ValueError(
            f"features must be [K, D, h, w] (K archive images, D channels, an h×w grid), got shape "
            f"{tuple(features.shape)}; add a batch dimension with features[None] for a single image"
        )
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got dtype {features.dtype}; use features.float()")
    if features.numel() == 0:
        raise ValueError(f"features must not be empty, got shape {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values; check the encoder output")
    num_images = features.shape[0]
    if not include_self and num_images < 2:
        raise ValueError(
            f"include_self=False averages over the other K - 1 images, so it needs K >= 2 images; got K={num_images}"
        )
    if column_weights is None:
        return
    if not isinstance(column_weights, Tensor):
        raise TypeError(f"column_weights must be a torch.Tensor [K, h, w] or None, got {type(column_weights).__name__}")
    expected = (num_images, features.shape[2], features.shape[3])
    if tuple(column_weights.shape) != expected:
        raise ValueError(
            f"column_weights must be [K, h, w] = {list(expected)} to match features {tuple(features.shape)}, got "
            f"shape {tuple(column_weights.shape)}; resize saliency maps to the feature grid first"
        )
    if not column_weights.is_floating_point():
        raise TypeError(f"column_weights must be floating point, got dtype {column_weights.dtype}")
    if column_weights.device != features.device:
        raise ValueError(
            f"column_weights are on {column_weights.device} but features on {features.device}; move them together"
        )
    if not bool(torch.isfinite(column_weights).all()):
        raise ValueError("column_weights contain NaN or infinite values")
    smallest = float(column_weights.min())
    if smallest < 0:
        # Folding the weights into the target features (w·<f_p, f_q> = <f_p, w·f_q>) and the gate reading of the
        # paper both assume weights >= 0; a negative weight would turn the best match into the worst one.
        raise ValueError(
            f"column_weights must be >= 0 (they gate similarities), got a minimum of {smallest:.6g}; pass sigmoid "
            "outputs or products of them"
        )


def _flatten_normalised(features: Tensor) -> Tensor:
    """``[K, D, h, w]`` -> a new ``[K*h*w, D]`` with rows L2-normalised over D, image-major (row ``i*h*w + p``).

    One copy, normalised in place (``x / max(||x||, 1e-12)``, as ``F.normalize``), so the peak is one ``[N, D]``
    array rather than two; the input is never modified.
    """
    num_images, channels = features.shape[:2]
    rows = torch.empty(
        (num_images, features.shape[2] * features.shape[3], channels), dtype=features.dtype, device=features.device
    )
    rows.copy_(features.reshape(num_images, channels, -1).transpose(1, 2))
    rows = rows.view(-1, channels)
    return rows.div_(torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min_(1e-12))


def _seeds_from_support(support: Tensor, num_images: int, grid: tuple[int, int]) -> SeedPixels:
    per_image = support.reshape(num_images, grid[0] * grid[1])
    return SeedPixels(indices=per_image.argmax(dim=1), support=per_image, grid=grid)


def seed_pixels(
    features: Tensor,
    column_weights: Tensor | None = None,
    *,
    include_self: bool = True,
    block_size: int | None = None,
) -> SeedPixels:
    """ReCo's seed pixels, one block of target images at a time (no ``(K·h·w)²`` adjacency).

    For every target block of ``B`` images, one matmul ``[K·h·w, D] @ [D, B·h·w]`` gives the similarities of all
    archive pixels to the block's pixels; the weights are folded into the block's features beforehand
    (``w_q·<f_p, f_q> = <f_p, w_q·f_q>`` for ``w_q >= 0``), so gating costs no extra pass over the block, and the
    per-image maximum over each image's ``h·w`` columns is taken right after the matmul. The block buffer is
    allocated once and reused. Extra memory: ``K·h·w × B·h·w`` values for the block plus one normalised
    ``[K·h·w, D]`` copy of the features, against ``(K·h·w)²`` for :func:`naive_seed_pixels`.

    Args:
        features: ``[K, D, h, w]`` dense features of the ``K`` archive images (any scale: L2-normalised over ``D``
            here; an all-zero feature stays zero).
        column_weights: ``[K, h, w]`` non-negative gating weights of the pixels being matched to (language
            guidance × context elimination, ReCo Sec. 3.2); ``None`` means all ones.
        include_self: Average over all ``K`` images including the pixel's own (the official code), or over the
            other ``K - 1`` (needs ``K >= 2``).
        block_size: Target images per block; ``None`` picks :func:`default_block_size` (about
            :data:`DEFAULT_BLOCK_COLUMNS` columns). Values above ``K`` mean one block.

    Returns:
        The seeds: ``indices`` ``[K]``, ``support`` ``[K, h*w]`` (features' dtype and device, no gradient).

    Raises:
        TypeError: ``features`` or ``column_weights`` is not a floating-point tensor.
        ValueError: wrong ranks or shapes, negative or non-finite weights, ``K < 2`` with ``include_self=False``,
            or ``block_size < 1``.
    """
    _check_inputs(features, column_weights, include_self=include_self)
    num_images, _, height, width = (int(v) for v in features.shape)
    pixels = height * width
    if block_size is None:
        block_size = default_block_size(pixels)
    _check_block_size(block_size)
    block_size = min(block_size, num_images)

    with torch.no_grad():
        rows = _flatten_normalised(features)  # [N, D], N = K*h*w
        total = rows.shape[0]
        gates = None if column_weights is None else column_weights.reshape(total, 1).to(rows.dtype)
        support = torch.zeros(total, dtype=rows.dtype, device=rows.device)
        # One buffer for the largest block; smaller (last) blocks use a contiguous prefix of it. Reusing it avoids
        # page-faulting a fresh ``N × B·h·w`` allocation for every block on the CPU.
        buffer = torch.empty(total * block_size * pixels, dtype=rows.dtype, device=rows.device)
        pixel_rows = torch.arange(total, device=rows.device)
        for first in range(0, num_images, block_size):
            count = min(block_size, num_images - first)
            columns = count * pixels
            block = buffer[: total * columns].view(total, columns)
            targets = rows[first * pixels : first * pixels + columns]  # [B*h*w, D]
            if gates is not None:
                # Weighted per block, not for the whole archive at once: one more [N, D] copy saved.
                targets = targets * gates[first * pixels : first * pixels + columns]
            torch.mm(rows, targets.T, out=block)
            best = block.view(total, count, pixels).amax(dim=2)  # [N, count]: best match in each block image
            if not include_self:
                # The block's own images: zero the entry of each of their pixels against its own image, so the
                # sum below runs over the other K - 1 images only.
                own = pixel_rows[first * pixels : first * pixels + columns]
                best[own, own // pixels - first] = 0
            support += best.sum(dim=1)
        support /= num_images if include_self else num_images - 1
    return _seeds_from_support(support, num_images, (height, width))


def naive_seed_pixels(
    features: Tensor,
    column_weights: Tensor | None = None,
    *,
    include_self: bool = True,
) -> SeedPixels:
    """The same seeds as :func:`seed_pixels` from the whole ``(K·h·w)²`` adjacency. For checking only.

    Builds the full matrix ``A = X Xᵀ`` of the normalised features as the official code does (but slices image
    ``i``'s own columns, see the module docstring), scales its columns by the weights in place, takes each image's
    column maximum and averages. Memory grows with ``(K·h·w)²``: use :func:`seed_pixels` for real archives.

    Args:
        features: ``[K, D, h, w]`` dense features.
        column_weights: ``[K, h, w]`` non-negative weights of the target pixels, or ``None``.
        include_self: As in :func:`seed_pixels`.

    Returns:
        The seeds (no gradient).
    """
    _check_inputs(features, column_weights, include_self=include_self)
    num_images, _, height, width = (int(v) for v in features.shape)
    pixels = height * width
    with torch.no_grad():
        rows = _flatten_normalised(features)
        total = rows.shape[0]
        adjacency = rows @ rows.T  # [N, N]
        if column_weights is not None:
            adjacency.mul_(column_weights.reshape(1, total).to(rows.dtype))
        best = adjacency.view(total, num_images, pixels).amax(dim=2)  # [N, K]
        del adjacency
        if include_self:
            support = best.mean(dim=1)
        else:
            own_image = torch.arange(total, device=rows.device) // pixels
            others = torch.ones_like(best, dtype=torch.bool)
            others[torch.arange(total, device=rows.device), own_image] = False
            support = (best * others).sum(dim=1) / (num_images - 1)
    return _seeds_from_support(support, num_images, (height, width))


def reference_embedding(
    features: Tensor,
    column_weights: Tensor | None = None,
    *,
    seeds: SeedPixels | None = None,
    include_self: bool = True,
    block_size: int | None = None,
) -> Tensor:
    """ReCo's reference embedding of a concept: the L2-normalised mean of its ``K`` seed features.

    This is ``ref_type="avg"`` of the official code (ReCo Alg. 1, last lines). Gradients flow to the features at
    the seed pixels (the seed choice itself is an argmax and carries none).

    Args:
        features: ``[K, D, h, w]`` dense features of the archive images.
        column_weights: ``[K, h, w]`` non-negative gating weights for the seed search, or ``None``.
        seeds: Precomputed seeds for these features; ``None`` computes them with :func:`seed_pixels`
            (``include_self`` and ``block_size`` are used only then).
        include_self: See :func:`seed_pixels`.
        block_size: See :func:`seed_pixels`.

    Returns:
        ``[D]`` unit-norm reference embedding, in the features' dtype and device.
    """
    if seeds is None:
        seeds = seed_pixels(features, column_weights, include_self=include_self, block_size=block_size)
    else:
        if column_weights is not None:
            raise ValueError("pass either seeds or column_weights, not both: the weights only steer the seed search")
        _check_inputs(features, None, include_self=True)
        num_images, _, height, width = (int(v) for v in features.shape)
        if seeds.grid != (height, width) or seeds.indices.shape[0] != num_images:
            raise ValueError(
                f"seeds were computed for {seeds.indices.shape[0]} images on a {seeds.grid} grid, but features are "
                f"{tuple(features.shape)}; compute the seeds from these features"
            )
    num_images, channels = features.shape[:2]
    # Gather the K raw seed features first and normalise only those ([K, D], not the whole archive).
    index = seeds.indices.to(features.device).view(num_images, 1, 1).expand(num_images, channels, 1)
    seed_features = features.reshape(num_images, channels, -1).gather(2, index).squeeze(2)  # [K, D]
    return F.normalize(F.normalize(seed_features, dim=1).mean(dim=0), dim=0)
