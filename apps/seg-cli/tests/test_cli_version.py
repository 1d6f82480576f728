"""``seg --version`` and the installed ``seg`` console script."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from seg_cli.versions import DISTRIBUTIONS, NOT_INSTALLED

ALL_TEN = (
    "seg-core",
    "seg-models",
    "seg-losses",
    "seg-retrieval",
    "seg-coseg",
    "seg-eval",
    "seg-train",
    "seg-trainers",
    "seg-zoo",
    "seg-cli",
)


def _version_lines(stdout: str) -> dict[str, str]:
    pairs = (line.split() for line in stdout.splitlines() if line.strip())
    return {pair[0]: " ".join(pair[1:]) for pair in pairs}


def test_the_ten_distributions_are_known() -> None:
    assert DISTRIBUTIONS == ALL_TEN


def test_version_lists_every_distribution_with_its_metadata_version(run_seg: Callable[..., Any]) -> None:
    result = run_seg("--version")
    assert result.exit_code == 0
    listed = _version_lines(result.stdout)
    for name in ALL_TEN:
        assert listed[name] == metadata.version(name)
    assert listed["python"] == ".".join(map(str, sys.version_info[:3]))


def test_version_marks_a_missing_distribution(run_seg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = metadata.version

    def version_without_zoo(name: str) -> str:
        if name == "seg-zoo":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version_without_zoo)
    listed = _version_lines(run_seg("-V").stdout)
    assert listed["seg-zoo"] == NOT_INSTALLED
    assert listed["seg-core"] == real_version("seg-core")


def _seg_script() -> Path:
    beside_python = Path(sys.executable).parent / ("seg.exe" if os.name == "nt" else "seg")
    if beside_python.exists():
        return beside_python
    found = shutil.which("seg")
    if found is None:
        pytest.fail("the `seg` console script is not installed next to this Python nor on PATH")
    return Path(found)


def test_installed_console_script_prints_versions() -> None:
    completed = subprocess.run(
        [str(_seg_script()), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    listed = _version_lines(completed.stdout)
    assert set(ALL_TEN) <= set(listed)
    assert listed["seg-cli"] == metadata.version("seg-cli")


def test_cli_import_keeps_heavy_modules_out() -> None:
    heavy = ("torch", "numpy", "open_clip", "faiss", "seg_models", "seg_eval")
    code = f"import sys, seg_cli.main; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip() == ""
