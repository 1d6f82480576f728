"""seg-zoo installs, reports its version and exposes its public API."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import seg_zoo


def test_version_matches_distribution_metadata() -> None:
    assert seg_zoo.__version__ == importlib.metadata.version("seg-zoo")


@pytest.mark.parametrize("module", ["registry", "hub", "formats", "card", "build", "bundled"])
def test_modules_are_documented_and_export_what_they_list(module: str) -> None:
    loaded = importlib.import_module(f"seg_zoo.{module}")
    assert loaded.__doc__
    assert "Skeleton" not in loaded.__doc__
    assert loaded.__all__
    for name in loaded.__all__:
        assert hasattr(loaded, name), f"seg_zoo.{module}.__all__ lists {name} but the module has none"
