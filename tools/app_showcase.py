"""A screenshot of ``seg app`` at work and a load test of its ``/segment`` endpoint.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 hatch run python tools/app_showcase.py
    hatch run python tools/app_showcase.py --requests 40 --concurrency 10 --no-screenshot

The app (:func:`seg_cli.webapp.build_app`) runs in this process on a free loopback port. Then:

1. **Screenshot** (unless ``--no-screenshot``): headless Chromium, driven by Playwright, opens the page at
   1280 x 900, picks the first synthetic-world example (its image and the classes
   "sky, grass, water, cow, boat, duck"), presses Segment, waits for the overlay and the summary, and saves the page
   to ``--screenshot``. Chromium is ``$SEG_CHROMIUM`` or the first of ``chromium``, ``chromium-browser``,
   ``google-chrome`` on ``PATH`` (never Playwright's own download).
2. **Load**: one warm-up request (it loads the model), then ``--requests`` requests sent through ``gradio_client``
   from a pool of ``--concurrency`` threads, all on the same synthetic-world image. Each latency runs from submit to
   result. A request is lost when it raises or its result has no readable label PNG of the image's size with
   class ids in range. The report gives latency p50/p90/max (nearest rank) and throughput (answered requests over the
   wall time of the batch), prints it, and writes it to ``docs/benchmarks.md`` between the markers
   ``<!-- app-load:begin -->`` and ``<!-- app-load:end -->`` (appended when they are missing).

No paper equations: this is an operational benchmark of the web app. Torch's thread count follows
``OMP_NUM_THREADS`` as the caller sets it. The exit status is 1 when a request was lost.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BEGIN_MARKER",
    "CHROMIUM_FLAGS",
    "END_MARKER",
    "LoadReport",
    "chromium_executable",
    "load_test",
    "main",
    "percentile",
    "render_section",
    "take_screenshot",
    "write_section",
]

BEGIN_MARKER = "<!-- app-load:begin -->"
END_MARKER = "<!-- app-load:end -->"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Flags that let Debian's Chromium run headless as root in a container without reaching the network."""
METHOD = "maskclip"
"""The method of the load test (the cheapest)."""
LOAD_CLASSES = "grass, water, road, car, cow"
"""The load test's classes: what is in its image (world 1000, val 0), and a cow that is not."""
SCREENSHOT_METHOD = "reco"
"""The method the page opens with for the screenshot (ReCo: the best synthetic-world mIoU without training)."""
_ROOT = Path(__file__).resolve().parent.parent
_RUN_TIMEOUT_S = 300.0


