"""PGSeg's prototype supervision: the Prototypical Guidance loss with Hungarian matching and hard rejection.

Zhang et al., 2023, "Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic Segmentation" (PGSeg),
Sec. 4.1, Algorithm 1 lines 6-9: :func:`pg_loss` matches group centroids ``G`` to prototypes by the Hungarian
algorithm on their similarity (line 7; maximising, where the official code minimises), optionally rejects weak pairs
(the hard rejection strategy, HRS, line 8), and computes the symmetric Prototypical Guidance loss (Eq. 3) on the kept
pairs, with unmatched groups/prototypes as extra negatives when their numbers differ (Sec. 5.3).

The prototypes themselves (*prototype generation*, EM of Eqs. 1-2), their momentum update and initialisation are part
of the model's forward pass and live in ``seg_models.pgseg`` (seg-losses does not depend on seg-models, nor the
reverse).

Cost: one small CPU Hungarian solve per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seg_losses.matching import batched_hungarian_match

__all__ = ["UNMATCHED", "PGLossResult", "pg_loss"]

UNMATCHED = -1
"""Value of :attr:`PGLossResult.assignment` for a group that no prototype was matched to (``g > p``)."""

_SIMILARITIES = ("cosine", "neg_abs")
_REJECTIONS = ("cosine", "minmax")
_MATCHES = ("max", "min")
_RECTANGULAR = ("both", "one_sided")


@dataclass(frozen=True, eq=False)
class PGLossResult:
    """Output of :func:`pg_loss`.

    Attributes:
        loss: Scalar PG loss (Eq. 3), mean over the images of the batch; differentiable w.r.t. the groups (and a
            tensor ``tau``).
        kept_fraction: Matched pairs kept by the hard rejection / matched pairs, over the batch (1.0 without HRS).
        matched_similarity: Mean similarity (cosine, or ``-|g - p|`` for ``similarity="neg_abs"``) of all matched
            pairs of the batch, kept or not.
        assignment: ``[B, g]`` int64: the prototype index matched to each group, ``-1`` (:data:`UNMATCHED`) for a
            group left without a prototype (only when ``g > p``). Rejected pairs keep their index; see ``kept``.
        kept: ``[B, g]`` bool: whether the group's matched pair entered the loss (``False`` for unmatched groups and
            rejected pairs).
    """

    loss: Tensor
    kept_fraction: float
    matched_similarity: float
    assignment: Tensor
    kept: Tensor


def _check_choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def _similarity_matrix(groups: Tensor, prototypes: Tensor, similarity: str) -> Tensor:
    """``[B, g, p]`` similarity of every group to every prototype, float32."""
    if similarity == "cosine":
        return torch.bmm(F.normalize(groups, dim=-1), F.normalize(prototypes, dim=-1).transpose(1, 2))
    return -torch.cdist(groups, prototypes, p=1.0)


def _temperature(tau: float | Tensor) -> float | Tensor:
    if isinstance(tau, Tensor):
        if tau.numel() != 1:
            raise ValueError(f"tau must be a float or a one-element tensor, got a tensor of shape {tuple(tau.shape)}")
        return tau.float().reshape(())
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite temperature, got {tau} (paper: 0.1)")
    return float(tau)


def pg_loss(
    groups: Tensor,
    prototypes: Tensor,
    *,
    tau: float | Tensor = 0.1,
    similarity: Literal["cosine", "neg_abs"] = "cosine",
    reject_threshold: float | None = None,
    rejection: Literal["cosine", "minmax"] = "cosine",
    match: Literal["max", "min"] = "max",
    rectangular: Literal["both", "one_sided"] = "both",
) -> PGLossResult:
    """Prototypical Guidance loss (Eq. 3) with Hungarian matching and hard rejection (Algorithm 1, lines 6-9).

    Per image: ``S[i, j]`` is the similarity of group ``g_i`` and prototype ``p_j`` (``[g, p]``); the Hungarian
    matching ``π`` on ``S`` pairs ``K = min(g, p)`` groups with prototypes; HRS keeps the subset ``𝒦`` of matched
    pairs whose similarity exceeds ``reject_threshold``; and ::

        L = -(1/|𝒦|) Σ_{(i, π(i)) ∈ 𝒦} [ log softmax_j(S[i, j] / τ)[π(i)] + log softmax_k(S[k, π(i)] / τ)[i] ]

    i.e. group→prototype cross-entropy over all ``p`` prototypes plus prototype→group over all ``g`` groups. As in
    Eq. 3 the two directions are **summed, not halved** (twice the usual symmetric-InfoNCE convention). When
    ``g != p`` the groups/prototypes left unmatched enter only as negatives (Sec. 5.3); ``rectangular="one_sided"``
    follows the other reading of Sec. 5.3 ("would simply calculate the left (right) part"): with ``g < p`` only the
    group→prototype term, with ``g > p`` only the prototype→group term. An image with no kept pair contributes 0
    (finite, zero gradient); the batch loss is the mean over all ``B`` images.

    The prototypes are targets: they are detached here. The matching and the rejection are not differentiated.

    Args:
        groups: ``[B, g, d]`` group centroids ``G`` (carry gradients).
        prototypes: ``[B, p, d]`` prototypes ``P`` (e.g. :attr:`EMResult.prototypes`).
        tau: Temperature ``τ`` (paper: 0.1). A float, or a one-element tensor holding the temperature itself (a
            learnable *scale* as in the official code, init 1/0.1 clamped at 100, is the caller's business: pass
            ``1 / scale``); a tensor is not checked for positivity.
        similarity: ``"cosine"`` (paper, ``S(a, b) = a·b / ‖a‖‖b‖``) or ``"neg_abs"``: ``-Σ_d |g - p|`` (negative
            L1 distance), meant for T-NPR's scalar features (``d == 1``) where the cosine degenerates to the product
            of signs (what the official code computes).
        reject_threshold: HRS threshold ``φ`` (paper and official code: 0.1); ``None`` keeps every matched pair.
            A pair is kept when its (normalised) similarity is strictly greater.
        rejection: What HRS compares with ``φ``: ``"cosine"``: the raw matched similarity (the paper's wording);
            ``"minmax"``: the matched similarity min-max normalised over that image's matched pairs (the official
            code), ``(s - min) / (max - min)``, 0 when all are equal (so a lone pair is always rejected).
        match: ``"max"`` maximises the total matched similarity (paper); ``"min"`` minimises it, reproducing the
            official code's missing ``maximize=True`` (ablations only).
        rectangular: ``"both"`` (default) or ``"one_sided"``; only matters when ``g != p``, see above.

    Returns:
        A :class:`PGLossResult`.

    Raises:
        ValueError: On badly shaped inputs, a non-positive float ``tau``, a multi-element ``tau`` tensor, an unknown
            option, or NaN/infinite similarities.
    """
    for name, tensor, letter in (("groups", groups, "g"), ("prototypes", prototypes, "p")):
        if tensor.ndim != 3 or tensor.shape[0] == 0 or tensor.shape[1] == 0 or not tensor.is_floating_point():
            raise ValueError(
                f"{name} must be a float [B, {letter}, d] tensor with B >= 1 and {letter} >= 1, got shape "
                f"{tuple(tensor.shape)} and dtype {tensor.dtype}"
            )
    if prototypes.shape[0] != groups.shape[0] or prototypes.shape[2] != groups.shape[2]:
        raise ValueError(
            f"prototypes must be [B, p, d] with the B and d of groups {tuple(groups.shape)}, got "
            f"{tuple(prototypes.shape)}"
        )
    _check_choice("similarity", similarity, _SIMILARITIES)
    _check_choice("rejection", rejection, _REJECTIONS)
    _check_choice("match", match, _MATCHES)
    _check_choice("rectangular", rectangular, _RECTANGULAR)
    temperature = _temperature(tau)

    batch, num_groups, _ = groups.shape
    num_prototypes = prototypes.shape[1]
    # float32 even inside a mixed-precision forward (autocast would run the similarities in bf16/fp16).
    with torch.autocast(device_type=groups.device.type, enabled=False):
        sims = _similarity_matrix(groups.float(), prototypes.detach().float(), similarity)
        rows, cols = batched_hungarian_match(sims.detach(), maximize=match == "max")
        batch_index = torch.arange(batch, device=sims.device).unsqueeze(1).expand_as(rows)
        matched = sims.detach()[batch_index, rows, cols]

        if reject_threshold is None:
            kept = torch.ones_like(matched, dtype=torch.bool)
        else:
            score = matched
            if rejection == "minmax":
                low = matched.min(dim=1, keepdim=True).values
                span = matched.max(dim=1, keepdim=True).values - low
                score = torch.where(span > 0, (matched - low) / span.clamp_min(torch.finfo(span.dtype).tiny), 0.0)
            kept = score > reject_threshold

        logits = sims / temperature
        group_to_prototype = logits.log_softmax(dim=2)[batch_index, rows, cols]
        prototype_to_group = logits.log_softmax(dim=1)[batch_index, rows, cols]
        if rectangular == "one_sided" and num_groups < num_prototypes:
            terms = group_to_prototype
        elif rectangular == "one_sided" and num_groups > num_prototypes:
            terms = prototype_to_group
        else:
            terms = group_to_prototype + prototype_to_group
    kept_count = kept.sum(dim=1)
    per_image = -torch.where(kept, terms, 0.0).sum(dim=1) / kept_count.clamp_min(1)
    loss = per_image.mean()

    assignment = torch.full((batch, num_groups), UNMATCHED, dtype=torch.int64, device=sims.device)
    assignment[batch_index, rows] = cols
    kept_per_group = torch.zeros((batch, num_groups), dtype=torch.bool, device=sims.device)
    kept_per_group[batch_index, rows] = kept
    kept_fraction, matched_similarity = torch.stack([kept.float().mean(), matched.mean()]).tolist()
    return PGLossResult(
        loss=loss,
        kept_fraction=float(kept_fraction),
        matched_similarity=float(matched_similarity),
        assignment=assignment,
        kept=kept_per_group,
    )
