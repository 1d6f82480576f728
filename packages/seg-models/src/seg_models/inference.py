"""Whole-image and sliding-window inference, resizing back to the original size.

Skeleton: not implemented yet. The content arrives with the CLIP/MaskCLIP issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []
