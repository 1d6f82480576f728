"""seg-coseg installs, reports its version and exposes its available and skeleton modules."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import seg_coseg


def test_version_matches_distribution_metadata() -> None:
    assert seg_coseg.__version__ == importlib.metadata.version("seg-coseg")


def test_skeleton_modules_import_and_export_nothing_yet() -> None:
    # Empty since the ZUTIS issue (saliency, copy_paste); kept so a future skeleton module is checked too.
    for module in seg_coseg.SKELETON_MODULES:
        loaded = importlib.import_module(f"seg_coseg.{module}")
        assert loaded.__doc__ is not None
        assert "Skeleton" in loaded.__doc__
        assert loaded.__all__ == []


@pytest.mark.parametrize("module", ["seeds", "context", "saliency", "copy_paste"])
def test_available_modules_export_what_they_list(module: str) -> None:
    assert module not in seg_coseg.SKELETON_MODULES
    loaded = importlib.import_module(f"seg_coseg.{module}")
    assert loaded.__doc__ is not None
    assert "Skeleton" not in loaded.__doc__
    assert loaded.__all__
    for name in loaded.__all__:
        assert hasattr(loaded, name), f"seg_coseg.{module}.__all__ lists {name!r}, which it does not define"
