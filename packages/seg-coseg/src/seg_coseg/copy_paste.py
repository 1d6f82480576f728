"""Copy-paste synthesis of multi-object training images with semantic and instance labels (ZUTIS).

ZUTIS (Shin, Albanie & Xie, "Zero-shot Unsupervised Transfer Instance Segmentation", 2023), Sec. 3.2 "Synthetic
image generation with copy-paste augmentation" and Sec. 4 (implementation details): archive images with their
saliency pseudo-masks are copy-pasted (Ghiasi et al., CVPR 2021) into one image with several objects, each mask
keeping its category and getting its own instance id; up to 10 images per synthetic image, and 50% of the time all
from one randomly chosen archive so the model learns to separate objects of the same category. The paper gives no
more detail; what follows the official code (NoelShin/zutis, ``datasets/index_dataset.py``,
``datasets/base_dataset.py``, ``datasets/augmentations/``) is marked (code):

* :func:`sample_sources`: ``n ~ randint(1, max_sources)``; with probability ``same_category_prob`` all ``n`` from one
  uniformly chosen category, else each uniformly from the union of all archives; indices drawn with replacement
  (code).
* :func:`augment_source`, per image (code): random scale ``U(scale_range)`` × the original size (bilinear with
  antialiasing for the image, nearest for the mask; sides floored, at least 1); padding to ``crop_size`` with the
  image's mean colour at a random corner, padded pixels being ignore-labelled; a random ``crop_size²`` crop;
  horizontal flip; colour jitter (brightness, contrast, saturation 0.8, hue 0.2, the four in random order, with
  probability 0.8); grayscale (0.2); Gaussian blur (probability 0.5, sigma ``U(0.1, 2.0)``, odd kernel of about 10%
  of the crop side, reflected borders). The code works on uint8 PIL images; here everything stays float in [0, 1]
  and is implemented in torch (seg-coseg has no torchvision dependency): hue jitter goes RGB -> HSV -> RGB, grayscale
  is ITU-R 601 luma.
* :func:`compose` (code): source 1 is the canvas: its mask is its instance and its other non-padding pixels are
  background 0; every further source is cut by the bounding box of its mask and pasted, mask pixels only and with no
  blending, at a uniform location with the box fully inside the canvas. Later pastes overwrite earlier ones and cut
  the earlier instance masks; an instance fully occluded (or cropped away) keeps an empty mask and
  ``visible == False`` so a caller can drop it (the official code keeps it in the target list).

Divergences from the official code, on purpose: the official bounding box slices ``ymin:ymax`` and so drops the last
row and column of every pasted object; here the box is inclusive. The official padding draws a fresh random number
for each corner test (so corners are not equally likely); here each corner has probability 1/4. Sources whose mask
is empty after cropping are skipped by the official paste but kept in its instance list; here they are kept too,
with an empty mask and ``visible == False``. Normalisation (ImageNet mean/std in the code) is the caller's.

Contents: :class:`PasteSource`, :class:`CopyPasteConfig`, :class:`AugmentedSource`, :class:`CopyPasteSample`,
:class:`SourceDraw`, :func:`sample_sources`, :func:`augment_source`, :func:`compose`, :func:`copy_paste`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import SegModel

__all__ = [
    "AugmentedSource",
    "CopyPasteConfig",
    "CopyPasteSample",
    "PasteSource",
    "SourceDraw",
    "augment_source",
    "compose",
    "copy_paste",
    "sample_sources",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L" conversion


def _check_image_mask(image: object, mask: object, what: str) -> tuple[int, int]:
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{what}.image must be a [3, H, W] RGB tensor, got {shape}")
    if not image.is_floating_point():
        raise TypeError(f"{what}.image must be floating point in [0, 1], got dtype {image.dtype}; use .float() / 255")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"{what}.mask must be a bool tensor [H, W], got {got}; use mask > 0.5")
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"{what}.mask must be [H, W] = {tuple(image.shape[1:])} like its image, got {tuple(mask.shape)}"
        )
    if image.numel() == 0:
        raise ValueError(f"{what}.image is empty (shape {tuple(image.shape)}); every source needs at least one pixel")
    return int(image.shape[1]), int(image.shape[2])


def _is_category(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_category(value: object, what: str) -> None:
    if not _is_category(value):
        raise ValueError(f"{what} must be an int >= 1 (0 is the background label), got {value!r}")


@dataclass(frozen=True, eq=False)
class PasteSource:
    """One archive image with its saliency pseudo-mask and its category.

    Attributes:
        image: ``[3, H, W]`` float RGB in [0, 1].
        mask: ``[H, W]`` bool, True on the (pseudo-)object.
        category: Category id ``>= 1`` (0 is the background of the semantic map).

    Raises:
        ValueError: bad shapes, values outside [0, 1] or a category below 1.
        TypeError: wrong dtypes.
    """

    image: Tensor
    mask: Tensor
    category: int

    def __post_init__(self) -> None:
        _check_image_mask(self.image, self.mask, "PasteSource")
        if float(self.image.min()) < 0.0 or float(self.image.max()) > 1.0:
            raise ValueError(
                f"PasteSource.image must lie in [0, 1], got values in [{float(self.image.min()):.4g}, "
                f"{float(self.image.max()):.4g}]; pass unnormalised RGB (divide uint8 images by 255)"
            )
        _check_category(self.category, "PasteSource.category")


class CopyPasteConfig(SegModel):
    """How :func:`copy_paste` builds a synthetic image (defaults: the official ZUTIS code).

    Attributes:
        max_sources: ``n ~ randint(1, max_sources)`` images per synthetic image (paper: 10).
        same_category_prob: Probability that all ``n`` come from one category (paper: 50%; code
            ``random_duplicate``).
        scale_range: ``(low, high)`` of the uniform random scale of each source's original size.
        crop_size: Side ``S`` of the square output (384 in the code; 64 suits the synthetic world).
        hflip_prob: Probability of a horizontal flip per source.
        jitter_prob: Probability of colour jitter per source.
        brightness: Brightness factor drawn from ``U(max(0, 1 - b), 1 + b)``.
        contrast: Contrast factor drawn from ``U(max(0, 1 - c), 1 + c)``.
        saturation: Saturation factor drawn from ``U(max(0, 1 - s), 1 + s)``.
        hue: Hue shift drawn from ``U(-hue, hue)`` (fraction of the colour circle, at most 0.5).
        grayscale_prob: Probability of converting a source to grayscale (3 equal channels).
        blur_prob: Probability of a Gaussian blur per source.
        blur_sigma_range: ``(low, high)`` of the uniform blur sigma in pixels.
        blur_kernel_fraction: Kernel side as a fraction of the crop side, made odd (code: 10%, e.g. 39 for 384);
            at least 3.
        ignore_index: Semantic label of padding pixels (never a category id, never 0).
    """

    max_sources: int = 10
    same_category_prob: float = 0.5
    scale_range: tuple[float, float] = (0.1, 1.0)
    crop_size: int = 384
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    ignore_index: int = 255

    def model_post_init(self, context: Any, /) -> None:
        """Check the values pydantic's types do not: pydantic reports a ``ValueError`` here as a validation error."""
        problems: list[str] = []
        if self.max_sources < 1:
            problems.append(f"max_sources must be >= 1, got {self.max_sources}")
        if self.crop_size < 1:
            problems.append(f"crop_size must be >= 1 pixel, got {self.crop_size}")
        for name in ("same_category_prob", "hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("brightness", "contrast", "saturation", "blur_kernel_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 <= self.hue <= 0.5:
            problems.append(f"hue must be in [0, 0.5] (a fraction of the colour circle), got {self.hue!r}")
        for name in ("scale_range", "blur_sigma_range"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
                problems.append(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)!r}")
        if self.ignore_index == 0:
            problems.append("ignore_index must not be 0, the background label (the code uses 255)")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, eq=False)
