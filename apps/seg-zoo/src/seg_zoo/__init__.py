"""seg-zoo."""

from seg_zoo.__about__ import __version__

__all__ = ["__version__"]
