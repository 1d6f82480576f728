"""seg-retrieval installs, reports its version and exposes its (skeleton) modules."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import seg_retrieval


def test_version_matches_distribution_metadata() -> None:
    assert seg_retrieval.__version__ == importlib.metadata.version("seg-retrieval")


@pytest.mark.parametrize("module", seg_retrieval.SKELETON_MODULES)
def test_skeleton_modules_import_and_export_nothing_yet(module: str) -> None:
    loaded = importlib.import_module(f"seg_retrieval.{module}")
    assert loaded.__doc__ is not None
    assert "Skeleton" in loaded.__doc__
    assert loaded.__all__ == []
