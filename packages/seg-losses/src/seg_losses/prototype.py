"""PGSeg's prototype-guidance loss, hard rejection and non-learnable prototypical regularisation.

Skeleton: not implemented yet. The content arrives with the GroupViT/PGSeg issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
