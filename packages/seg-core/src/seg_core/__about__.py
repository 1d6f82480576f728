"""Version of the seg-core distribution (static; bumped with `python tools/release.py bump seg-core ...`)."""

__version__ = "0.1.0"
