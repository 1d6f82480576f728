"""seg-trainers installs, reports its version and exposes its modules (none is a skeleton any more)."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil

import seg_trainers


def test_version_matches_distribution_metadata() -> None:
    assert seg_trainers.__version__ == importlib.metadata.version("seg-trainers")


def test_no_module_is_a_skeleton_any_more() -> None:
    assert seg_trainers.SKELETON_MODULES == ()
    for info in pkgutil.iter_modules(seg_trainers.__path__):
        loaded = importlib.import_module(f"seg_trainers.{info.name}")
        assert loaded.__doc__ is not None
        assert "Skeleton" not in loaded.__doc__, info.name
        if info.name != "__about__":
            assert loaded.__all__, info.name
            missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
            assert missing == [], info.name
