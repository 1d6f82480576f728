"""Pair counting shared by every confusion-style accumulator: validation plus one ``bincount``.

A confusion matrix over ``R`` target rows and ``K`` prediction columns is the histogram of the flat pair index
``target * K + pred``. Counting it is a single ``bincount``, done with numpy for numpy inputs and with torch (on the
tensors' device) for tensors. Nothing here allocates more than a few copies of one batch.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = ["LabelMap", "count_pairs", "first_bad_value"]

LabelMap: TypeAlias = "npt.NDArray[np.integer[Any]] | Tensor"
"""A map of integer class ids, any shape (``[H, W]``, ``[B, H, W]``, ...): a numpy array or a torch tensor."""

# Above this many histogram bins the "ignored rows land past the matrix" shortcut wastes memory; mask instead.
_MAX_SHORTCUT_BINS = 1 << 22
_TORCH_NATIVE_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def first_bad_value(values: npt.NDArray[Any] | Tensor, low: int, high: int, allowed: int | None = None) -> int:
    """Return one value of ``values`` outside ``[low, high)`` (and not equal to ``allowed``), for error messages.

    Only called once a range check has already failed, so its cost does not matter.
    """
    flat = values.reshape(-1)
    bad = (flat < low) | (flat >= high)
    if allowed is not None:
        bad = bad & (flat != allowed)
    return int(flat[bad][0].item())


def _check_pair_inputs(
    pred: LabelMap, target: LabelMap, *, pred_name: str, target_name: str
) -> tuple[LabelMap, LabelMap]:
    """Check dtypes and shapes; bring a numpy/torch mix onto the tensor's device."""
    for name, value in ((pred_name, pred), (target_name, target)):
        if isinstance(value, Tensor):
            if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
                hint = " (take logits.argmax(dim=1) first)" if name == pred_name else ""
                raise TypeError(f"{name} must hold integer class ids, got a {value.dtype} tensor{hint}")
        elif isinstance(value, np.ndarray):
            if not np.issubdtype(value.dtype, np.integer):
                hint = " (take logits.argmax(axis=1) first)" if name == pred_name else ""
                raise TypeError(f"{name} must hold integer class ids, got a {value.dtype} array{hint}")
        else:
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"{pred_name} has shape {tuple(pred.shape)} but {target_name} has shape {tuple(target.shape)}: they must "
            f"match pixel for pixel (resize the prediction to the label size with nearest interpolation)"
        )
    if isinstance(pred, Tensor) and not isinstance(target, Tensor):
        target = torch.from_numpy(np.ascontiguousarray(target)).to(pred.device)
    elif isinstance(target, Tensor) and not isinstance(pred, Tensor):
        pred = torch.from_numpy(np.ascontiguousarray(pred)).to(target.device)
    elif isinstance(pred, Tensor) and isinstance(target, Tensor) and pred.device != target.device:
        raise ValueError(
            f"{pred_name} is on {pred.device} but {target_name} is on {target.device}: move both to one device"
        )
    return pred, target


def count_pairs(
    pred: LabelMap,
    target: LabelMap,
    *,
    num_rows: int,
    num_cols: int,
    ignore_index: int | None,
    pred_name: str = "pred",
    target_name: str = "target",
) -> Tensor:
    """Count ``(target, pred)`` pairs into a ``[num_rows, num_cols]`` int64 matrix.

    ``counts[r, k]`` is the number of pixels whose target is ``r`` and whose prediction is ``k``. Pixels whose target
    equals ``ignore_index`` are skipped.

    Args:
        pred: Predicted ids, any shape, integer dtype, values in ``[0, num_cols)``.
        target: Target ids, same shape, values in ``[0, num_rows)`` or equal to ``ignore_index``.
        num_rows: Number of target classes ``R``.
        num_cols: Number of prediction ids ``K``.
        ignore_index: Target value to skip, or ``None`` to skip nothing.
        pred_name: Name of ``pred`` in error messages.
        target_name: Name of ``target`` in error messages.

    Returns:
        An int64 tensor ``[R, K]``; on the tensors' device for torch inputs, on the CPU for numpy inputs.

    Raises:
        TypeError: A non-integer input.
        ValueError: Shape mismatch, or a value out of range (the message names the value).
    """
    pred, target = _check_pair_inputs(pred, target, pred_name=pred_name, target_name=target_name)
    if isinstance(pred, Tensor) and isinstance(target, Tensor):
        return _count_pairs_torch(
            pred,
            target,
            num_rows=num_rows,
            num_cols=num_cols,
            ignore_index=ignore_index,
            names=(pred_name, target_name),
        )
    assert isinstance(pred, np.ndarray)
    assert isinstance(target, np.ndarray)
    counts = _count_pairs_numpy(
        pred, target, num_rows=num_rows, num_cols=num_cols, ignore_index=ignore_index, names=(pred_name, target_name)
    )
    return torch.from_numpy(counts)


