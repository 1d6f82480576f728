"""seg-losses."""

from seg_losses.__about__ import __version__

__all__ = ["__version__"]