class AugmentedSource:
    """A source after :func:`augment_source`: a ``S×S`` crop ready to paste.

    Attributes:
        image: ``[3, S, S]`` float RGB in [0, 1].
        mask: ``[S, S]`` bool object mask (False on padding).
        valid: ``[S, S]`` bool, False on padding added to reach the crop size.
        category: Category id ``>= 1``.
    """

    image: Tensor
    mask: Tensor
    valid: Tensor
    category: int

    def __post_init__(self) -> None:
        height, width = _check_image_mask(self.image, self.mask, "AugmentedSource")
        if height != width:
            raise ValueError(f"AugmentedSource.image must be square [3, S, S], got {tuple(self.image.shape)}")
        valid: object = self.valid
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool or valid.shape != self.mask.shape:
            raise ValueError(f"AugmentedSource.valid must be a bool [S, S] tensor with S={height}")
        if bool((self.mask & ~self.valid).any()):
            raise ValueError("AugmentedSource.mask is True on padding (valid False); mask the padding out first")
        _check_category(self.category, "AugmentedSource.category")


@dataclass(frozen=True, eq=False)
class CopyPasteSample:
    """One synthetic training image with its semantic and instance labels.

    Attributes:
        image: ``[3, S, S]`` float RGB in [0, 1].
        semantic: ``[S, S]`` int64: the category of the top-most instance, 0 on background, ``ignore_index`` on
            canvas padding not covered by a paste.
        instances: ``[N, S, S]`` bool, one mask per source in paste order, mutually disjoint; later pastes have cut
            the earlier masks.
        categories: ``[N]`` int64 category of each instance.
        visible: ``[N]`` bool, False where an instance mask is empty (fully occluded or cropped away).
        boxes: ``[N, 4]`` int64 ``(top, left, bottom, right)`` (bottom/right exclusive) where each source's mask
            box was placed on the canvas, before occlusion; all zeros for a source with an empty mask.
    """

    image: Tensor
    semantic: Tensor
    instances: Tensor
    categories: Tensor
    visible: Tensor
    boxes: Tensor


