"""The paper of each method, for zoo entries and model cards."""

from __future__ import annotations

from seg_core import PaperRef

__all__ = ["PAPERS"]


def _paper(title: str, arxiv: str) -> PaperRef:
    return PaperRef(title=title, arxiv=arxiv, url=f"https://arxiv.org/abs/{arxiv}")


_MASKCLIP = _paper("MaskCLIP: Extract Free Dense Labels from CLIP", "2112.01071")
_RECO = _paper("ReCo: Retrieve and Co-segment for Zero-shot Transfer", "2206.07045")

PAPERS: dict[str, PaperRef] = {
    "maskclip": _MASKCLIP,
    "dense-clip": _MASKCLIP,
    "reco": _RECO,
    "reco-plus": _RECO,
    "zutis": _paper("Zero-shot Unsupervised Transfer Instance Segmentation", "2304.14376"),
    "reclip": _paper(
        "ReCLIP++: Learn to Rectify the Bias of CLIP for Unsupervised Semantic Segmentation", "2408.06747"
    ),
    "groupvit": _paper("GroupViT: Semantic Segmentation Emerges from Text Supervision", "2202.11094"),
    "pgseg": _paper("Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic Segmentation", "2310.19001"),
    "simcon": _paper("Multi-View Consistency Learning for Text-Supervised Semantic Segmentation", "2304.04114"),
}
"""Method name (``--method``) -> its paper."""