def _uses_shortcut(ignore_index: int | None, num_rows: int, num_cols: int) -> bool:
    """Whether ignored targets can simply be counted into rows past the matrix and dropped.

    True when ``ignore_index`` is ``None`` or ``>= num_rows`` and not so large that its row is a huge allocation:
    ``target * K + pred`` of an ignored pixel then lands at or past ``R * K`` and no per-pixel mask is needed.
    """
    if ignore_index is None:
        return True
    return num_rows <= ignore_index and (ignore_index + 1) * num_cols <= _MAX_SHORTCUT_BINS


def _pred_range_error(pred_name: str, value: int, num_cols: int) -> ValueError:
    return ValueError(
        f"{pred_name} holds the id {value}, outside [0, {num_cols}): predictions must be class ids in [0, {num_cols}) "
        f"(map 'no class' predictions to a real class, or raise num_classes/num_clusters)"
    )


def _target_range_error(target_name: str, value: int, num_rows: int, ignore_index: int | None) -> ValueError:
    ignore = f" or the ignore_index {ignore_index}" if ignore_index is not None else ""
    return ValueError(
        f"{target_name} holds the id {value}, outside [0, {num_rows}){ignore}: check num_classes and ignore_index "
        f"against the dataset's label encoding"
    )


def _rows_past_matrix_error(
    extra: npt.NDArray[np.int64], num_rows: int, ignore_index: int | None, target_name: str
) -> ValueError | None:
    """Rows ``>= num_rows`` of the histogram must all be empty, except the ignore row."""
    for offset in np.flatnonzero(extra):
        row = num_rows + int(offset)
        if row != ignore_index:
            return _target_range_error(target_name, row, num_rows, ignore_index)
    return None


def _count_pairs_numpy(
    pred: npt.NDArray[np.integer[Any]],
    target: npt.NDArray[np.integer[Any]],
    *,
    num_rows: int,
    num_cols: int,
    ignore_index: int | None,
    names: tuple[str, str],
) -> npt.NDArray[np.int64]:
    pred_name, target_name = names
    if pred.size == 0:
        return np.zeros((num_rows, num_cols), dtype=np.int64)
    pred_flat = pred.reshape(-1)
    target_flat = target.reshape(-1)
    if int(pred_flat.min()) < 0 or int(pred_flat.max()) >= num_cols:
        raise _pred_range_error(pred_name, first_bad_value(pred_flat, 0, num_cols), num_cols)
    low, high = int(target_flat.min()), int(target_flat.max())
    matrix_bins = num_rows * num_cols
    if _uses_shortcut(ignore_index, num_rows, num_cols):
        limit = num_rows if ignore_index is None else max(num_rows, ignore_index + 1)
        if low < 0 or high >= limit:
            bad = first_bad_value(target_flat, 0, num_rows, ignore_index)
            raise _target_range_error(target_name, bad, num_rows, ignore_index)
        index = target_flat.astype(np.intp)
        index *= num_cols
        np.add(index, pred_flat, out=index, casting="unsafe")  # safe: pred is range-checked above
        hist = np.bincount(index, minlength=matrix_bins)
        if hist.size > matrix_bins:
            extra_rows = _pad_rows(hist[matrix_bins:], num_cols).sum(axis=1)
            error = _rows_past_matrix_error(extra_rows, num_rows, ignore_index, target_name)
            if error is not None:
                raise error
        return hist[:matrix_bins].reshape(num_rows, num_cols).astype(np.int64, copy=False)
    # ignore_index is negative, inside [0, R) or very large: mask the ignored pixels explicitly.
    valid = target_flat != ignore_index
    valid_low = int(np.min(target_flat, where=valid, initial=0))
    valid_high = int(np.max(target_flat, where=valid, initial=0))
    if valid_low < 0 or valid_high >= num_rows:
        bad = first_bad_value(target_flat, 0, num_rows, ignore_index)
        raise _target_range_error(target_name, bad, num_rows, ignore_index)
    index = target_flat.astype(np.intp)
    index *= num_cols
    np.add(index, pred_flat, out=index, casting="unsafe")
    index[~valid] = matrix_bins
    hist = np.bincount(index, minlength=matrix_bins + 1)
    return hist[:matrix_bins].reshape(num_rows, num_cols).astype(np.int64, copy=False)


