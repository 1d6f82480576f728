"""seg-coseg installs, reports its version and exposes its (skeleton) modules."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import seg_coseg


def test_version_matches_distribution_metadata() -> None:
    assert seg_coseg.__version__ == importlib.metadata.version("seg-coseg")


@pytest.mark.parametrize("module", seg_coseg.SKELETON_MODULES)
def test_skeleton_modules_import_and_export_nothing_yet(module: str) -> None:
    loaded = importlib.import_module(f"seg_coseg.{module}")
    assert loaded.__doc__ is not None
    assert "Skeleton" in loaded.__doc__
    assert loaded.__all__ == []
