"""Hungarian matching (scipy linear_sum_assignment), shared by ZUTIS and PGSeg.

Skeleton: not implemented yet. The content arrives with the ZUTIS and GroupViT/PGSeg issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
