"""seg-losses: Losses and matchers for language-guided segmentation (seg).

Status: ``contrastive`` holds the symmetric InfoNCE (SimCon arrives later); ``matching`` and ``prototype`` are
available; the other modules are skeletons that exist so the package map is complete and installable, each empty until
the issue named beside it lands (see docs/architecture.md):

    seg_losses.contrastive: Symmetric InfoNCE (available); SimCon and multi-view SimCon, the negative-cosine view
        loss (MV-SimCon issue).
    seg_losses.matching: Hungarian matching (scipy linear_sum_assignment), single and batched, maximising by
        default; shared by PGSeg and ZUTIS (available).
    seg_losses.prototype: PGSeg's prototype supervision: the Prototypical Guidance loss (Eq. 3) with Hungarian
        matching and hard rejection (available). The prototype generation (EM, Eqs. 1-2), the momentum prototypes
        and their initialisation belong to the model's forward pass (I-NPR adds the reconstruction to the grouping
        input at inference too), so they live in ``seg_models.pgseg``.
    seg_losses.set_criterion: ZUTIS's set criterion: matched mask and class losses on every decoder layer (ZUTIS
        issue).
    seg_losses.rectification: ReCLIP++'s contrastive rectification loss and distillation losses (ReCLIP++ issue).
"""

from seg_losses.__about__ import __version__
from seg_losses.contrastive import info_nce_loss
from seg_losses.matching import batched_hungarian_match, hungarian_match
from seg_losses.prototype import UNMATCHED, PGLossResult, pg_loss

SKELETON_MODULES: tuple[str, ...] = (
    "set_criterion",
    "rectification",
)

__all__ = [
    "SKELETON_MODULES",
    "UNMATCHED",
    "PGLossResult",
    "__version__",
    "batched_hungarian_match",
    "hungarian_match",
    "info_nce_loss",
    "pg_loss",
]
