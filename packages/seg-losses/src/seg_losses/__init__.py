"""seg-losses: Losses and matchers for language-guided segmentation (seg).

Status: ``contrastive`` holds the symmetric InfoNCE (SimCon arrives later); the other modules are skeletons that
exist so the package map is complete and installable, each empty until the issue named beside it lands (see
docs/architecture.md):

    seg_losses.contrastive: Symmetric InfoNCE (available); SimCon and multi-view SimCon, the negative-cosine view
        loss (MV-SimCon issue).
    seg_losses.matching: Hungarian matching (scipy linear_sum_assignment), shared by ZUTIS and PGSeg (ZUTIS and
        GroupViT/PGSeg issue).
    seg_losses.prototype: PGSeg's prototype-guidance loss, hard rejection and non-learnable prototypical
        regularisation (GroupViT/PGSeg issue).
    seg_losses.set_criterion: ZUTIS's set criterion: matched mask and class losses on every decoder layer (ZUTIS
        issue).
    seg_losses.rectification: ReCLIP++'s contrastive rectification loss and distillation losses (ReCLIP++ issue).
"""

from seg_losses.__about__ import __version__
from seg_losses.contrastive import info_nce_loss

SKELETON_MODULES: tuple[str, ...] = (
    "matching",
    "prototype",
    "set_criterion",
    "rectification",
)

__all__ = ["SKELETON_MODULES", "__version__", "info_nce_loss"]
