"""The project's distributions and their installed versions (one list for ``seg --version``, Space exports and
checkpoint manifests)."""

from importlib import metadata
from typing import Final

__all__ = ["DISTRIBUTIONS", "NOT_INSTALLED", "installed_versions"]

DISTRIBUTIONS: Final[tuple[str, ...]] = (
    "seg-core",
    "seg-models",
    "seg-losses",
    "seg-retrieval",
    "seg-coseg",
    "seg-eval",
    "seg-train",
    "seg-trainers",
    "seg-zoo",
    "seg-cli",
)
"""Every distribution of the project, libraries first, in dependency order."""

NOT_INSTALLED: Final = "not installed"


def installed_versions() -> list[tuple[str, str]]:
    """The version of each distribution of :data:`DISTRIBUTIONS` from the installed metadata.

    Returns:
        ``(distribution, version)`` pairs in :data:`DISTRIBUTIONS` order; the version is :data:`NOT_INSTALLED`
        for a distribution that is not installed.
    """
    versions: list[tuple[str, str]] = []
    for name in DISTRIBUTIONS:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, NOT_INSTALLED))
    return versions