def _pad_rows(values: npt.NDArray[np.int64], num_cols: int) -> npt.NDArray[np.int64]:
    """Reshape a flat tail of a histogram to ``[rows, num_cols]``, zero-padding the last row."""
    rows = -(-values.size // num_cols)
    padded = np.zeros(rows * num_cols, dtype=np.int64)
    padded[: values.size] = values
    return padded.reshape(rows, num_cols)


def _count_pairs_torch(
    pred: Tensor,
    target: Tensor,
    *,
    num_rows: int,
    num_cols: int,
    ignore_index: int | None,
    names: tuple[str, str],
) -> Tensor:
    pred_name, target_name = names
    device = pred.device
    if pred.numel() == 0:
        return torch.zeros((num_rows, num_cols), dtype=torch.int64, device=device)
    pred_flat = pred.reshape(-1)
    target_flat = target.reshape(-1)
    # bincount/aminmax cover the common integer dtypes; the rare wide unsigned ones go through int64.
    if pred_flat.dtype not in _TORCH_NATIVE_INTS:
        pred_flat = pred_flat.to(torch.int64)
    if target_flat.dtype not in _TORCH_NATIVE_INTS:
        target_flat = target_flat.to(torch.int64)
    # One host sync for the four range bounds.
    bounds = torch.stack([v.to(torch.int64) for v in (*torch.aminmax(pred_flat), *torch.aminmax(target_flat))])
    bounds_list = bounds.tolist()
    pred_low, pred_high, low, high = (int(v) for v in bounds_list)
    if pred_low < 0 or pred_high >= num_cols:
        raise _pred_range_error(pred_name, first_bad_value(pred_flat, 0, num_cols), num_cols)
    matrix_bins = num_rows * num_cols
    if _uses_shortcut(ignore_index, num_rows, num_cols):
        limit = num_rows if ignore_index is None else max(num_rows, ignore_index + 1)
        if low < 0 or high >= limit:
            bad = first_bad_value(target_flat, 0, num_rows, ignore_index)
            raise _target_range_error(target_name, bad, num_rows, ignore_index)
        index = torch.add(pred_flat, target_flat.to(torch.int64), alpha=num_cols)  # pred + K · target, one pass
        hist = torch.bincount(index, minlength=matrix_bins)
        if hist.numel() > matrix_bins:
            tail = hist[matrix_bins:].cpu().numpy().astype(np.int64, copy=False)
            error = _rows_past_matrix_error(_pad_rows(tail, num_cols).sum(axis=1), num_rows, ignore_index, target_name)
            if error is not None:
                raise error
        return hist[:matrix_bins].reshape(num_rows, num_cols).to(torch.int64)
    assert ignore_index is not None  # the shortcut covers None
    valid = target_flat.ne(ignore_index)
    safe_target = torch.where(valid, target_flat, torch.zeros_like(target_flat))
    valid_low, valid_high = (int(v) for v in torch.stack(torch.aminmax(safe_target)).tolist())
    if valid_low < 0 or valid_high >= num_rows:
        bad = first_bad_value(target_flat, 0, num_rows, ignore_index)
        raise _target_range_error(target_name, bad, num_rows, ignore_index)
    index = safe_target.to(torch.int64) * num_cols + pred_flat
    index = torch.where(valid, index, torch.full_like(index, matrix_bins))
    hist = torch.bincount(index, minlength=matrix_bins + 1)
    return hist[:matrix_bins].reshape(num_rows, num_cols).to(torch.int64)
