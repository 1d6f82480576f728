"""Version of the seg-eval distribution (static; bumped with `python tools/release.py bump seg-eval ...`)."""

__version__ = "0.1.0"
