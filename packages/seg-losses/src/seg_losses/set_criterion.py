"""ZUTIS's set criterion: matched mask and class losses on every decoder layer.

Skeleton: not implemented yet. The content arrives with the ZUTIS issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
