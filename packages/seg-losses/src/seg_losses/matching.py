"""Hungarian (one-to-one) matching on a similarity matrix, shared by PGSeg and ZUTIS.

:func:`hungarian_match` solves the linear assignment problem ``max_π Σ_i S[i, π(i)]`` over one-to-one maps ``π``
between the rows and the columns of a (possibly rectangular) similarity matrix with
``scipy.optimize.linear_sum_assignment``; :func:`batched_hungarian_match` does it for every matrix of a batch.
PGSeg (Zhang et al., 2023, Sec. 4.1, Algorithm 1 line 7) matches group centroids to prototypes this way before the
PG loss (Eq. 3); ZUTIS matches its decoder queries to the ground-truth set.

The solver runs on the CPU in float64 (a host round trip: the matrices are small, ``q × q`` with ``q ≤ 64``) and is
not differentiable: the inputs are detached and the returned indices are plain int64 tensors on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["batched_hungarian_match", "hungarian_match"]


def _solve(array: np.ndarray, maximize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Solve one assignment on a finite float64 ``[R, C]`` array, rows sorted ascending."""
    rows, cols = linear_sum_assignment(array, maximize=maximize)
    order = np.argsort(rows, kind="stable")
    return np.asarray(rows, dtype=np.int64)[order], np.asarray(cols, dtype=np.int64)[order]


def _host_array(similarity: Tensor, name: str) -> np.ndarray:
    """Detached float64 NumPy copy of ``similarity``, refusing NaN and infinite entries."""
    array: np.ndarray = similarity.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} holds NaN or infinite values ({int(np.isnan(array).sum())} NaN, "
            f"{int(np.isinf(array).sum())} inf): the assignment is undefined; check the features that produced it"
        )
    return array


def hungarian_match(similarity: Tensor, *, maximize: bool = True) -> tuple[Tensor, Tensor]:
    """One-to-one assignment of rows to columns that maximises (or minimises) the total similarity.

    ``K = min(R, C)`` pairs are returned: every row is matched when ``R <= C``, every column when ``R >= C``; the
    rows (resp. columns) left over are simply absent from the result.

    Note:
        The official PGSeg code (``hug_match``) calls ``linear_sum_assignment`` on the cosine-similarity matrix
        *without* ``maximize=True``, so it minimises the total similarity and pairs every group with its *least*
        similar prototype. This function maximises by default, as the paper describes (Sec. 4.1); pass
        ``maximize=False`` to reproduce the official behaviour (e.g. for an ablation).

    Args:
        similarity: ``[R, C]`` similarity (or, with ``maximize=False``, cost) matrix; any ``R, C >= 0``, any float
            dtype and device. It is detached and copied to the CPU.
        maximize: Maximise the total similarity (default); ``False`` minimises it.

    Returns:
        ``(row_indices, col_indices)``, two int64 tensors of length ``min(R, C)`` on ``similarity``'s device, with
        ``row_indices`` sorted ascending; ``similarity[row_indices[k], col_indices[k]]`` are the matched pairs.

    Raises:
        ValueError: If ``similarity`` is not 2-D or holds NaN or infinite values.
    """
    if similarity.ndim != 2:
        raise ValueError(
            f"similarity must be a [R, C] matrix, got shape {tuple(similarity.shape)}; "
            "use batched_hungarian_match for a [B, R, C] batch"
        )
    rows, cols = _solve(_host_array(similarity, "similarity"), maximize)
    device = similarity.device
    return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def batched_hungarian_match(similarity: Tensor, *, maximize: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`hungarian_match` on each matrix of a batch (each solved independently).

    Args:
        similarity: ``[B, R, C]`` similarity matrices (any ``B, R, C >= 0``); detached and copied to the CPU.
        maximize: Maximise the total similarity of each matrix (default); ``False`` minimises it (the official
            PGSeg code's behaviour, see :func:`hungarian_match`).

    Returns:
        ``(row_indices, col_indices)``, two int64 ``[B, K]`` tensors with ``K = min(R, C)`` on ``similarity``'s
        device, each row of ``row_indices`` sorted ascending.

    Raises:
        ValueError: If ``similarity`` is not 3-D or holds NaN or infinite values.
    """
    if similarity.ndim != 3:
        raise ValueError(
            f"similarity must be a [B, R, C] batch of matrices, got shape {tuple(similarity.shape)}; "
            "use hungarian_match for a single [R, C] matrix"
        )
    batch, num_rows, num_cols = similarity.shape
    array = _host_array(similarity, "similarity")
    size = min(num_rows, num_cols)
    all_rows = np.empty((batch, size), dtype=np.int64)
    all_cols = np.empty((batch, size), dtype=np.int64)
    for index in range(batch):
        all_rows[index], all_cols[index] = _solve(array[index], maximize)
    device = similarity.device
    return torch.from_numpy(all_rows).to(device), torch.from_numpy(all_cols).to(device)