@dataclass(frozen=True)
class SourceDraw:
    """Which archive images :func:`sample_sources` chose.

    Attributes:
        picks: ``((category, index), ...)`` of length ``n``: the ``index``-th item of ``archives[category]``; the
            first is the canvas.
        same_category: Whether this draw took the single-category branch (all picks from one category).
    """

    picks: tuple[tuple[int, int], ...]
    same_category: bool


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform int in ``[low, high]`` (both inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _bernoulli(generator: torch.Generator, prob: float) -> bool:
    return float(torch.rand((), generator=generator)) < prob


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "use torch.Generator().manual_seed(seed)"
        )
    return generator


def sample_sources(
    archives: Mapping[int, Sequence[Any]], config: CopyPasteConfig, generator: torch.Generator
) -> SourceDraw:
    """Choose the archive images of one synthetic image (ZUTIS Sec. 4; code ``IndexDataset.__getitem__``).

    ``n ~ randint(1, config.max_sources)``. With probability ``config.same_category_prob`` one category is chosen
    uniformly among the non-empty archives and all ``n`` picks come from it; otherwise each pick is uniform over the
    union of all archive items (so categories weigh by archive size; equal sizes, as ZUTIS's 500 per category, make
    it uniform over categories too). Indices are drawn with replacement, as in the code.

    Args:
        archives: Category id -> that category's archive (only ``len`` is used; callers keep their own storage).
        config: ``max_sources`` and ``same_category_prob``.
        generator: The random source (CPU ``torch.Generator``).

    Returns:
        :class:`SourceDraw` with the ``(category, index)`` picks.

    Raises:
        ValueError: no archive has an item, or a category id is not an int >= 1.
    """
    rng = _check_generator(generator)
    bad = [key for key in archives if not _is_category(key)]
    if bad:
        raise ValueError(f"archives must be keyed by category ids >= 1 (0 is the background), got keys {bad!r}")
    sizes = [(category, len(items)) for category, items in archives.items() if len(items) > 0]
    if not sizes:
        raise ValueError(
            f"archives must hold at least one non-empty archive, got {len(archives)} categories all empty; "
            "build the archives (retrieval + saliency) first"
        )
    count = _randint(rng, 1, config.max_sources)
    if _bernoulli(rng, config.same_category_prob):
        category, size = sizes[_randint(rng, 0, len(sizes) - 1)]
        picks = tuple((category, _randint(rng, 0, size - 1)) for _ in range(count))
        return SourceDraw(picks=picks, same_category=True)
    offsets = torch.tensor([0] + [size for _, size in sizes]).cumsum(0)
    total = int(offsets[-1])
    chosen: list[tuple[int, int]] = []
    for _ in range(count):
        flat = _randint(rng, 0, total - 1)
        slot = int(torch.searchsorted(offsets, flat, right=True)) - 1
        chosen.append((sizes[slot][0], flat - int(offsets[slot])))
    return SourceDraw(picks=tuple(chosen), same_category=False)


