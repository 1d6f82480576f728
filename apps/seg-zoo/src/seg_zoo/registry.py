"""The zoo table keyed ``method-arch.tag``, listing with wildcards.

Skeleton: not implemented yet. The content arrives with the seg-zoo issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
