"""Versions of the installed seg distributions, as ``seg --version`` shows them."""

import platform
from importlib import metadata
from typing import Final

__all__ = ["DISTRIBUTIONS", "NOT_INSTALLED", "installed_versions", "version_report"]

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


def version_report() -> str:
    """The text ``seg --version`` prints: one ``distribution version`` line each, then the Python version."""
    pairs = installed_versions()
    width = max(len(name) for name, _ in pairs)
    lines = [f"{name:<{width}}  {version}" for name, version in pairs]
    lines.append(f"{'python':<{width}}  {platform.python_version()}")
    return "\n".join(lines)
