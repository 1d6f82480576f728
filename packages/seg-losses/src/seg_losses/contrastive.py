"""Image-text contrastive losses.

:func:`info_nce_loss` is the symmetric InfoNCE of CLIP (Radford et al., 2021, Fig. 3) and GroupViT (Xu et al.,
2022, Eq. 1): cross-entropy over the cosine-similarity matrix of a batch, image-to-text and text-to-image,
averaged, with a learnable temperature. SimCon and multi-view SimCon (Patel et al.) arrive with the MV-SimCon
issue; gathering negatives across processes with the scale issue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce_loss"]


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
