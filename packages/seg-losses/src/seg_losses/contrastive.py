"""Symmetric InfoNCE (GroupViT), SimCon and multi-view SimCon, the negative-cosine view loss.

Skeleton: not implemented yet. The content arrives with the GroupViT/PGSeg and MV-SimCon issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