def _grayscale(image: Tensor) -> Tensor:
    """``[3, H, W]`` -> ``[1, H, W]`` luma."""
    weights = torch.tensor(_LUMA, dtype=image.dtype, device=image.device)
    return (image * weights[:, None, None]).sum(dim=0, keepdim=True)


def _rgb_to_hsv(image: Tensor) -> Tensor:
    """``[3, H, W]`` RGB in [0, 1] -> HSV with every channel in [0, 1] (hue as a fraction of the circle)."""
    red, green, blue = image.unbind(0)
    value, _ = image.max(dim=0)
    low, _ = image.min(dim=0)
    delta = value - low
    saturation = torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value))
    safe = delta.clamp(min=1e-12)
    hue_r = torch.remainder((green - blue) / safe, 6.0)
    hue_g = (blue - red) / safe + 2.0
    hue_b = (red - green) / safe + 4.0
    hue = torch.where(value == red, hue_r, torch.where(value == green, hue_g, hue_b))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return torch.stack([torch.remainder(hue, 1.0), saturation, value])


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`_rgb_to_hsv`."""
    hue, saturation, value = hsv.unbind(0)
    scaled = hue * 6.0
    sector = torch.floor(scaled)
    fraction = scaled - sector
    sector = torch.remainder(sector, 6.0).long()
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # Per sector (0..5): (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q).
    red = torch.stack([value, q, p, p, t, value])
    green = torch.stack([t, value, value, q, p, p])
    blue = torch.stack([p, p, t, value, value, q])
    index = sector[None]
    return torch.cat([red.gather(0, index), green.gather(0, index), blue.gather(0, index)])


def _adjust_hue(image: Tensor, shift: float) -> Tensor:
    hsv = _rgb_to_hsv(image)
    hsv = torch.stack([torch.remainder(hsv[0] + shift, 1.0), hsv[1], hsv[2]])
    return _hsv_to_rgb(hsv).clamp(0.0, 1.0)


def _colour_jitter(image: Tensor, config: CopyPasteConfig, rng: torch.Generator) -> Tensor:
    """torchvision-style ``ColorJitter``: the four adjustments in a random order, each with its random factor."""
    order = torch.randperm(4, generator=rng).tolist()
    for step in order:
        if step == 0 and config.brightness > 0:
            factor = _uniform(rng, max(0.0, 1.0 - config.brightness), 1.0 + config.brightness)
            image = (image * factor).clamp(0.0, 1.0)
        elif step == 1 and config.contrast > 0:
            factor = _uniform(rng, max(0.0, 1.0 - config.contrast), 1.0 + config.contrast)
            mean = _grayscale(image).mean()
            image = (factor * image + (1.0 - factor) * mean).clamp(0.0, 1.0)
        elif step == 2 and config.saturation > 0:
            factor = _uniform(rng, max(0.0, 1.0 - config.saturation), 1.0 + config.saturation)
            image = (factor * image + (1.0 - factor) * _grayscale(image)).clamp(0.0, 1.0)
        elif step == 3 and config.hue > 0:
            image = _adjust_hue(image, _uniform(rng, -config.hue, config.hue))
    return image


def _gaussian_blur(image: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[3, H, W]`` with reflected borders (OpenCV's default BORDER_REFLECT_101)."""
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    height, width = image.shape[1:]
    batch = image[None]
    # Reflection needs the padding below the side; clamp the radius on tiny crops.
    pad_y, pad_x = min(radius, height - 1), min(radius, width - 1)
    if pad_x > 0:
        row = kernel[radius - pad_x : radius + pad_x + 1]
        batch = F.pad(batch, (pad_x, pad_x, 0, 0), mode="reflect")
        batch = F.conv2d(batch, row.reshape(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), groups=3)
    if pad_y > 0:
        col = kernel[radius - pad_y : radius + pad_y + 1]
        batch = F.pad(batch, (0, 0, pad_y, pad_y), mode="reflect")
        batch = F.conv2d(batch, col.reshape(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), groups=3)
    return batch[0].clamp(0.0, 1.0)


