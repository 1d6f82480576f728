"""Image-level multi-label hypotheses from sliding crops scored by CLIP.

Skeleton: not implemented yet. The content arrives with the ReCLIP++ issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
