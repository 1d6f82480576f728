"""seg-losses: Losses and matchers for language-guided segmentation (seg).

Status: every module is available (``SKELETON_MODULES`` is empty; see docs/architecture.md):

    seg_losses.contrastive: Symmetric InfoNCE (available); SimCon (Eqs. 3-5) and multi-view SimCon (Eqs. 6-8), the
        negative-cosine view loss and its prediction head (Eq. 9), the step schedule of the threshold (available).
    seg_losses.distributed: ``gather_batch``, the global batch of embeddings across ``torchrun`` processes with
        gradients carried back to each process (the identity in one process) (available).
    seg_losses.matching: Hungarian matching (scipy linear_sum_assignment), single and batched, maximising by
        default; shared by PGSeg and ZUTIS (available).
    seg_losses.prototype: PGSeg's prototype supervision: the Prototypical Guidance loss (Eq. 3) with Hungarian
        matching and hard rejection (available). The prototype generation (EM, Eqs. 1-2), the momentum prototypes
        and their initialisation belong to the model's forward pass (I-NPR adds the reconstruction to the grouping
        input at inference too), so they live in ``seg_models.pgseg``.
    seg_losses.set_criterion: ZUTIS's set criterion: dice (+1 smoothing) and mean BCE per mask, their pairwise cost
        (no class cost) and Hungarian mask matching, and the matched mask loss on every decoder layer with the
        official reduction (sum over instances and layers / batch) or a mean (available). The semantic
        cross-entropy ``L_ce`` is not part of it. The loss is ``set_criterion_loss``.
    seg_losses.rectification: ReCLIP++'s Gumbel-softmax masks (Eq. 5), class-level masked pooling, the contrastive
        rectification loss (Eq. 7) and the distillation losses (Eqs. 8-10) (available).
"""

from seg_losses.__about__ import __version__
from seg_losses.contrastive import (
    PredictionHead,
    info_nce_loss,
    intra_modal_positives,
    joint_positives,
    lambda_schedule,
    mv_simcon_loss,
    negative_cosine_loss,
    simcon_loss,
    symmetric_simcon_loss,
)
from seg_losses.matching import batched_hungarian_match, hungarian_match
from seg_losses.prototype import UNMATCHED, PGLossResult, pg_loss
from seg_losses.rectification import (
    DEFAULT_TAU,
    DistillationLosses,
    distillation_loss,
    feature_guided_loss,
    gumbel_masks,
    mask_guided_loss,
    masked_pooling,
    rectification_loss,
)
from seg_losses.set_criterion import (
    SetCriterionResult,
    dice_loss,
    match_masks,
    pairwise_mask_cost,
    set_criterion_loss,
    sigmoid_bce_loss,
)

SKELETON_MODULES: tuple[str, ...] = ()

__all__ = [
    "DEFAULT_TAU",
    "SKELETON_MODULES",
    "UNMATCHED",
    "DistillationLosses",
    "PGLossResult",
    "PredictionHead",
    "SetCriterionResult",
    "__version__",
    "batched_hungarian_match",
    "dice_loss",
    "distillation_loss",
    "feature_guided_loss",
    "gumbel_masks",
    "hungarian_match",
    "info_nce_loss",
    "intra_modal_positives",
    "joint_positives",
    "lambda_schedule",
    "mask_guided_loss",
    "masked_pooling",
    "match_masks",
    "mv_simcon_loss",
    "negative_cosine_loss",
    "pairwise_mask_cost",
    "pg_loss",
    "rectification_loss",
    "set_criterion_loss",
    "sigmoid_bce_loss",
    "simcon_loss",
    "symmetric_simcon_loss",
]
