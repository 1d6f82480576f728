"""Version of the seg-models distribution (static; bumped with `python tools/release.py bump seg-models ...`)."""

__version__ = "0.1.0"
