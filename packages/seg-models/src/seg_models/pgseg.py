"""PGSeg: GroupViT with prototype guidance and momentum prototypes.

Skeleton: not implemented yet. The content arrives with the GroupViT/PGSeg issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