def augment_source(source: PasteSource, config: CopyPasteConfig, generator: torch.Generator) -> AugmentedSource:
    """Scale, pad, crop, flip and colour-augment one source to a ``crop_size²`` piece (code order).

    Args:
        source: The archive image, its mask and category.
        config: Augmentation settings (see :class:`CopyPasteConfig`).
        generator: The random source (CPU ``torch.Generator``).

    Returns:
        :class:`AugmentedSource` with the augmented image, its mask and the non-padding area.
    """
    rng = _check_generator(generator)
    size = config.crop_size
    image, mask = source.image, source.mask
    height, width = image.shape[1:]

    scale = _uniform(rng, *config.scale_range)
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        image = image[0].clamp(0.0, 1.0)
        mask = F.interpolate(mask[None, None].float(), size=(new_h, new_w), mode="nearest")[0, 0] > 0.5

    # Pad to at least the crop size with the mean colour, the image at a random corner (padding ignore-labelled).
    pad_h, pad_w = max(size - new_h, 0), max(size - new_w, 0)
    valid = torch.ones(new_h, new_w, dtype=torch.bool, device=mask.device)
    if pad_h or pad_w:
        corner = _randint(rng, 0, 3)
        top = pad_h if corner in (0, 1) else 0
        left = pad_w if corner in (0, 2) else 0
        fill = image.mean(dim=(1, 2))
        padded = fill[:, None, None].expand(3, new_h + pad_h, new_w + pad_w).clone()
        padded[:, top : top + new_h, left : left + new_w] = image
        grid = torch.zeros(new_h + pad_h, new_w + pad_w, dtype=torch.bool, device=mask.device)
        mask_grid, valid_grid = grid.clone(), grid.clone()
        mask_grid[top : top + new_h, left : left + new_w] = mask
        valid_grid[top : top + new_h, left : left + new_w] = True
        image, mask, valid = padded, mask_grid, valid_grid

    crop_top = _randint(rng, 0, image.shape[1] - size)
    crop_left = _randint(rng, 0, image.shape[2] - size)
    image = image[:, crop_top : crop_top + size, crop_left : crop_left + size]
    mask = mask[crop_top : crop_top + size, crop_left : crop_left + size]
    valid = valid[crop_top : crop_top + size, crop_left : crop_left + size]

    if _bernoulli(rng, config.hflip_prob):
        image, mask, valid = image.flip(-1), mask.flip(-1), valid.flip(-1)
    if _bernoulli(rng, config.jitter_prob):
        image = _colour_jitter(image, config, rng)
    if _bernoulli(rng, config.grayscale_prob):
        image = _grayscale(image).expand(3, -1, -1)
    if _bernoulli(rng, config.blur_prob):
        sigma = _uniform(rng, *config.blur_sigma_range)
        kernel = max(3, int(config.blur_kernel_fraction * size) // 2 * 2 + 1)
        image = _gaussian_blur(image, kernel, sigma)
    return AugmentedSource(
        image=image.contiguous(), mask=mask.contiguous(), valid=valid.contiguous(), category=source.category
    )


def _bbox(mask: Tensor) -> tuple[int, int, int, int] | None:
    """Inclusive-exclusive ``(top, left, bottom, right)`` of a non-empty mask, ``None`` for an empty one."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def compose(
    pieces: Sequence[AugmentedSource], offsets: Sequence[tuple[int, int]], *, ignore_index: int = 255
) -> CopyPasteSample:
    """Paste the pieces onto the first one (deterministic; :func:`copy_paste` draws the offsets).

    Args:
        pieces: ``N >= 1`` augmented sources of one crop size ``S``; ``pieces[0]`` is the canvas.
        offsets: ``N - 1`` ``(top, left)`` canvas positions of the mask bounding boxes of ``pieces[1:]``; the box
            must lie fully inside the canvas. Ignored (any value) for a piece whose mask is empty.
        ignore_index: Semantic label of canvas padding.

    Returns:
        :class:`CopyPasteSample`.

    Raises:
        ValueError: no pieces, sizes differ, wrong number of offsets, a box outside the canvas, or a category equal
            to ``ignore_index``.
    """
    if len(pieces) == 0:
        raise ValueError("pieces must hold at least the canvas, got none")
    if len(offsets) != len(pieces) - 1:
        raise ValueError(
            f"offsets must give one (top, left) per pasted piece: {len(pieces) - 1} for {len(pieces)} pieces, got "
            f"{len(offsets)}"
        )
    if ignore_index == 0:
        raise ValueError("ignore_index must not be 0, the background label")
    canvas = pieces[0]
    size = int(canvas.image.shape[1])
    for i, piece in enumerate(pieces):
        if tuple(piece.image.shape) != (3, size, size):
            raise ValueError(
                f"pieces[{i}].image is {tuple(piece.image.shape)} but the canvas is (3, {size}, {size}); augment "
                "every source with the same crop_size"
            )
        if piece.category == ignore_index:
            raise ValueError(f"pieces[{i}].category equals ignore_index={ignore_index}; use another ignore_index")

    image = canvas.image.clone()
    semantic = torch.full((size, size), ignore_index, dtype=torch.int64, device=image.device)
    semantic[canvas.valid] = 0
    semantic[canvas.mask] = canvas.category
    instances = torch.zeros(len(pieces), size, size, dtype=torch.bool, device=image.device)
    instances[0] = canvas.mask
    boxes = torch.zeros(len(pieces), 4, dtype=torch.int64, device=image.device)
    canvas_box = _bbox(canvas.mask)
    if canvas_box is not None:
        boxes[0] = torch.tensor(canvas_box, device=image.device)

    for i, (piece, (top, left)) in enumerate(zip(pieces[1:], offsets, strict=True), start=1):
        box = _bbox(piece.mask)
        if box is None:
            continue
        y0, x0, y1, x1 = box
        box_h, box_w = y1 - y0, x1 - x0
        if not (0 <= top <= size - box_h and 0 <= left <= size - box_w):
            raise ValueError(
                f"offsets[{i - 1}] = {(top, left)} puts the {box_h}x{box_w} box of pieces[{i}] outside the "
                f"{size}x{size} canvas; top must be in [0, {size - box_h}] and left in [0, {size - box_w}]"
            )
        placed = torch.zeros(size, size, dtype=torch.bool, device=image.device)
        placed[top : top + box_h, left : left + box_w] = piece.mask[y0:y1, x0:x1]
        window = image[:, top : top + box_h, left : left + box_w]
        cut = piece.image[:, y0:y1, x0:x1].to(image)
        region = piece.mask[y0:y1, x0:x1]
        window[:, region] = cut[:, region]
        semantic[placed] = piece.category
        instances[:i] &= ~placed
        instances[i] = placed
        boxes[i] = torch.tensor([top, left, top + box_h, left + box_w], device=image.device)

    categories = torch.tensor([piece.category for piece in pieces], dtype=torch.int64, device=image.device)
    visible = instances.flatten(1).any(dim=1)
    return CopyPasteSample(
        image=image, semantic=semantic, instances=instances, categories=categories, visible=visible, boxes=boxes
    )


def copy_paste(sources: Sequence[PasteSource], config: CopyPasteConfig, generator: torch.Generator) -> CopyPasteSample:
    """Synthesise one multi-object training image from ``N`` sources (ZUTIS Sec. 3.2; code order).

    Each source is augmented by :func:`augment_source` (in order, from one generator), then every non-canvas piece
    with a non-empty mask gets a uniform ``(top, left)`` keeping its mask box inside the canvas, and
    :func:`compose` pastes them.

    Args:
        sources: ``N >= 1`` sources (e.g. chosen by :func:`sample_sources`); the first is the canvas.
        config: Augmentation and label settings.
        generator: The random source (CPU ``torch.Generator``): a fixed seed gives the same sample.

    Returns:
        :class:`CopyPasteSample` with ``S = config.crop_size``.

    Raises:
        ValueError: no sources, or a category equal to ``config.ignore_index``.
    """
    rng = _check_generator(generator)
    if len(sources) == 0:
        raise ValueError("sources must hold at least one PasteSource (the canvas), got none")
    for i, source in enumerate(sources):
        if not isinstance(source, PasteSource):
            raise TypeError(f"sources[{i}] must be a PasteSource, got {type(source).__name__}")
        if source.category == config.ignore_index:
            raise ValueError(
                f"sources[{i}].category equals config.ignore_index={config.ignore_index}; use another ignore_index"
            )
    pieces = [augment_source(source, config, rng) for source in sources]
    size = config.crop_size
    offsets: list[tuple[int, int]] = []
    for piece in pieces[1:]:
        box = _bbox(piece.mask)
        if box is None:
            offsets.append((0, 0))
            continue
        box_h, box_w = box[2] - box[0], box[3] - box[1]
        offsets.append((_randint(rng, 0, size - box_h), _randint(rng, 0, size - box_w)))
    return compose(pieces, offsets, ignore_index=config.ignore_index)
