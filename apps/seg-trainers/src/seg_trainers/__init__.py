"""seg-trainers."""

from seg_trainers.__about__ import __version__

__all__ = ["__version__"]
