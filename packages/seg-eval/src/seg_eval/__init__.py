"""seg-eval."""

from seg_eval.__about__ import __version__

__all__ = ["__version__"]
