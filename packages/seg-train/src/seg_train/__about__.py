"""Version of the seg-train distribution (static; bumped with `python tools/release.py bump seg-train ...`)."""

__version__ = "0.1.0"
