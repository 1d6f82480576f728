"""Version of the seg-losses distribution (static; bumped with `python tools/release.py bump seg-losses ...`)."""

__version__ = "0.1.0"
