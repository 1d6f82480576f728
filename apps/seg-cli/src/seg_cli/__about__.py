"""Version of the seg-cli distribution (static; bumped with `python tools/release.py bump seg-cli ...`)."""

__version__ = "0.1.0"
