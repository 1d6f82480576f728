"""``seg app``: what a request does (same labels as ``seg predict``), what it refuses, the model cache, the Gradio
API under 20 concurrent requests, and the Space export. The real-browser test is test_cli_app_browser.py."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seg_cli import webapp
from seg_cli.webapp import AppInputError, SegmenterCache, export_space, segment_file


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 x 64 image with a blue top and a green bottom (sky over grass)."""
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:32] = (90, 150, 230)
    rgb[32:] = (60, 160, 60)
    rgb[40:56, 30:60] = (120, 90, 60)
    path = tmp_path_factory.mktemp("app") / "scene.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def cache() -> SegmenterCache:
    return SegmenterCache()


def test_a_request_gives_the_same_label_map_as_seg_predict(
    cache: SegmenterCache, picture: Path, run_seg: Callable[..., Any], tmp_path: Path
) -> None:
    result = segment_file(cache, picture, "sky, grass, cow", "maskclip", out_dir=tmp_path)
    predicted = run_seg("predict", str(picture), "-m", "maskclip", "-c", "sky,grass,cow", "-o", str(tmp_path / "cli"))
    assert predicted.exit_code == 0, predicted.text
    expected = np.asarray(Image.open(tmp_path / "cli" / "scene_labels.png"))
    assert np.array_equal(np.asarray(Image.open(result.label_png)), expected)
    assert np.array_equal(result.labels, expected)
    assert result.model == "maskclip-vit-tiny-p8.synthetic"
    assert result.overlay.shape[1] >= 96
    assert result.overlay.shape[2] == 3
    fractions = {name: fraction for name, fraction, _ in result.areas}
    counts = np.bincount(expected.ravel(), minlength=3) / expected.size
    assert fractions == {name: counts[i] for i, name in enumerate(("sky", "grass", "cow")) if counts[i] > 0}


