"""ZUTIS: text-aligned image encoder and query-based instance decoder.

Skeleton: not implemented yet. The content arrives with the ZUTIS issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