def chromium_executable() -> str | None:
    """``$SEG_CHROMIUM`` (a path or a name on ``PATH``) when set, else the first of ``chromium``,
    ``chromium-browser``, ``google-chrome`` on ``PATH``; ``None`` when none is found."""
    override = os.environ.get("SEG_CHROMIUM", "").strip()
    if override:
        return shutil.which(override)
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-quantile of ``values`` (``q`` in (0, 1]): the smallest value with at least a
    fraction ``q`` of the values at or below it.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside (0, 1].
    """
    if not values:
        raise ValueError("percentile: values is empty; pass at least one latency")
    if not 0 < q <= 1:
        raise ValueError(f"percentile: q={q!r} is outside (0, 1]; pass e.g. 0.5 for the median")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _queue_limit(page: Any) -> int | None:
    """The concurrency limit of the page's ``/segment`` event (the queue's default when the event sets none)."""
    for fn in page.fns.values():
        if fn.api_name == "segment":
            limit = fn.concurrency_limit
            if limit == "default":
                limit = page._queue.default_concurrency_limit
            return int(limit) if limit is not None else None
    return None


def take_screenshot(url: str, path: Path, model: str, classes: str, *, width: int = 1280, height: int = 900) -> float:
    """Drive Chromium on the app at ``url`` with its first example, wait for the result, save the page to ``path``.

    Args:
        url: The page's address.
        path: Where the PNG goes (parent folders are created).
        model: The model name the summary must mention once the result is in.
        classes: The classes of the first example (what clicking it types).
        width: Viewport width in CSS pixels.
        height: Viewport height in CSS pixels.

    Returns:
        Seconds from pressing Segment to the result on the page.

    Raises:
        RuntimeError: No Chromium executable was found.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError(
            "no Chromium found (chromium, chromium-browser, google-chrome on PATH, or $SEG_CHROMIUM): "
            "apt-get install chromium, or pass --no-screenshot"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector("#seg-run")
            page.get_by_text("val_000000.png").first.click()
            page.wait_for_function(
                "classes => document.querySelector('#seg-classes textarea').value === classes"
                " && document.querySelector('#seg-image').innerText.replace(/\\s/g, '').includes('val_000000')",
                arg=classes,
            )
            start = time.perf_counter()
            page.locator("#seg-run").click()
            page.wait_for_function(
                "model => (document.querySelector('#seg-summary textarea') || {value: ''}).value.includes(model)",
                arg=model,
                timeout=_RUN_TIMEOUT_S * 1000,
            )
            seconds = time.perf_counter() - start
            overlay = page.locator("#seg-overlay img").first
            overlay.wait_for(state="visible")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
            page.evaluate("window.scrollTo(0, 0)")  # clicking the example scrolled down to it
            page.wait_for_timeout(500)  # let the table and the progress bar settle before the picture
            page.screenshot(path=str(path))
            return seconds
        finally:
            browser.close()


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_test` measured."""

    requests: int
    concurrency: int
    latencies: list[float]
    failures: list[str]
    wall_seconds: float
    warmup_seconds: float

    @property
    def lost(self) -> int:
        """Requests that raised or came back without a valid label PNG."""
        return len(self.failures)

    @property
    def throughput(self) -> float:
        """Answered requests per second of the batch's wall time."""
        return len(self.latencies) / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _check_result(result: Any, size: tuple[int, int], classes: int, model: str) -> str | None:
    """Why ``result`` (the ``/segment`` outputs) is not a valid answer, or ``None`` when it is."""
    import numpy as np
    from PIL import Image

    if not isinstance(result, (tuple, list)) or len(result) != 4:
        return f"expected 4 outputs, got {type(result).__name__}"
    _, _, label_png, summary = result
    if not label_png or not Path(str(label_png)).is_file():
        return f"no label PNG (got {label_png!r})"
    with Image.open(str(label_png)) as labels:
        if labels.format != "PNG" or labels.size != size:
            return f"label map is {labels.format} {labels.size}, expected PNG {size}"
        ids = np.asarray(labels)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high > classes:  # ids 0 .. classes - 1, plus at most one background id
        return f"label ids {low}..{high} out of range for {classes} classes"
    if model not in str(summary):
        return f"summary {summary!r} does not name {model}"
    return None


def load_test(url: str, image: Path, model: str, *, requests: int, concurrency: int, download_dir: Path) -> LoadReport:
    """One warm-up request, then ``requests`` concurrent ``/segment`` calls from ``concurrency`` threads.

    Args:
        url: The app's address.
        image: The image every request segments.
        model: The model every request names.
        requests: How many requests to time (>= 1).
        concurrency: Client threads sending them (>= 1).
        download_dir: Where ``gradio_client`` puts the returned files.

    Returns:
        Latencies of the answered requests and the reasons of the lost ones.

    Raises:
        ValueError: ``requests`` or ``concurrency`` is below 1.
    """
    from gradio_client import Client, handle_file
    from PIL import Image

    if requests < 1:
        raise ValueError(f"load_test: requests={requests} must be at least 1")
    if concurrency < 1:
        raise ValueError(f"load_test: concurrency={concurrency} must be at least 1")
    with Image.open(image) as probe:
        size = probe.size
    count = len([name for name in LOAD_CLASSES.split(",") if name.strip()])
    client = Client(
        url, verbose=False, analytics_enabled=False, max_workers=max(40, concurrency), download_files=str(download_dir)
    )
    arguments = (handle_file(str(image)), LOAD_CLASSES, METHOD, model, "none", "auto")

    start = time.perf_counter()
    warm = client.predict(*arguments, api_name="/segment")
    warmup_seconds = time.perf_counter() - start
    problem = _check_result(warm, size, count, model)
    if problem is not None:
        raise RuntimeError(f"the warm-up request failed: {problem}")

    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def one(index: int) -> None:
        begin = time.perf_counter()
        try:
            result = client.submit(*arguments, api_name="/segment").result(timeout=_RUN_TIMEOUT_S)
            reason = _check_result(result, size, count, model)
        except Exception as error:  # a lost request is counted, not fatal
            reason = f"{type(error).__name__}: {error}"
        elapsed = time.perf_counter() - begin
        with lock:
            if reason is None:
                latencies.append(elapsed)
            else:
                failures.append(f"request {index}: {reason}")

    batch_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - batch_start
    client.close()
    return LoadReport(requests, concurrency, latencies, failures, wall, warmup_seconds)


def render_section(
    report: LoadReport,
    *,
    model: str,
    image_size: tuple[int, int],
    queue_limit: int | None,
    screenshot: Path | None,
    screenshot_seconds: float | None,
) -> str:
    """The markdown section (markers included) for ``docs/benchmarks.md``."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    import torch

    from seg_cli.segmenters import default_model

    latencies = report.latencies
    p50, p90, worst = (
        (percentile(latencies, 0.5), percentile(latencies, 0.9), max(latencies)) if latencies else (0.0, 0.0, 0.0)
    )
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        BEGIN_MARKER,
        "## seg app under load (`tools/app_showcase.py`)",
        "",
        f"`HF_HUB_OFFLINE=1 OMP_NUM_THREADS={omp} hatch run python tools/app_showcase.py --requests {report.requests} "
        f"--concurrency {report.concurrency}` — {datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.get_num_threads()} thread(s), Python {platform.python_version()}, "
        f"gradio {version('gradio')}, gradio_client {version('gradio_client')}. The app runs in the script's process "
        'on 127.0.0.1; the requests go through `gradio_client` (`Client.submit(..., api_name="/segment")`) from a '
        "thread pool, all with the same image and classes.",
        "",
        "| model | image | classes | requests | client threads | queue concurrency limit | lost | p50 s | p90 s "
        "| max s | throughput req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {model} | synthetic world val_000000, {image_size[0]}×{image_size[1]} | {len(LOAD_CLASSES.split(','))} "
        f"| {report.requests} | {report.concurrency} | {queue_limit if queue_limit is not None else '?'} "
        f"| {report.lost} | {p50:.3f} | {p90:.3f} | {worst:.3f} | {report.throughput:.2f} |",
        "",
        f"Latency runs from submit to result, queueing included: with {report.concurrency} clients and at most "
        f"{queue_limit} requests computed at once, most of it is waiting in the queue. One warm-up request "
        f"({report.warmup_seconds:.2f} s; it loads the model unless the browser's request already did) is not "
        "counted. A request is lost when it raises or returns no readable label PNG of the image's size with class ids "
        "in range.",
    ]
    if report.failures:
        lines += ["", "Lost requests:", "", *[f"- {failure}" for failure in report.failures[:10]]]
    if screenshot is not None:
        relative = os.path.relpath(screenshot.resolve(), (_ROOT / "docs").resolve())
        lines += [
            "",
            f"The page after a request from headless Chromium (1280×900; the result came "
            f"{screenshot_seconds:.1f} s after pressing Segment, model load included):",
            "",
            f"![seg app: a synthetic-world example segmented by {default_model(SCREENSHOT_METHOD)}]({relative})",
        ]
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the text between :data:`BEGIN_MARKER` and :data:`END_MARKER` in ``path`` with ``section`` (which
    carries the markers), or append ``section`` when the markers are missing.

    Raises:
        ValueError: Only one of the two markers is in the file, or they are out of order.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin == -1 and end == -1:
        path.write_text(text.rstrip("\n") + "\n\n" + section if text else section, encoding="utf-8")
        return
    if begin == -1 or end == -1 or end < begin:
        raise ValueError(
            f"{path}: found {BEGIN_MARKER!r} at {begin} and {END_MARKER!r} at {end}; "
            "keep both markers, begin before end, or delete both to append a fresh section"
        )
    after = text[end + len(END_MARKER) :].lstrip("\n")
    path.write_text(text[:begin] + section + ("\n" + after if after else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the showcase: screenshot, load test, report. Returns the exit status (1 when a request was lost)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="requests in the timed batch (default 20)")
    parser.add_argument("--concurrency", type=int, default=20, help="client threads sending them (default 20)")
    parser.add_argument("--screenshot", type=Path, default=_ROOT / "docs" / "images" / "app.png")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the browser part")
    parser.add_argument("--benchmarks", type=Path, default=_ROOT / "docs" / "benchmarks.md", help="report goes here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error(f"--requests {args.requests} / --concurrency {args.concurrency}: both must be at least 1")

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from seg_cli.segmenters import default_model
    from seg_cli.webapp import build_app
    from seg_eval.world import generate_split

    model = default_model(METHOD)
    work = Path(tempfile.mkdtemp(prefix="seg-showcase-"))
    generate_split(work / "world", "val", 1, seed=1000, fmt="coco")
    image = work / "world" / "images" / "val" / "val_000000.png"
    from PIL import Image

    with Image.open(image) as probe:
        image_size = probe.size

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    page = build_app(method=SCREENSHOT_METHOD, examples=4)
    queue_limit = _queue_limit(page)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        screenshot_seconds = None
        if not args.no_screenshot:
            from seg_cli.webapp import example_inputs

            shown_classes = example_inputs(work / "examples", 1)[0][1]
            screenshot_seconds = take_screenshot(url, args.screenshot, default_model(SCREENSHOT_METHOD), shown_classes)
            print(f"screenshot: {args.screenshot} (result {screenshot_seconds:.1f} s after Segment)")
        report = load_test(
            url,
            image,
            model,
            requests=args.requests,
            concurrency=args.concurrency,
            download_dir=work / "downloads",
        )
    finally:
        page.close()
    section = render_section(
        report,
        model=model,
        image_size=image_size,
        queue_limit=queue_limit,
        screenshot=None if args.no_screenshot else args.screenshot,
        screenshot_seconds=screenshot_seconds,
    )
    print(section)
    write_section(args.benchmarks, section)
    print(f"written to {args.benchmarks}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
