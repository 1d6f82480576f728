"""seg-models installs, reports its version and exposes its modules (none is a skeleton any more)."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

import seg_models


def test_version_matches_distribution_metadata() -> None:
    assert seg_models.__version__ == importlib.metadata.version("seg-models")


def test_no_module_is_a_skeleton_any_more() -> None:
    import pkgutil

    assert seg_models.SKELETON_MODULES == ()
    for info in pkgutil.iter_modules(seg_models.__path__):
        loaded = importlib.import_module(f"seg_models.{info.name}")
        assert loaded.__doc__ is not None
        assert "Skeleton" not in loaded.__doc__, info.name


IMPLEMENTED_MODULES = (
    "clip",
    "dense_clip",
    "inference",
    "refiners",
    "maskclip",
    "reco",
    "closed_set",
    "deeplab",
    "groupvit",
    "pgseg",
    "weights",
    "zutis",
    "proposals",
    "reclip",
)


@pytest.mark.parametrize("module", IMPLEMENTED_MODULES)
def test_implemented_modules_export_what_they_list(module: str) -> None:
    assert module not in seg_models.SKELETON_MODULES
    loaded = importlib.import_module(f"seg_models.{module}")
    assert loaded.__doc__ is not None
    assert "Skeleton" not in loaded.__doc__
    assert loaded.__all__
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert missing == []


def test_importing_the_package_stays_light() -> None:
    code = "import sys, seg_models; assert not {'torch', 'open_clip'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
