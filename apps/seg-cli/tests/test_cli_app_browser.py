"""``seg app`` in a real browser: headless Chromium (driven by Playwright) uploads an image, types class names and
presses Segment on the Gradio page of :mod:`seg_cli.webapp`, then reads the overlay, the summary and the area table
off the rendered page; a request without class names shows an error toast and the app keeps serving.

No paper equations are implemented here: these are end-to-end checks of the page. They skip (and say why) when
Gradio or Playwright is not installed or no Chromium executable is found (``chromium``, ``chromium-browser`` or
``google-chrome`` on ``PATH``; the environment variable ``SEG_CHROMIUM`` names another one). Playwright's own
browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM_FLAGS", "chromium_executable", "free_port", "write_test_image"]

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Flags that let Debian's Chromium run headless as root in a container without reaching the network."""

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
_MODEL = "maskclip-vit-tiny-p8.synthetic"
_CLASSES = ("sky", "grass", "cow")
_RUN_TIMEOUT_MS = 120_000  # the first request loads the model
_UI_TIMEOUT_MS = 30_000


def chromium_executable() -> str | None:
    """The Chromium to drive: ``$SEG_CHROMIUM`` when set (a path or a name on ``PATH``), else the first of
    ``chromium``, ``chromium-browser``, ``google-chrome`` found on ``PATH``; ``None`` when there is none."""
    override = os.environ.get("SEG_CHROMIUM", "").strip()
    if override:
        return shutil.which(override)
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_test_image(path: Path) -> Path:
    """Write a 96 x 64 RGB PNG: blue sky over green grass with a brown block and a grey stripe; returns ``path``."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (110, 165, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 30, 95, 63), fill=(60, 160, 60))
    draw.rectangle((36, 24, 62, 44), fill=(125, 80, 40))
    draw.rectangle((70, 50, 95, 56), fill=(128, 128, 128))
    image.save(path)
    return path


def _skip_reason() -> str | None:
    import importlib.util

    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install 'gradio>=5' 'playwright>=1.45' to run the browser test"
    if chromium_executable() is None:
        override = os.environ.get("SEG_CHROMIUM", "").strip()
        if override:
            return f"SEG_CHROMIUM={override!r} is not an executable: point it at a Chromium or unset it"
        return (
            "no Chromium found (looked for chromium, chromium-browser, google-chrome on PATH): "
            "apt-get install chromium, or set SEG_CHROMIUM"
        )
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The ``seg app`` page, served in-process on a free loopback port for this module."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from seg_cli.webapp import build_app

    port = free_port()
    page = build_app(method="maskclip", model=None, examples=4)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser_page(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium tab on the app with the synthetic test image already uploaded."""
    from playwright.sync_api import sync_playwright

    image = write_test_image(tmp_path_factory.mktemp("browser") / "scene.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(_UI_TIMEOUT_MS)
            page.goto(app_url)
            page.wait_for_selector("#seg-run")
            page.locator("#seg-image input[type=file]").set_input_files(str(image))
            # The uploaded file's name replaces the drop zone once the upload has finished.
            page.wait_for_function(
                "name => document.querySelector('#seg-image').innerText.replace(/\\s/g, '').includes(name)",
                arg=image.name,
            )
            yield page
        finally:
            browser.close()


def _summary(page: Any) -> str:
    value: str = page.locator("#seg-summary textarea").input_value()
    return value


def _segment(page: Any, classes: str) -> str:
    """Type ``classes``, press Segment, and wait for a new summary naming the model; returns that summary."""
    before = _summary(page)
    page.locator("#seg-classes textarea").fill(classes)
    page.locator("#seg-run").click()
    page.wait_for_function(
        "([model, before]) => { const box = document.querySelector('#seg-summary textarea');"
        " return box !== null && box.value !== before && box.value.includes(model); }",
        arg=[_MODEL, before],
        timeout=_RUN_TIMEOUT_MS,
    )
    return _summary(page)


def _area_classes(page: Any, expected: list[str]) -> list[str]:
    """The class column of the rendered area table (the grid cells of column 0).

    Waits (a few seconds at most) for the column to list ``expected``, so a table still drawing the previous result
    is not read; returns what it lists then, for the caller to assert on.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    column = "#seg-areas [role=gridcell][data-col='0']"
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(
            "([selector, expected]) => { const cells = [...document.querySelectorAll(selector)]"
            ".map(cell => cell.innerText.trim()).sort();"
            " return JSON.stringify(cells) === JSON.stringify(expected); }",
            arg=[column, sorted(expected)],
            timeout=5_000,
        )
    cells: list[str] = page.locator(column).evaluate_all("cells => cells.map(cell => cell.innerText.trim())")
    return cells


def test_browser_segments_an_uploaded_image(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    summary = _segment(page, ", ".join(_CLASSES))

    # The summary reads "<model>: name pct%, ..." with only typed classes, percentages summing to about 100.
    assert summary.startswith(f"{_MODEL}: "), summary
    parts = [part.rsplit(" ", 1) for part in summary.split(": ", 1)[1].split(", ")]
    assert parts, summary
    assert all(name in _CLASSES for name, _ in parts), summary
    assert abs(sum(int(pct.rstrip("%")) for _, pct in parts) - 100) <= len(parts), summary

    overlay = page.locator("#seg-overlay img").first
    overlay.wait_for(state="visible")
    src = overlay.get_attribute("src")
    assert src, "the overlay <img> has no src"
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
    natural = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural[0] > 0
    assert natural[1] > 0

    listed = _area_classes(page, [name for name, _ in parts])
    assert listed, "the area table has no rows"
    assert set(listed) <= set(_CLASSES), listed
    assert set(listed) & set(_CLASSES)
    assert sorted(listed) == sorted(name for name, _ in parts)

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, f"the screenshot is only {len(data)} bytes"


def test_browser_reports_missing_classes_and_keeps_serving(browser_page: Any) -> None:
    page = browser_page
    page.locator("#seg-classes textarea").fill("")
    page.locator("#seg-run").click()
    toast = page.locator("[data-testid='toast-body'].error").filter(has_text="class names")
    toast.first.wait_for(state="visible")
    message = toast.first.inner_text()
    assert "comma-separated class names" in message, message
    assert "empty" in message, message

    # The app still answers: a different class list gives a new result that lists only those classes.
    summary = _segment(page, "cow, sky")
    names = [part.rsplit(" ", 1)[0] for part in summary.split(": ", 1)[1].split(", ")]
    assert names, summary
    assert set(names) <= {"cow", "sky"}, summary
    listed = _area_classes(page, names)
    assert sorted(listed) == sorted(names), listed
