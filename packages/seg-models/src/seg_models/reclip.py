"""ReCLIP++: reference prompt, positional projection, mask decoder; student segmenter.

Skeleton: not implemented yet. The content arrives with the ReCLIP++ issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
