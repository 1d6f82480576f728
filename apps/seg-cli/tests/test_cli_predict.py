"""``seg predict``: label and overlay PNGs for RGB, RGBA and greyscale images of any size; unreadable files are
reported and make the command fail without stopping the others."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    rgb = folder / "wide.jpg"
    Image.fromarray(rng.integers(0, 255, (37, 151, 3), dtype=np.uint8)).save(rgb)
    rgba = folder / "transparent.png"
    Image.fromarray(rng.integers(0, 255, (70, 50, 4), dtype=np.uint8), mode="RGBA").save(rgba)
    grey = folder / "grey.png"
    Image.fromarray(rng.integers(0, 255, (90, 90), dtype=np.uint8), mode="L").save(grey)
    return [rgb, rgba, grey]


def test_predict_writes_labels_and_overlays(run_seg: Callable[..., Any], random_clip: str, tmp_path: Path) -> None:
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    classes = "cow, grass, sky"
    result = run_seg(
        "predict", *map(str, images), "-m", "maskclip", "-c", classes, "--model", random_clip, "-o", str(out)
    )
    assert result.exit_code == 0, result.text
    for image in images:
        with Image.open(image) as original:
            size = original.size
        with Image.open(out / f"{image.stem}_labels.png") as labels:
            assert labels.mode == "P"
            assert labels.size == size
            values = np.unique(np.asarray(labels))
        assert set(values.tolist()) <= {0, 1, 2}
        with Image.open(out / f"{image.stem}_overlay.png") as overlay:
            assert overlay.width >= size[0]
            assert overlay.height > size[1]  # the legend sits below the picture
        assert f"{image.name}:" in result.text


def test_unreadable_image_is_reported_and_fails(run_seg: Callable[..., Any], random_clip: str, tmp_path: Path) -> None:
    good = _images(tmp_path / "in")[0]
    bad = tmp_path / "in" / "notes.png"
    bad.write_text("this is not a picture")
    out = tmp_path / "out"
    result = run_seg(
        "predict", str(bad), str(good), "-m", "dense-clip", "-c", "a,b", "--model", random_clip, "-o", str(out)
    )
    assert result.exit_code == 1
    assert "cannot read" in result.text
    assert "notes.png" in result.text
    assert (out / f"{good.stem}_labels.png").is_file()
