"""Version of the seg-coseg distribution (static; bumped with `python tools/release.py bump seg-coseg ...`)."""

__version__ = "0.1.0"
