"""Versions of the installed seg distributions, as ``seg --version`` shows them (the list lives in
:mod:`seg_core.versions`)."""

import platform

from seg_core.versions import DISTRIBUTIONS, NOT_INSTALLED, installed_versions

__all__ = ["DISTRIBUTIONS", "NOT_INSTALLED", "installed_versions", "version_report"]


def version_report() -> str:
    """The text ``seg --version`` prints: one ``distribution version`` line each, then the Python version."""
    pairs = installed_versions()
    width = max(len(name) for name, _ in pairs)
    lines = [f"{name:<{width}}  {version}" for name, version in pairs]
    lines.append(f"{'python':<{width}}  {platform.python_version()}")
    return "\n".join(lines)
