"""Image-text contrastive losses: symmetric InfoNCE, SimCon and multi-view SimCon, the negative-cosine view loss.

:func:`info_nce_loss` is the symmetric InfoNCE of CLIP (Radford et al., 2021, Fig. 3) and GroupViT (Xu et al.,
2022, Eq. 1): cross-entropy over the cosine-similarity matrix of a batch, image-to-text and text-to-image,
averaged, with a learnable temperature.

SimCon and MV-SimCon follow Patel et al., 2023, "SimCon Loss with Multiple Views for Text Supervised Semantic
Segmentation", Sec. 3 (equation numbers are the paper's):

- :func:`intra_modal_positives`: Eq. 5, ``P = H(S - λ)`` on the intra-modal cosine similarities.
- :func:`joint_positives`: Eq. 8, ``P_J = H(max(S^{I1 I1}, S^{I2 I2}) - λ)`` over two image views.
- :func:`simcon_loss`: Eq. 3 (and Eq. 4 with the arguments swapped) on the joint cross- and intra-modal
  similarity matrix, for one anchor modality.
- :func:`symmetric_simcon_loss`: Eq. 3 + Eq. 4 with positives from Eq. 5 (summed, as in Eq. 10).
- :func:`mv_simcon_loss`: Eq. 6 + Eq. 7 (summed, as in Eq. 10) with the joint image positives of Eq. 8.
- :func:`negative_cosine_loss` and :class:`PredictionHead`: Eq. 9, SimSiam's negative cosine similarity between
  the two views with stop-gradient on the targets, and its predictor ``p``.
- :func:`lambda_schedule`: the step schedule of the threshold ``λ`` (Sec. 4.2: 0.95, minus 0.05 after epochs 2
  and 15).

The full MV-SimCon objective (Eq. 10) is ``mv_simcon_loss(z1, z2, t, s, threshold=λ) +
negative_cosine_loss(head(z1), z2, head(z2), z1)``; the recipe holds the configuration and the head.

The decisions the paper leaves open are keyword arguments with documented defaults (no official code exists):
whether the anchor's similarity to itself ``E^{AA}_ii`` enters the loss (``mask_self_in_intra``), whether the
intra-modal pairs use the cross-modal temperature (``intra_scale``), independent or joint image positives across
views (``joint_image_positives``), the predictor's width. The paired sample is always a positive of its anchor.

Every function takes whatever batch it is given: a batch gathered from all processes gives the full-batch loss;
:func:`seg_losses.distributed.gather_batch` gathers across processes with gradients (GroupViT's ``dist_collect``),
and the recipes call it before every contrastive loss. All losses are computed in
float32 with autocast disabled, the exponentials in log space (``logsumexp``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PredictionHead",
    "info_nce_loss",
    "intra_modal_positives",
    "joint_positives",
    "lambda_schedule",
    "mv_simcon_loss",
    "negative_cosine_loss",
    "simcon_loss",
    "symmetric_simcon_loss",
]


def info_nce_loss(image_embeddings: Tensor, text_embeddings: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE over a batch of paired embeddings.

    ``L = (CE(s · I Tᵀ, diag) + CE(s · T Iᵀ, diag)) / 2`` with ``I`` and ``T`` the L2-normalised embeddings and
    ``s = exp(logit_scale)`` when ``logit_scale`` is a tensor of the log-scale (CLIP's parameterisation), or
    ``s = logit_scale`` when it is a float.

    Args:
        image_embeddings: ``[B, D]`` image embeddings (normalised here).
        text_embeddings: ``[B, D]`` text embeddings of the same pairs, in the same order.
        logit_scale: Log of the inverse temperature as a tensor (learnable, CLIP init ``log(1/0.07)``), or the
            inverse temperature itself as a float.

    Returns:
        The scalar loss.
    """
    if image_embeddings.ndim != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"image_embeddings and text_embeddings must both be [B, D] with the same shape, got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    scale = logit_scale.exp() if isinstance(logit_scale, Tensor) else torch.tensor(float(logit_scale))
    images = F.normalize(image_embeddings.float(), dim=-1)
    texts = F.normalize(text_embeddings.float(), dim=-1)
    logits = scale * images @ texts.t()
    targets = torch.arange(images.shape[0], device=images.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


# --- SimCon / MV-SimCon (Patel et al., 2023) ------------------------------------------------------------------------


def _check_embeddings(name: str, embeddings: Tensor) -> None:
    if embeddings.ndim != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise ValueError(f"{name} must be a [B, D] tensor with B >= 1 and D >= 1, got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {embeddings.dtype}; pass {name}.float()")


def _check_like(name: str, embeddings: Tensor, reference_name: str, reference: Tensor) -> None:
    _check_embeddings(name, embeddings)
    if embeddings.shape != reference.shape:
        raise ValueError(
            f"{name} must have the shape of {reference_name} {tuple(reference.shape)} (row i of both is sample i), "
            f"got {tuple(embeddings.shape)}"
        )


def _check_threshold(threshold: float) -> float:
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite float (the paper's lambda, 0.95 -> 0.85), got {threshold!r}")
    return float(threshold)


def _scale(name: str, value: Tensor | float) -> Tensor | float:
    """A tensor is the log of the scale (exp'ed, as in :func:`info_nce_loss`); a float is the scale itself."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a float or a one-element tensor (the log scale), got shape {tuple(value.shape)}"
            )
        return value.float().reshape(()).exp()
    scale = float(value)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name} as a float is the inverse temperature itself and must be positive, got {value!r}")
    return scale


def _cosine_similarities(embeddings: Tensor) -> Tensor:
    """``[B, B]`` float32 cosine similarities, autocast off (bf16 would move values across the threshold)."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        normalised = F.normalize(embeddings.detach().float(), dim=-1)
        return normalised @ normalised.t()


def _threshold_positives(similarities: Tensor, threshold: float, include_self: bool) -> Tensor:
    positives = similarities >= threshold
    # S_ii = 1 mathematically; set the diagonal explicitly so rounding (1 - 1e-7 < λ = 1) cannot decide it.
    positives.fill_diagonal_(include_self)
    return positives


def intra_modal_positives(embeddings: Tensor, threshold: float, *, include_self: bool = True) -> Tensor:
    """Intra-modal positives of every anchor: ``P = H(S - λ)`` (Eq. 5).

    ``S`` is the cosine similarity of every pair of rows (the embeddings are L2-normalised here, in float32 with
    autocast disabled and without gradient). The Heaviside step is 1 at exactly 0, as the paper defines it, so a
    pair whose similarity equals ``threshold`` is a positive (``S >= λ``).

    Args:
        embeddings: ``[B, D]`` embeddings of one modality (images, or texts).
        threshold: The paper's ``λ`` (0.95, decayed to 0.85 by :func:`lambda_schedule`). Any finite float; above
            every off-diagonal similarity it leaves only the diagonal.
        include_self: Whether the diagonal (the anchor itself, ``S_ii = 1``) is a positive. The paper's ``P``
            contains it for every ``λ <= 1``; the losses force it anyway (the paired sample is always a positive),
            so ``False`` only matters to callers that read the mask, e.g. to count the positives found beyond
            the pair.

    Returns:
        ``[B, B]`` bool: ``[i, j]`` is whether sample ``j`` is a positive of anchor ``i`` (symmetric).
    """
    _check_embeddings("embeddings", embeddings)
    threshold = _check_threshold(threshold)
    return _threshold_positives(_cosine_similarities(embeddings), threshold, include_self)


def joint_positives(view1: Tensor, view2: Tensor, threshold: float, *, include_self: bool = True) -> Tensor:
    """Joint image positives over two views: ``P_J = H(max(S^{I1 I1}, S^{I2 I2}) - λ)`` (Eq. 8).

    A sample is a positive of anchor ``i`` when it is similar to the anchor in either view; this is the union of
    the two views' :func:`intra_modal_positives` (the paper's "joint image positives", Table 4 row 5).

    Args:
        view1: ``[B, D]`` embeddings of the first view of the images.
        view2: ``[B, D]`` embeddings of the second view, row ``i`` the same image as ``view1``'s row ``i``.
        threshold: The paper's ``λ``; ``S >= λ`` is a positive (see :func:`intra_modal_positives`).
        include_self: Whether the diagonal is a positive (see :func:`intra_modal_positives`).

    Returns:
        ``[B, B]`` bool, symmetric.
    """
    _check_embeddings("view1", view1)
    _check_like("view2", view2, "view1", view1)
    threshold = _check_threshold(threshold)
    similarities = torch.maximum(_cosine_similarities(view1), _cosine_similarities(view2))
    return _threshold_positives(similarities, threshold, include_self)


def simcon_loss(
    anchors: Tensor,
    others: Tensor,
    positives: Tensor,
    logit_scale: Tensor | float,
    *,
    intra_scale: Tensor | float | None = None,
    mask_self_in_intra: bool = True,
    use_intra: bool = True,
) -> Tensor:
    """SimCon loss with one modality as anchor (Eq. 3; Eq. 4 with the modalities swapped).

    With ``A`` the anchors and ``O`` the other modality (both L2-normalised), ``E^{AO}_ij = exp(s · a_i·o_j)``
    (cross-modal) and ``E^{AA}_ij = exp(s' · a_i·a_j)`` (intra-modal)::

        loss_i = -1/|P_i| Σ_{p ∈ P_i} log[(E^{AO}_ip + E^{AA}_ip) / (Σ_j E^{AO}_ij + Σ_j E^{AA}_ij)]
        loss   = mean_i loss_i

    so anchor ``i`` is pulled towards its paired sample ``o_i``, towards its intra-modal positives ``a_p`` and
    their paired samples ``o_p``, and pushed from every other image and text of the batch.

    Decisions the paper leaves open:

    - The paired sample is always a positive: ``positives[i, i]`` is forced ``True`` here (in the paper
      ``S_ii = 1 >= λ`` makes it so), so ``|P_i| >= 1`` and ``E^{AO}_ii`` is always in the numerator.
    - ``E^{AA}_ii = e^{s'}``, the anchor against itself, is constant in the embeddings and the largest intra-modal
      term: with ``mask_self_in_intra=True`` (default) it is removed from numerator and denominator (the
      denominator's intra sum runs over ``j != i``); ``False`` keeps it, the literal reading of Eq. 3.
    - ``s'`` is ``intra_scale``, by default the cross-modal scale (the paper has one ``τ``).
    - ``use_intra=False`` drops every ``E^{AA}`` term (numerator and denominator), leaving a multi-positive
      cross-modal InfoNCE. It is needed for the statement "SimCon is InfoNCE when ``λ`` is above every
      off-diagonal similarity": with ``P = I`` the intra-modal exponentials still sit in the denominator
      (``Σ_{j≠i} E^{AA}_ij > 0``), so the equality with Eq. 1 holds exactly only in this reduced form.

    Computed in float32 with autocast disabled, in log space (``logsumexp`` over the ``2B`` terms of a row).

    Args:
        anchors: ``[B, D]`` anchor embeddings (images for Eq. 3, texts for Eq. 4); normalised here.
        others: ``[B, D]`` the other modality, row ``i`` paired with ``anchors``' row ``i``; normalised here.
        positives: ``[B, B]`` bool, ``[i, p]`` whether ``p`` is a positive of anchor ``i`` (from
            :func:`intra_modal_positives` or :func:`joint_positives`; no gradient flows through it).
        logit_scale: Cross-modal inverse temperature ``s = 1/τ``: a tensor is its log (learnable, CLIP/GroupViT
            init ``log(1/0.07)``) and is exp'ed, a float is the scale itself; as in :func:`info_nce_loss`.
        intra_scale: Intra-modal scale ``s'``, same convention; ``None`` (default) uses ``s``.
        mask_self_in_intra: Remove ``E^{AA}_ii`` from numerator and denominator (default ``True``).
        use_intra: Include the intra-modal exponentials at all (default ``True``, the paper's SimCon).

    Returns:
        The scalar loss (float32), differentiable w.r.t. both embeddings and tensor scales.
    """
    _check_embeddings("anchors", anchors)
    _check_like("others", others, "anchors", anchors)
    batch = anchors.shape[0]
    if positives.shape != (batch, batch) or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be a [B, B] = [{batch}, {batch}] bool tensor (from intra_modal_positives or "
            f"joint_positives; cast a 0/1 mask with .bool()), got shape {tuple(positives.shape)} of {positives.dtype}"
        )
    scale = _scale("logit_scale", logit_scale)
    scale_intra = scale if intra_scale is None else _scale("intra_scale", intra_scale)
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        a = F.normalize(anchors.float(), dim=-1)
        o = F.normalize(others.float(), dim=-1)
        eye = torch.eye(batch, dtype=torch.bool, device=a.device)
        positive = positives.to(a.device) | eye
        cross = scale * (a @ o.t())  # log E^{AO}
        if use_intra:
            intra = scale_intra * (a @ a.t())  # log E^{AA}
            if mask_self_in_intra:
                intra = intra.masked_fill(eye, float("-inf"))
            log_numerator = torch.logaddexp(cross, intra)
            log_denominator = torch.logsumexp(torch.cat([cross, intra], dim=1), dim=1, keepdim=True)
        else:
            log_numerator = cross
            log_denominator = torch.logsumexp(cross, dim=1, keepdim=True)
        log_ratio = log_numerator - log_denominator
        per_anchor = -torch.where(positive, log_ratio, torch.zeros_like(log_ratio)).sum(dim=1) / positive.sum(dim=1)
        return per_anchor.mean()


def symmetric_simcon_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float,
    mask_self_in_intra: bool = True,
    intra_scale: Tensor | float | None = None,
    use_intra: bool = True,
) -> Tensor:
    """SimCon in both directions: ``L(I, T, P^I) + L(T, I, P^T)`` (Eqs. 3-5).

    ``P^I`` and ``P^T`` come from :func:`intra_modal_positives` on the images and on the texts (without
    gradient). The two directions are **summed**, as in the paper's objective (Eq. 10), whereas
    :func:`info_nce_loss` averages them: with ``use_intra=False`` and ``threshold`` above every off-diagonal
    similarity this equals ``2 * info_nce_loss(image, text, logit_scale)``.

    Args:
        image: ``[B, D]`` image embeddings.
        text: ``[B, D]`` text embeddings, row ``i`` paired with image ``i``.
        logit_scale: Cross-modal scale, see :func:`simcon_loss`.
        threshold: The paper's ``λ`` for both modalities.
        mask_self_in_intra: See :func:`simcon_loss` (default ``True``).
        intra_scale: See :func:`simcon_loss` (default: the cross-modal scale).
        use_intra: See :func:`simcon_loss` (default ``True``).

    Returns:
        The scalar loss.
    """
    _check_embeddings("image", image)
    _check_like("text", text, "image", image)
    image_positives = intra_modal_positives(image, threshold)
    text_positives = intra_modal_positives(text, threshold)
    image_to_text = simcon_loss(
        image,
        text,
        image_positives,
        logit_scale,
        intra_scale=intra_scale,
        mask_self_in_intra=mask_self_in_intra,
        use_intra=use_intra,
    )
    text_to_image = simcon_loss(
        text,
        image,
        text_positives,
        logit_scale,
        intra_scale=intra_scale,
        mask_self_in_intra=mask_self_in_intra,
        use_intra=use_intra,
    )
    return image_to_text + text_to_image


def mv_simcon_loss(
    image_view1: Tensor,
    image_view2: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    threshold: float,
    joint_image_positives: bool = True,
    mask_self_in_intra: bool = True,
    intra_scale: Tensor | float | None = None,
    use_intra: bool = True,
) -> Tensor:
    """Multi-view SimCon: Eq. 6 + Eq. 7, ``L(I1, T, P_J) + L(I2, T, P_J) + L(T, I1, P^T) + L(T, I2, P^T)``.

    ``P_J`` are the joint image positives of Eq. 8 (:func:`joint_positives`), ``P^T`` the text positives of Eq. 5
    (texts have no views). The four terms are summed, as in Eq. 10; the negative-cosine term of Eq. 10 is
    :func:`negative_cosine_loss`, added by the caller with its :class:`PredictionHead`. With two identical views
    this is twice :func:`symmetric_simcon_loss`.

    Args:
        image_view1: ``[B, D]`` embeddings of the first augmented view of the images.
        image_view2: ``[B, D]`` embeddings of the second view, row ``i`` the same image.
        text: ``[B, D]`` text embeddings, row ``i`` paired with image ``i``.
        logit_scale: Cross-modal scale, see :func:`simcon_loss`.
        threshold: The paper's ``λ`` for images (both views) and texts.
        joint_image_positives: ``True`` (default, the paper's MV-SimCon, Eq. 8): one ``P_J`` for both views.
            ``False``: each view uses its own :func:`intra_modal_positives` (the ablation of Table 4 row 4).
        mask_self_in_intra: See :func:`simcon_loss` (default ``True``).
        intra_scale: See :func:`simcon_loss` (default: the cross-modal scale).
        use_intra: See :func:`simcon_loss` (default ``True``).

    Returns:
        The scalar loss.
    """
    _check_embeddings("image_view1", image_view1)
    _check_like("image_view2", image_view2, "image_view1", image_view1)
    _check_like("text", text, "image_view1", image_view1)
    if joint_image_positives:
        view1_positives = view2_positives = joint_positives(image_view1, image_view2, threshold)
    else:
        view1_positives = intra_modal_positives(image_view1, threshold)
        view2_positives = intra_modal_positives(image_view2, threshold)
    text_positives = intra_modal_positives(text, threshold)
    terms = (
        (image_view1, text, view1_positives),
        (image_view2, text, view2_positives),
        (text, image_view1, text_positives),
        (text, image_view2, text_positives),
    )
    losses = [
        simcon_loss(
            anchors,
            others,
            positives,
            logit_scale,
            intra_scale=intra_scale,
            mask_self_in_intra=mask_self_in_intra,
            use_intra=use_intra,
        )
        for anchors, others, positives in terms
    ]
    return torch.stack(losses).sum()


def negative_cosine_loss(pred1: Tensor, target2: Tensor, pred2: Tensor, target1: Tensor) -> Tensor:
    """Symmetric negative cosine similarity between two views with stop-gradient (Eq. 9, SimSiam's loss).

    ``-(1/B) Σ_i [½ cos(p1_i, sg(z2_i)) + ½ cos(p2_i, sg(z1_i))]``, with ``p_k = p(z_k)`` the :class:`PredictionHead`
    output of view ``k`` and ``z_k`` the view's embedding. All four are L2-normalised here and the targets are
    detached here (the stop-gradient ``sg``), so no gradient reaches ``target1``/``target2`` through this term.
    Ranges over ``[-1, 1]``; ``-1`` when every prediction points along its target. Float32, autocast disabled.

    Args:
        pred1: ``[B, D]`` prediction from the first view, ``p(z^{I1})``.
        target2: ``[B, D]`` the second view's embedding ``z^{I2}`` (detached here).
        pred2: ``[B, D]`` prediction from the second view, ``p(z^{I2})``.
        target1: ``[B, D]`` the first view's embedding ``z^{I1}`` (detached here).

    Returns:
        The scalar loss.
    """
    _check_embeddings("pred1", pred1)
    _check_like("target2", target2, "pred1", pred1)
    _check_like("pred2", pred2, "pred1", pred1)
    _check_like("target1", target1, "pred1", pred1)
    with torch.autocast(device_type=pred1.device.type, enabled=False):
        cos_12 = (F.normalize(pred1.float(), dim=-1) * F.normalize(target2.detach().float(), dim=-1)).sum(dim=-1)
        cos_21 = (F.normalize(pred2.float(), dim=-1) * F.normalize(target1.detach().float(), dim=-1)).sum(dim=-1)
        return -(0.5 * cos_12 + 0.5 * cos_21).mean()


class PredictionHead(nn.Module):
    """The projection head ``p`` of Eq. 9: SimSiam's bottleneck predictor (Chen and He, 2021, Sec. 4.4).

    ``Linear(D, hidden, bias=False) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, D)``. The paper cites
    SimSiam for ``p`` and states no sizes; SimSiam's predictor has a hidden layer four times narrower than its
    input (2048 -> 512 -> 2048), BN on the hidden layer only, none on the output, so the default hidden width is
    ``D // 4`` (at least 1). The first layer has no bias because BatchNorm's shift replaces it.

    It takes whatever embedding the recipe feeds it (GroupViT's projected, L2-normalised ``z``, as Eq. 9 writes
    ``p(z)``). Training mode needs at least two rows (BatchNorm statistics).

    Args:
        dim: ``D``, the embedding width (input and output).
        hidden_dim: Width of the bottleneck; ``None`` (default) is ``max(1, dim // 4)``.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be a positive embedding width, got {dim}")
        hidden = max(1, dim // 4) if hidden_dim is None else hidden_dim
        if hidden < 1:
            raise ValueError(f"hidden_dim must be positive (or None for dim // 4), got {hidden_dim}")
        self.dim = dim
        self.hidden_dim = hidden
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, embeddings: Tensor) -> Tensor:
        """Predict the other view's embedding.

        Args:
            embeddings: ``[B, dim]`` embeddings of one view.

        Returns:
            ``[B, dim]`` predictions (not normalised; :func:`negative_cosine_loss` normalises).
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must be [B, {self.dim}] for this PredictionHead(dim={self.dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        out: Tensor = self.layers(embeddings)
        return out


def lambda_schedule(
    epoch_or_step: int, *, initial: float = 0.95, step: float = 0.05, milestones: Sequence[int] = (2, 15)
) -> float:
    """Threshold ``λ`` of Eqs. 5 and 8 under the paper's step schedule (Sec. 4.2).

    ``λ = initial - step · #{m in milestones : epoch_or_step >= m}``. With 0-based epochs and the defaults: 0.95
    for epochs 0-1, 0.90 from epoch 2 ("after the 2nd epoch") to 14, 0.85 from epoch 15 on. The milestones are in
    whatever unit the caller counts (epochs, or steps with milestones scaled to steps).

    Args:
        epoch_or_step: The 0-based epoch (or step) about to run.
        initial: ``λ`` before the first milestone (paper: 0.95).
        step: Decrease at each milestone (paper: 0.05).
        milestones: Epochs (steps) from which one more ``step`` is subtracted (paper: 2 and 15).

    Returns:
        The threshold.
    """
    if epoch_or_step < 0:
        raise ValueError(f"epoch_or_step must be a 0-based epoch or step (>= 0), got {epoch_or_step}")
    if any(m < 0 for m in milestones):
        raise ValueError(f"milestones must be non-negative epochs or steps, got {tuple(milestones)}")
    passed = sum(1 for milestone in milestones if epoch_or_step >= milestone)
    return initial - step * passed
