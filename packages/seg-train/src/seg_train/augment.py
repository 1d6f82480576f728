"""Joint image/label augmentations on tensors for training segmenters on (pseudo-)labels, torch only.

The default recipe is ReCo+'s (Shin, Albanie & Xie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer",
NeurIPS 2022, Appendix B.4; official code NoelShin/reco datasets/base_dataset.py), applied to an image that was
already resized and centre-cropped (320 px there):

1. random scale by ``s ~ U(0.5, 2.0)``: new size ``int(H * s), int(W * s)``; image bilinear (antialiased when
   shrinking, as PIL), label nearest (``floor((i + 0.5) * in / out)``, PIL's rule), so labels never blend;
2. random crop to ``crop_size``: first pad bottom and right up to the crop size, the image with its own mean colour
   (the official code's choice) and the label with ``ignore_index`` (255), then a uniform crop offset;
3. horizontal flip with p=0.5, image and label together;
4. colour jitter with p=0.8 (torchvision ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` semantics: brightness, contrast and
   saturation factors ``~ U(max(0, 1 - x), 1 + x)``, hue shift ``~ U(-0.2, 0.2)`` of a turn, the four applied in a
   random order, each result clamped to [0, 1]);
5. Gaussian blur with an odd kernel of 10% of the short side (``int(0.1 * min(H, W) // 2 * 2) + 1``: 33 px at
   320, 7 px at 64). The paper gives only the kernel size; the probability 0.5 and ``sigma ~ U(0.1, 2.0)`` px are
   the official code's (its SimCLR-style blur class), kept so the recipe matches what produced the published
   numbers. Border handling reflects without repeating the edge pixel (OpenCV's default, the official backend).

Everything random is drawn from the ``torch.Generator`` passed in, in a fixed order, so one seed gives one
augmented pair on any machine. Labels only ever hold input values or ``ignore_index``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_core import SegModel

__all__ = [
    "SegAugmentConfig",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "augment_batch",
    "augment_pair",
    "blur_kernel_size",
    "gaussian_blur",
]

# ITU-R 601-2 luma, the weights PIL and torchvision use for grayscale.
_LUMA = (0.299, 0.587, 0.114)


class SegAugmentConfig(SegModel):
    """A joint image/label augmentation recipe; the defaults are ReCo+'s (see the module docstring).

    Attributes:
        crop_size: Output size, ``int`` for a square or ``(height, width)`` (320 in ReCo+; 64 for the synthetic
            world).
        scale_range: Bounds of the uniform random scale factor.
        hflip_prob: Probability of a horizontal flip.
        jitter_prob: Probability of applying colour jitter at all.
        brightness, contrast, saturation: Jitter strengths ``x``: factors ``~ U(max(0, 1 - x), 1 + x)``.
        hue: Largest hue shift in turns (0.5 = 180 degrees): shift ``~ U(-hue, hue)``.
        blur_prob: Probability of a Gaussian blur.
        blur_sigma: Bounds of the uniform blur sigma, in pixels.
        blur_kernel_fraction: Blur kernel size as a fraction of the short side (made odd, at least 1).
        pad_colour: RGB fill in [0, 1] for padding; ``None``: the mean colour of the scaled image (official).
        ignore_index: Label value of padded pixels.
    """

    crop_size: int | tuple[int, int] = 320
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    pad_colour: tuple[float, float, float] | None = None
    ignore_index: int = 255

    def model_post_init(self, context: Any, /) -> None:
        """Range checks, one ``field: problem (got value)`` line each.

        Written as a post-init hook rather than with pydantic's ``Field``/validators so seg-train imports only the
        dependencies it declares (seg-core brings pydantic, but seg-train does not import it).
        """
        problems: list[str] = []

        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                problems.append(f"{name}: {rule} (got {getattr(self, name)!r})")

        sizes = (self.crop_size,) if isinstance(self.crop_size, int) else self.crop_size
        check("crop_size", all(size >= 1 for size in sizes), "sizes must be >= 1")
        for name in ("scale_range", "blur_sigma"):
            low, high = getattr(self, name)
            check(name, 0.0 < low <= high, "needs 0 < low <= high; give (low, high)")
        for name in ("hflip_prob", "jitter_prob", "blur_prob"):
            check(name, 0.0 <= getattr(self, name) <= 1.0, "a probability must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            check(name, getattr(self, name) >= 0.0, "must be >= 0")
        check("hue", 0.0 <= self.hue <= 0.5, "must be in [0, 0.5] turns")
        check("blur_kernel_fraction", 0.0 < self.blur_kernel_fraction <= 1.0, "must be in (0, 1]")
        if self.pad_colour is not None:
            check(
                "pad_colour",
                all(0.0 <= value <= 1.0 for value in self.pad_colour),
                "an RGB colour in [0, 1] (images here are in [0, 1], not 0-255)",
            )
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def crop_hw(self) -> tuple[int, int]:
        """``crop_size`` as ``(height, width)``."""
        if isinstance(self.crop_size, int):
            return self.crop_size, self.crop_size
        return self.crop_size


# ---------------------------------------------------------------------------------------------------------------
# Photometric operations (deterministic given their factors)
# ---------------------------------------------------------------------------------------------------------------


def _check_image(image: Tensor, name: str = "image") -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must be [3, H, W] RGB, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got {image.dtype} (divide uint8 images by 255)")


def _grayscale(image: Tensor) -> Tensor:
    """``[3, H, W] -> [1, H, W]`` luma."""
    r, g, b = image.unbind(0)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(0)


def _blend(image: Tensor, other: Tensor, factor: float) -> Tensor:
    return (factor * image + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(image: Tensor, factor: float) -> Tensor:
    """Scale intensities: ``clamp(factor * image, 0, 1)``.

    Args:
        image: ``[3, H, W]`` RGB in [0, 1].
        factor: >= 0; 1 leaves the image unchanged.

    Returns:
        ``[3, H, W]`` in [0, 1].
    """
    _check_image(image)
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    return _blend(image, torch.zeros_like(image), factor)


def adjust_contrast(image: Tensor, factor: float) -> Tensor:
    """Blend with the image's mean luma: ``clamp(factor * image + (1 - factor) * mean_gray, 0, 1)``.

    Args:
        image: ``[3, H, W]`` RGB in [0, 1].
        factor: >= 0; 0 gives a flat grey image, 1 leaves the image unchanged.

    Returns:
        ``[3, H, W]`` in [0, 1].
    """
    _check_image(image)
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    return _blend(image, _grayscale(image).mean(), factor)


def adjust_saturation(image: Tensor, factor: float) -> Tensor:
    """Blend with the per-pixel luma: ``clamp(factor * image + (1 - factor) * gray, 0, 1)``.

    Args:
        image: ``[3, H, W]`` RGB in [0, 1].
        factor: >= 0; 0 gives grayscale, 1 leaves the image unchanged.

    Returns:
        ``[3, H, W]`` in [0, 1].
    """
    _check_image(image)
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    return _blend(image, _grayscale(image), factor)


def _rgb_to_hsv(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r, g, b = image.unbind(0)
    value, _ = image.max(dim=0)
    delta = value - image.min(dim=0).values
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = delta.clamp_min(1e-12)
    # Sector by which channel is the maximum (ties resolved r, then g, then b, as colorsys); grey pixels get 0.
    hue = torch.where(
        value == r,
        torch.remainder((g - b) / safe, 6.0),
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    return hue, saturation, value


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    scaled = hue * 6.0
    sector = torch.floor(scaled)
    fraction = scaled - sector
    sector = torch.remainder(sector, 6.0).long()
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # (r, g, b) per sector 0..5 of the hexcone.
    table = torch.stack(
        [
            torch.stack([value, t, p]),
            torch.stack([q, value, p]),
            torch.stack([p, value, t]),
            torch.stack([p, q, value]),
            torch.stack([t, p, value]),
            torch.stack([value, p, q]),
        ]
    )  # [6, 3, H, W]
    index = sector.unsqueeze(0).unsqueeze(0).expand(1, 3, *sector.shape)
    return table.gather(0, index).squeeze(0)


def adjust_hue(image: Tensor, shift: float) -> Tensor:
    """Rotate the hue by ``shift`` turns in HSV space (saturation and value unchanged).

    Pure red ``(1, 0, 0)`` shifted by ``1/3`` is pure green; by ``0.1`` (36 degrees) it is ``(1, 0.6, 0)``.

    Args:
        image: ``[3, H, W]`` RGB in [0, 1].
        shift: In [-0.5, 0.5] turns.

    Returns:
        ``[3, H, W]`` in [0, 1].
    """
    _check_image(image)
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"shift must be in [-0.5, 0.5] turns, got {shift}")
    hue, saturation, value = _rgb_to_hsv(image)
    hue = torch.remainder(hue + shift, 1.0)
    return _hsv_to_rgb(hue, saturation, value).clamp(0.0, 1.0)


def blur_kernel_size(height: int, width: int, fraction: float = 0.1) -> int:
    """Odd Gaussian kernel size of ``fraction`` of the short side: ``int(fraction * min(H, W) // 2 * 2) + 1``.

    ReCo+'s rule (10%): 320 px -> 33, 64 px -> 7, below 20 px -> 1 (no blur).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return int(fraction * min(height, width) // 2 * 2) + 1


def gaussian_blur(image: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur with a normalised ``kernel_size`` taps kernel and reflect (no edge repeat) borders.

    Args:
        image: ``[C, H, W]`` float.
        kernel_size: Odd, >= 1 (1 returns the image), and ``kernel_size // 2 < min(H, W)``.
        sigma: Standard deviation in pixels, > 0.

    Returns:
        ``[C, H, W]``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if image.ndim != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a float [C, H, W] tensor, got {image.dtype} {tuple(image.shape)}")
    radius = kernel_size // 2
    if radius == 0:
        return image
    if radius >= min(image.shape[-2:]):
        raise ValueError(f"kernel_size {kernel_size} too large for a {tuple(image.shape[-2:])} image")
    offsets = torch.arange(kernel_size, dtype=image.dtype, device=image.device) - radius
    weights = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    weights = weights / weights.sum()
    channels = image.shape[0]
    x = F.pad(image.unsqueeze(0), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, weights.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    x = F.conv2d(x, weights.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)
    return x.squeeze(0)


# ---------------------------------------------------------------------------------------------------------------
# Geometric operations on a pair
# ---------------------------------------------------------------------------------------------------------------


def _nearest_indices(size_in: int, size_out: int, device: torch.device) -> Tensor:
    # PIL's NEAREST (torch "nearest-exact"): the source pixel whose centre is nearest the output pixel's centre.
    positions = (torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * (size_in / size_out)
    return positions.floor().long().clamp_(0, size_in - 1)


def _resize_pair(image: Tensor, label: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    height, width = size
    if (height, width) == tuple(image.shape[-2:]):
        return image, label
    shrinking = height < image.shape[-2] or width < image.shape[-1]
    resized = F.interpolate(
        image.unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
    ).squeeze(0)
    rows = _nearest_indices(int(label.shape[0]), height, label.device)
    cols = _nearest_indices(int(label.shape[1]), width, label.device)
    return resized.clamp(0.0, 1.0), label[rows][:, cols]


def _pad_pair(
    image: Tensor, label: Tensor, crop_hw: tuple[int, int], fill: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor]:
    height, width = int(image.shape[-2]), int(image.shape[-1])
    out_h, out_w = max(height, crop_hw[0]), max(width, crop_hw[1])
    if (out_h, out_w) == (height, width):
        return image, label
    padded = fill.to(image).view(3, 1, 1).expand(3, out_h, out_w).clone()
    padded[:, :height, :width] = image
    padded_label = torch.full((out_h, out_w), ignore_index, dtype=label.dtype, device=label.device)
    padded_label[:height, :width] = label
    return padded, padded_label


# ---------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, device=generator.device))


def _randint(generator: torch.Generator, high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=generator, device=generator.device))


def _jitter(image: Tensor, config: SegAugmentConfig, generator: torch.Generator) -> Tensor:
    brightness = _uniform(generator, max(0.0, 1.0 - config.brightness), 1.0 + config.brightness)
    contrast = _uniform(generator, max(0.0, 1.0 - config.contrast), 1.0 + config.contrast)
    saturation = _uniform(generator, max(0.0, 1.0 - config.saturation), 1.0 + config.saturation)
    hue = _uniform(generator, -config.hue, config.hue)
    order = torch.randperm(4, generator=generator, device=generator.device).tolist()
    for op in order:
        if op == 0:
            image = adjust_brightness(image, brightness)
        elif op == 1:
            image = adjust_contrast(image, contrast)
        elif op == 2:
            image = adjust_saturation(image, saturation)
        elif hue != 0.0:
            image = adjust_hue(image, hue)
    return image


def augment_pair(
    image: Tensor, label: Tensor, config: SegAugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Augment one image and its label map together (scale, pad/crop, flip, jitter, blur; module docstring).

    Draw order from ``generator``: scale, crop top, crop left, flip, jitter gate (then, if applied, brightness,
    contrast, saturation, hue factors and the order), blur gate (then, if applied, sigma).

    Args:
        image: ``[3, H, W]`` float RGB in [0, 1].
        label: ``[H, W]`` integer class map (``torch.long`` usually).
        config: The recipe.
        generator: Source of every random draw (any device; draws happen on its device).

    Returns:
        ``image [3, h, w]`` in [0, 1] and ``label [h, w]`` (input dtype), ``(h, w) = config.crop_hw``. Label values
        are input values or ``config.ignore_index``.

    Raises:
        TypeError: A non-float image, a non-integer label or a config that is not a :class:`SegAugmentConfig`.
        ValueError: Wrong shapes, mismatched sizes, or image values outside [0, 1].
    """
    _check_image(image)
    if not isinstance(label, Tensor):
        raise TypeError(f"label must be a torch.Tensor, got {type(label).__name__}")
    if label.ndim != 2:
        raise ValueError(f"label must be an [H, W] class map, got shape {tuple(label.shape)}")
    if label.is_floating_point() or label.dtype == torch.bool:
        raise TypeError(f"label must hold integer class ids (torch.long), got {label.dtype}")
    if tuple(label.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"label {tuple(label.shape)} and image {tuple(image.shape[-2:])} differ in size")
    if not isinstance(config, SegAugmentConfig):
        raise TypeError(f"config must be a SegAugmentConfig, got {type(config).__name__}")
    if image.numel() and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
        raise ValueError(
            f"image values must be in [0, 1], got [{float(image.min()):.3g}, {float(image.max()):.3g}]; "
            "augment before normalising"
        )

    # 1. Random scale (truncating sizes as the official code; never below 1 px).
    scale = _uniform(generator, *config.scale_range)
    size = (max(1, int(image.shape[-2] * scale)), max(1, int(image.shape[-1] * scale)))
    image, label = _resize_pair(image, label, size)

    # 2. Pad bottom/right to the crop size, then a uniform crop.
    crop_h, crop_w = config.crop_hw
    fill = image.mean(dim=(1, 2)) if config.pad_colour is None else torch.tensor(config.pad_colour)
    image, label = _pad_pair(image, label, (crop_h, crop_w), fill, config.ignore_index)
    top = _randint(generator, int(image.shape[-2]) - crop_h)
    left = _randint(generator, int(image.shape[-1]) - crop_w)
    image = image[:, top : top + crop_h, left : left + crop_w]
    label = label[top : top + crop_h, left : left + crop_w]

    # 3. Horizontal flip of both.
    if _uniform(generator, 0.0, 1.0) < config.hflip_prob:
        image = image.flip(-1)
        label = label.flip(-1)

    # 4. Colour jitter (image only).
    if _uniform(generator, 0.0, 1.0) < config.jitter_prob:
        image = _jitter(image, config, generator)

    # 5. Gaussian blur with a kernel of a fraction of the (cropped) short side.
    if _uniform(generator, 0.0, 1.0) < config.blur_prob:
        sigma = _uniform(generator, *config.blur_sigma)
        kernel = blur_kernel_size(crop_h, crop_w, config.blur_kernel_fraction)
        image = gaussian_blur(image, kernel, sigma)

    return image.contiguous(), label.contiguous()


def augment_batch(
    images: Tensor, labels: Tensor, config: SegAugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """:func:`augment_pair` on each pair of a batch in order (independent draws), stacked.

    Args:
        images: ``[B, 3, H, W]`` float RGB in [0, 1].
        labels: ``[B, H, W]`` integer class maps.
        config: The recipe.
        generator: Source of every random draw; pair ``i`` uses the draws after pair ``i - 1``'s.

    Returns:
        ``images [B, 3, h, w]`` and ``labels [B, h, w]`` with ``(h, w) = config.crop_hw``.
    """
    if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images must be [B, 3, H, W] and labels [B, H, W] with the same B, got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    pairs = [augment_pair(image, label, config, generator) for image, label in zip(images, labels, strict=True)]
    if not pairs:
        crop_h, crop_w = config.crop_hw
        return images.new_empty((0, 3, crop_h, crop_w)), labels.new_empty((0, crop_h, crop_w))
    return torch.stack([pair[0] for pair in pairs]), torch.stack([pair[1] for pair in pairs])
