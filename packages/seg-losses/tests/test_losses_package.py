"""seg-losses installs, reports its version and has no skeleton module left."""

from __future__ import annotations

import importlib
import importlib.metadata

import seg_losses


def test_version_matches_distribution_metadata() -> None:
    assert seg_losses.__version__ == importlib.metadata.version("seg-losses")


def test_no_module_is_a_skeleton_any_more() -> None:
    import pkgutil

    assert seg_losses.SKELETON_MODULES == ()
    for info in pkgutil.iter_modules(seg_losses.__path__):
        loaded = importlib.import_module(f"seg_losses.{info.name}")
        assert loaded.__doc__ is not None
        assert "Skeleton" not in loaded.__doc__, info.name
