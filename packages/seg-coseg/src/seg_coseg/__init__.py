"""seg-coseg."""

from seg_coseg.__about__ import __version__

__all__ = ["__version__"]
