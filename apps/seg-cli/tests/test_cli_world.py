"""``seg world generate`` writes a split the readers load, deterministically."""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seg_eval.world import WorldDataset, render


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("layout", ["coco", "voc"])
def test_world_generate_writes_a_readable_split(run_seg: Callable[..., Any], tmp_path: Path, layout: str) -> None:
    out = tmp_path / "world"
    args = ["world", "generate", "--out", str(out), "--split", "val", "--num", "3", "--seed", "5", "--format", layout]
    result = run_seg(*args)
    assert result.exit_code == 0, result.text
    assert "wrote 3 images of split 'val'" in result.text
    assert json.loads((out / "world.json").read_text())["config"]["seed"] == 5
    dataset = WorldDataset(out, "val")
    assert len(dataset) == 3
    expected = render(dataset.info.config, "val", 2)
    assert (dataset[2].semantic == expected.semantic).all()


def test_world_generate_is_deterministic(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        args = ["world", "generate", "--out", str(tmp_path / name), "--split", "test", "--num", "2", "--seed", "1"]
        assert run_seg(*args).exit_code == 0
        digests.append(_digest(tmp_path / name))
    assert digests[0] == digests[1]