def test_the_model_is_loaded_once_and_reused(
    cache: SegmenterCache, picture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg_cli import segmenters

    calls: list[str] = []
    build = segmenters.build_segmenter

    def counting(method: str, model: str | None, preset: Any, **options: Any) -> Any:
        calls.append(method)
        return build(method, model, preset, **options)

    monkeypatch.setattr(segmenters, "build_segmenter", counting)
    fresh = SegmenterCache()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # four first requests at once: one load
        results = list(
            pool.map(lambda _: segment_file(fresh, picture, "sky, grass", "groupvit", out_dir=tmp_path), range(4))
        )
    assert calls == ["groupvit"]
    assert all(np.array_equal(r.labels, results[0].labels) for r in results)
    segment_file(fresh, picture, "sky, grass", "groupvit", refinement="pamr", out_dir=tmp_path)
    assert calls == ["groupvit", "groupvit"]  # another refiner is another segmenter
    assert len(fresh) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ""}, "class names"),
        ({"classes": "sky,,cow"}, "item 2"),
        ({"model": "nope-model.x"}, "no zoo entry 'nope-model.x'"),
        ({"model": "local-dir:/no/such/folder"}, "no model folder"),
        ({"method": "segformer"}, "unknown method 'segformer'"),
        ({"method": "reco-plus", "classes": "sky, unicorn"}, "unicorn"),
        ({"refinement": "magic"}, "refiner 'magic'"),
    ],
)
def test_bad_input_is_a_message_not_a_crash(
    cache: SegmenterCache, picture: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    arguments = {"classes": "sky, grass", "method": "maskclip", "model": "", "refinement": "none"}
    arguments.update(change)
    with pytest.raises(AppInputError, match=message):
        segment_file(cache, picture, out_dir=tmp_path, **arguments)


def test_non_images_and_huge_images_are_refused_before_decoding(cache: SegmenterCache, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AppInputError, match="not an image"):
        segment_file(cache, text, "sky", "maskclip", out_dir=tmp_path)
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # 100 MP, a few kB on disk
    with pytest.raises(AppInputError, match=r"10000 x 10000 pixels \(100 MP\).*at most 16\.8 MP"):
        segment_file(cache, huge, "sky", "maskclip", out_dir=tmp_path)
    with pytest.raises(AppInputError, match="no image"):
        segment_file(cache, None, "sky", "maskclip", out_dir=tmp_path)


def test_export_space_pins_the_installed_versions(tmp_path: Path) -> None:
    folder = export_space(tmp_path / "space", method="reclip")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert f"seg-cli=={importlib.metadata.version('seg-cli')}" in requirements
    assert f"seg-zoo=={importlib.metadata.version('seg-zoo')}" in requirements
    assert any(line.startswith("gradio==") for line in requirements)
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\n")
    assert "sdk: gradio" in readme
    assert "app_file: app.py" in readme
    source = (folder / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert "build_app(method='reclip')" in source


def test_seg_app_export_space_command(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    result = run_seg("app", "--export-space", str(tmp_path / "space"))
    assert result.exit_code == 0, result.text
    assert (tmp_path / "space" / "app.py").is_file()
    assert run_seg("app", "--method", "nope", "--export-space", str(tmp_path / "x")).exit_code == 2


# ---------------------------------------------------------------------------------------------------------------
# Through Gradio: the page's API with gradio_client
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    pytest.importorskip("gradio", reason="the app needs the seg-cli[app] extra (Gradio)")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = webapp.build_app(examples=0)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


def _call(url: str, image: Path, classes: str, method: str = "maskclip", model: str | None = None) -> Any:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.predict(handle_file(str(image)), classes, method, model, "none", "auto", api_name="/segment")


def test_gradio_client_gets_the_label_map_of_seg_predict(
    served: str, picture: Path, run_seg: Callable[..., Any], tmp_path: Path
) -> None:
    overlay, areas, label_png, summary = _call(served, picture, "sky, grass, cow")
    predicted = run_seg("predict", str(picture), "-m", "maskclip", "-c", "sky,grass,cow", "-o", str(tmp_path))
    assert predicted.exit_code == 0, predicted.text
    assert np.array_equal(np.asarray(Image.open(label_png)), np.asarray(Image.open(tmp_path / "scene_labels.png")))
    assert summary.startswith("maskclip-vit-tiny-p8.synthetic: ")
    assert {row[0] for row in areas["data"]} <= {"sky", "grass", "cow"}
    assert Image.open(overlay).size[0] >= 96


def test_errors_reach_the_client_and_the_app_keeps_serving(served: str, picture: Path, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="class names"):
        _call(served, picture, "")
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(AppError, match="not an image"):
        _call(served, text, "sky")
    with pytest.raises(AppError, match="no zoo entry"):
        _call(served, picture, "sky", model="nope-model.x")
    assert _call(served, picture, "sky, grass")[3].startswith("maskclip-vit-tiny-p8.synthetic")


@pytest.mark.slow
def test_twenty_concurrent_requests_all_come_back_with_their_own_answer(
    served: str, cache: SegmenterCache, tmp_path: Path
) -> None:
    # Four different pictures that share a file name (as two users' "image.png" do): each of the 20 concurrent
    # requests must get the label map of its own picture, whole (a shared output file once cost 4 of 20).
    import shutil

    from gradio_client import Client, handle_file

    from seg_eval.world import generate_split

    generate_split(tmp_path / "world", "val", 4, seed=1000, fmt="coco")
    pictures = []
    for index, source in enumerate(sorted((tmp_path / "world" / "images" / "val").iterdir())):
        path = tmp_path / f"user{index}" / "image.png"
        path.parent.mkdir()
        shutil.copyfile(source, path)
        pictures.append(path)
    expected = [segment_file(cache, p, "sky, grass, cow", "maskclip", out_dir=p.parent).labels for p in pictures]
    assert all(not np.array_equal(expected[0], other) for other in expected[1:])
    client = Client(served, verbose=False)
    jobs = [
        client.submit(
            handle_file(str(pictures[n % 4])), "sky, grass, cow", "maskclip", None, "none", "auto", api_name="/segment"
        )
        for n in range(20)
    ]
    results = [job.result(timeout=300) for job in jobs]
    assert len(results) == 20
    for n, (overlay, _, label_png, summary) in enumerate(results):
        assert np.array_equal(np.asarray(Image.open(label_png)), expected[n % 4]), n
        assert Image.open(overlay).size[0] >= 96
        assert summary.startswith("maskclip-vit-tiny-p8.synthetic")
