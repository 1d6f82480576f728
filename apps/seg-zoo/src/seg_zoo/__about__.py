"""Version of the seg-zoo distribution (static; bumped with `python tools/release.py bump seg-zoo ...`)."""

__version__ = "0.1.0"
