"""Image-level multi-label hypotheses from sliding crops scored by CLIP (ReCLIP++, Eq. 6), and ReCLIP's baseline.

Wang et al., "ReCLIP++: Learn to Rectify the Bias of CLIP for Unsupervised Semantic Segmentation" (TPAMI), Sec. III-D:
a window of ``r`` times the image's height and width slides over the image with a stride of half the window; every
crop is encoded by CLIP's image encoder and assigned the class whose Query text feature is most similar; ``f(k)`` is
the fraction of the image's crops assigned class ``k`` and the hypotheses are ``H = {k : f(k) > t}`` (Eq. 6). The
paper uses ``r = 1/6`` everywhere, ``t = 7%`` on VOC and Cityscapes and ``t = 0`` elsewhere.

- :func:`crop_windows`: the sliding windows of one image size.
- :func:`multi_label_hypotheses`: Eq. 6 for a batch of images, crops batched through the encoder.
- :func:`whole_image_hypotheses`: ReCLIP (v1)'s hypotheses from the whole image's embedding (the "w/o. crop" baseline
  of ReCLIP++'s Fig. 3): classes whose cosine similarity reaches a threshold, or the top-k classes.

Differences from the official code (dogehhh/ReCLIP ``tools/pseudo_class.py``), see
docs/reference/official-implementations.md §3:

- The official loop starts windows at ``range(0, side - window, stride)``, so it never places the window flush with
  the bottom/right border and leaves the last rows/columns uncovered; ``crop_windows(include_last=False)``
  reproduces that, the default adds the flush windows (the paper: the window slides across the image).
- The official window is a square of ``CROP_SIZE / 6`` pixels (56 px for VOC's 336 crop) on the original image, not
  ``r`` times each side; pass the images at the size that gives the wanted window.
- The official code implements only ``t = 0`` (every class that is top-1 in some crop) and feeds each crop through
  CLIP's preprocessing (bicubic resize of the short side to 224 and centre crop); here each crop is resized
  bilinearly with antialiasing to ``input_size`` (the crops are already normalised, as the images passed in are).

Depends on torch only; the encoder is the caller's (e.g. ``seg_models``' CLIP), passed in as a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Hypotheses",
    "WholeImageHypotheses",
    "crop_windows",
    "multi_label_hypotheses",
    "whole_image_hypotheses",
]

ImageEncoder = Callable[[Tensor], Tensor]
"""``[n, 3, h, w]`` normalised images -> ``[n, D]`` global image embeddings (e.g. CLIP's ``encode_image``)."""

Window = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Hypotheses:
    """Output of :func:`multi_label_hypotheses`.

    Attributes:
        labels: ``[B, C]`` bool, the hypotheses ``H`` of each image (``f(k) > t``, Eq. 6).
        frequencies: ``[B, C]`` float32, ``f(k)``: the fraction of the image's crops whose top-1 class is ``k`` (each
            row sums to 1).
        num_crops: Number of crops per image (the same for every image of the batch).
    """

    labels: Tensor
    frequencies: Tensor
    num_crops: int


@dataclass(frozen=True, eq=False)
class WholeImageHypotheses:
    """Output of :func:`whole_image_hypotheses`.

    Attributes:
        labels: ``[B, C]`` bool, the hypotheses of each image.
        scores: ``[B, C]`` float32 cosine similarity of the whole image's embedding with each class's text feature
            (no logit scale).
    """

    labels: Tensor
    scores: Tensor


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _starts(side: int, window: int, stride: int, include_last: bool) -> list[int]:
    if include_last:
        starts = list(range(0, side - window + 1, stride))
        if starts[-1] + window < side:
            starts.append(side - window)
        return starts
    return list(range(0, side - window, stride))


def crop_windows(height: int, width: int, ratio: float, *, include_last: bool = True) -> list[Window]:
    """Sliding windows of ReCLIP++'s hypothesis generation (Sec. III-D), row-major.

    The window is ``round(ratio · height)`` by ``round(ratio · width)`` pixels (rounded half up, at least 1) and the
    stride half the window (``window // 2``, at least 1) on each axis. Window tops are ``0, s, 2s, ...`` while the
    window fits; with ``include_last=True`` (default, the paper) a last window flush with the border is added when
    the regular ones stop short of it, so every pixel is covered. ``include_last=False`` reproduces the official
    loop ``range(0, side - window, stride)``, which excludes every window that ends at the border (even one that the
    stride lands on exactly) and leaves the last rows/columns uncovered; e.g. 12x12 at ratio 0.5 (window 6,
    stride 3) gives tops ``0, 3, 6`` and 9 windows with the default, tops ``0, 3`` and 4 windows officially.

    Args:
        height: Image height in pixels (>= 1).
        width: Image width in pixels (>= 1).
        ratio: ``r``, the window size as a fraction of each side, ``0 < ratio <= 1`` (paper: 1/6).
        include_last: Add the border-flush windows (paper, default) or not (official code).

    Returns:
        ``(top, left, h, w)`` of every window, rows of windows top to bottom, each left to right.

    Raises:
        ValueError: On a non-positive size, a ratio outside ``(0, 1]``, or when ``include_last=False`` leaves no
            window (the window spans a whole side).
    """
    for name, side in (("height", height), ("width", width)):
        if int(side) != side or side < 1:
            raise ValueError(f"{name} must be a positive int (pixels), got {side!r}")
    r = float(ratio)
    if not (math.isfinite(r) and 0 < r <= 1):
        raise ValueError(
            f"ratio must satisfy 0 < ratio <= 1 (the window as a fraction of each side, paper 1/6), got {ratio!r}"
        )
    window_h = min(height, max(1, _round_half_up(r * height)))
    window_w = min(width, max(1, _round_half_up(r * width)))
    tops = _starts(height, window_h, max(1, window_h // 2), include_last)
    lefts = _starts(width, window_w, max(1, window_w // 2), include_last)
    if not tops or not lefts:
        raise ValueError(
            f"include_last=False leaves no window for a {height}x{width} image at ratio={ratio!r} (window "
            f"{window_h}x{window_w}): the official loop range(0, side - window, stride) is empty when the window spans "
            f"a side; use a smaller ratio or include_last=True"
        )
    return [(top, left, window_h, window_w) for top in tops for left in lefts]


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(
            f"images must be a [B, 3, H, W] tensor of normalised images with B >= 1, got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point (normalised pixels), got dtype {images.dtype}")


def _check_text(text: Tensor) -> None:
    if text.ndim != 2 or text.shape[0] < 1 or not text.is_floating_point():
        raise ValueError(
            f"text must be a floating-point [C, D] tensor of class text features with C >= 1, got "
            f"{tuple(text.shape)} of {text.dtype}"
        )


def _check_input_size(input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    values = list(input_size)
    if len(values) != 2 or not all(int(v) == v and v > 0 for v in values):
        raise ValueError(f"input_size must be None or (h, w), two positive ints (e.g. (224, 224)), got {input_size!r}")
    return int(values[0]), int(values[1])


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (crops per encoder call), got {batch_size!r}")
    return batch_size


def _encode_top1(
    chunks: Iterator[Tensor], encode_image: ImageEncoder, text: Tensor, input_size: tuple[int, int] | None
) -> tuple[Tensor, Tensor]:
    """Encode each chunk (resized to ``input_size``), return (top-1 class, cosine scores) of all rows, in order."""
    text_unit = F.normalize(text.float(), dim=-1)
    top1: list[Tensor] = []
    scores: list[Tensor] = []
    for chunk in chunks:
        batch = chunk
        if input_size is not None and tuple(batch.shape[2:]) != input_size:
            batch = F.interpolate(batch, size=input_size, mode="bilinear", align_corners=False, antialias=True)
        embeddings = encode_image(batch)
        if embeddings.shape != (batch.shape[0], text.shape[1]):
            raise ValueError(
                f"encode_image must return [n, D] = [{batch.shape[0]}, {text.shape[1]}] embeddings for n images (D "
                f"of text), got {tuple(embeddings.shape)}"
            )
        cosine = F.normalize(embeddings.float(), dim=-1) @ text_unit.to(embeddings.device).t()
        scores.append(cosine)
        top1.append(cosine.argmax(dim=1))
    return torch.cat(top1), torch.cat(scores)


def multi_label_hypotheses(
    images: Tensor,
    encode_image: ImageEncoder,
    text: Tensor,
    *,
    ratio: float,
    threshold: float = 0.0,
    input_size: tuple[int, int] | None = None,
    batch_size: int = 256,
    include_last: bool = True,
) -> Hypotheses:
    """ReCLIP++'s image-level multi-label hypotheses (Eq. 6): top-1 classes of sliding crops, thresholded frequencies.

    Every window of :func:`crop_windows` is cut from every image, resized (bilinear, antialiased) to ``input_size``
    when given, encoded by ``encode_image`` in chunks of ``batch_size`` crops (the crops of all images together, in
    image order), and assigned the class of highest cosine similarity between its embedding and ``text`` (ties: the
    lower class index). ``f(k)`` is the fraction of the image's crops assigned ``k``, and ``k`` is a hypothesis when
    ``f(k) > threshold``, strictly (Eq. 6), evaluated exactly as ``count_k > threshold · num_crops`` in double
    precision; ``threshold=0`` keeps every class that is top-1 in at least one crop (the official code). With
    ``threshold > 0`` an image can end up without hypotheses; :func:`seg_losses.rectification.rectification_loss`
    then ignores it. Runs under ``torch.no_grad()``.

    Args:
        images: ``[B, 3, H, W]`` images, already normalised for the encoder (all of one size).
        encode_image: Maps ``[n, 3, h, w]`` crops to ``[n, D]`` global embeddings (normalised here).
        text: ``[C, D]`` Query text features ``W_q`` (normalised here).
        ratio: ``r``, the window as a fraction of the image side, ``0 < ratio <= 1`` (paper: 1/6).
        threshold: ``t`` of Eq. 6 in ``[0, 1)`` (paper: 0.07 on VOC and Cityscapes, 0 elsewhere).
        input_size: ``(h, w)`` the crops are resized to before encoding (e.g. ``(224, 224)`` for CLIP ViT-B/16), or
            ``None`` to encode them at their size.
        batch_size: Crops per ``encode_image`` call (>= 1); the result does not depend on it.
        include_last: See :func:`crop_windows` (default ``True``, the paper; ``False``, the official windows).

    Returns:
        :class:`Hypotheses` with ``labels`` and ``frequencies`` on ``images``' device.
    """
    _check_images(images)
    _check_text(text)
    size = _check_input_size(input_size)
    chunk = _check_batch_size(batch_size)
    t = float(threshold)
    if not (math.isfinite(t) and 0 <= t < 1):
        raise ValueError(f"threshold must satisfy 0 <= threshold < 1 (t of Eq. 6, a crop frequency), got {threshold!r}")
    windows = crop_windows(int(images.shape[2]), int(images.shape[3]), ratio, include_last=include_last)
    batch, classes, per_image = images.shape[0], text.shape[0], len(windows)
    crops = [(b, window) for b in range(batch) for window in windows]

    def chunks() -> Iterator[Tensor]:
        for start in range(0, len(crops), chunk):
            yield torch.stack(
                [images[b, :, top : top + h, left : left + w] for b, (top, left, h, w) in crops[start : start + chunk]]
            )

    with torch.no_grad():
        top1, _ = _encode_top1(chunks(), encode_image, text, size)
        top1 = top1.to(images.device).view(batch, per_image)
        counts = torch.zeros(batch, classes, dtype=torch.long, device=images.device)
        counts.scatter_add_(1, top1, torch.ones_like(top1))
    minimum_count = math.floor(t * per_image) + 1  # count > t·n  <=>  count >= floor(t·n) + 1 for integer counts
    return Hypotheses(
        labels=counts >= minimum_count,
        frequencies=counts.float() / per_image,
        num_crops=per_image,
    )


def whole_image_hypotheses(
    images: Tensor,
    encode_image: ImageEncoder,
    text: Tensor,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    fallback_top_k: int | None = None,
    input_size: tuple[int, int] | None = None,
    batch_size: int = 256,
) -> WholeImageHypotheses:
    """ReCLIP (v1)'s hypotheses from the whole image: thresholded cosine similarity, or the top-k classes.

    ``scores[b, k]`` is the cosine similarity of image ``b``'s embedding with ``text[k]`` (no logit scale: the
    official thresholds on ``100 · cos`` -- VOC 23, Context 20, ADE 21, Cityscapes 21.5, COCO-Stuff 20 -- are
    ``threshold`` 0.23, 0.20, 0.21, 0.215, 0.20 here). Exactly one of ``threshold`` and ``top_k`` selects the rule:

    - ``threshold``: ``labels = scores >= threshold``; with ``fallback_top_k`` an image where no class reaches it
      gets its ``fallback_top_k`` best classes instead (the official ReCLIP rule, K = 2/6/5/2/8 on
      VOC/Context/ADE/Cityscapes/COCO-Stuff);
    - ``top_k``: the ``top_k`` best classes of every image (ties: the lower class index).

    Runs under ``torch.no_grad()``.

    Args:
        images: ``[B, 3, H, W]`` normalised images.
        encode_image: Maps ``[n, 3, h, w]`` images to ``[n, D]`` global embeddings (normalised here).
        text: ``[C, D]`` class text features (normalised here).
        top_k: Number of classes per image, ``1 <= top_k <= C``.
        threshold: Cosine similarity a class must reach (``>=``).
        fallback_top_k: Only with ``threshold``: classes to take when none reaches it (``None``: none, the image
            keeps no hypothesis).
        input_size: ``(h, w)`` the images are resized to (bilinear, antialiased) before encoding, or ``None``.
        batch_size: Images per ``encode_image`` call (>= 1).

    Returns:
        :class:`WholeImageHypotheses` on ``images``' device.
    """
    _check_images(images)
    _check_text(text)
    size = _check_input_size(input_size)
    chunk = _check_batch_size(batch_size)
    classes = text.shape[0]
    if (top_k is None) == (threshold is None):
        raise ValueError(
            f"pass exactly one of top_k (the k best classes) and threshold (cosine >= threshold), got top_k={top_k!r} "
            f"and threshold={threshold!r}"
        )
    for name, k in (("top_k", top_k), ("fallback_top_k", fallback_top_k)):
        if k is not None and (int(k) != k or not 1 <= k <= classes):
            raise ValueError(f"{name} must be an int in [1, C={classes}], got {k!r}")
    if fallback_top_k is not None and threshold is None:
        raise ValueError("fallback_top_k only applies with threshold (it replaces an empty thresholded set); drop it")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite cosine similarity, e.g. 0.23, got {threshold!r}")

    def chunks() -> Iterator[Tensor]:
        for start in range(0, images.shape[0], chunk):
            yield images[start : start + chunk]

    with torch.no_grad():
        _, scores = _encode_top1(chunks(), encode_image, text, size)
        scores = scores.to(images.device)

        def best(k: int) -> Tensor:
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
            return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)

        if threshold is None:
            labels = best(top_k if top_k is not None else 1)
        else:
            labels = scores >= float(threshold)
            if fallback_top_k is not None:
                empty = ~labels.any(dim=1, keepdim=True)
                labels = torch.where(empty, best(fallback_top_k), labels)
    return WholeImageHypotheses(labels=labels, scores=scores)
