"""Version of the seg-retrieval distribution (static; bumped with `python tools/release.py bump seg-retrieval ...`)."""

__version__ = "0.1.0"
