"""The one list of the project's distributions and their installed versions."""

from __future__ import annotations

from importlib import metadata

import pytest

import seg_core
from seg_core.versions import DISTRIBUTIONS, NOT_INSTALLED, installed_versions


def test_versions_are_read_for_every_distribution_in_order() -> None:
    found = dict(installed_versions())
    assert [name for name, _ in installed_versions()] == list(DISTRIBUTIONS)
    assert found["seg-core"] == seg_core.__version__


def test_a_missing_distribution_is_reported_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version

    def version(name: str) -> str:
        if name == "seg-coseg":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    found = dict(installed_versions())
    assert found["seg-coseg"] == NOT_INSTALLED
    assert found["seg-core"] == seg_core.__version__
