"""seg-retrieval."""

from seg_retrieval.__about__ import __version__

__all__ = ["__version__"]
