"""Version of the seg-trainers distribution (static; bumped with `python tools/release.py bump seg-trainers ...`)."""

__version__ = "0.1.0"
