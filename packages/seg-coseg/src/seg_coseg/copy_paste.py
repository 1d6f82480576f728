"""Copy-paste synthesis of multi-object training images with instance ids.

Skeleton: not implemented yet. The content arrives with the ZUTIS issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
