"""seg-retrieval installs, reports its version, exposes its modules and keeps its import light."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

import seg_retrieval


def test_version_matches_distribution_metadata() -> None:
    assert seg_retrieval.__version__ == importlib.metadata.version("seg-retrieval")


def test_no_module_is_a_skeleton_any_more() -> None:
    import pkgutil

    assert seg_retrieval.SKELETON_MODULES == ()
    for info in pkgutil.iter_modules(seg_retrieval.__path__):
        loaded = importlib.import_module(f"seg_retrieval.{info.name}")
        assert loaded.__doc__ is not None
        assert "Skeleton" not in loaded.__doc__, info.name


IMPLEMENTED_MODULES = ("store", "index", "curate", "hypotheses")


@pytest.mark.parametrize("module", IMPLEMENTED_MODULES)
def test_implemented_modules_export_what_they_list(module: str) -> None:
    assert module not in seg_retrieval.SKELETON_MODULES
    loaded = importlib.import_module(f"seg_retrieval.{module}")
    assert loaded.__doc__ is not None
    assert "Skeleton" not in loaded.__doc__
    assert loaded.__all__
    missing = [name for name in loaded.__all__ if not hasattr(loaded, name)]
    assert missing == []


def test_importing_the_package_stays_light() -> None:
    code = "import sys, seg_retrieval; assert not {'torch', 'faiss'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_import_of_sibling_packages_other_than_seg_core() -> None:
    code = (
        "import sys, seg_retrieval.store, seg_retrieval.index, seg_retrieval.curate; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0].startswith('seg_') "
        "and m.split('.')[0] not in {'seg_core', 'seg_retrieval'}); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
