"""``seg app``: an interactive page to segment any image with your own class names, with every method of the zoo.

Built with Gradio (the optional extra ``seg-cli[app]``, so the command-line install stays light). Upload an image or
pick one of the synthetic-world examples, type class names, choose the method, its model (a zoo name, ``hf-hub:``
or ``local-dir:``), a refiner and a background policy; the page shows the overlay with a legend, the area of each
class, and offers the label PNG (pixel values are class ids, in the order typed; ``background`` first when a
background policy is chosen). The label map is computed by the same functions as ``seg predict``
(:mod:`seg_cli.predict`), so both give the same answer on the same input.

The first request for a model loads it once; later requests reuse it (one lock per model, so two first requests do
not load it twice). Bad input (no class names, a file that is not an image, an image above :data:`MAX_PIXELS`, an
unknown model, classes a closed-set model was not trained on) shows a message in the page and the app keeps
serving. ``--export-space DIR`` writes what a Hugging Face Space needs: ``app.py``, ``requirements.txt`` pinned to
the installed seg versions, and a ``README.md`` with the Space metadata.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from seg_cli.console import stderr_console, stdout_console

if TYPE_CHECKING:
    from seg_cli.segmenters import BuiltSegmenter

__all__ = [
    "MAX_PIXELS",
    "SegmentResult",
    "SegmenterCache",
    "build_app",
    "example_inputs",
    "export_space",
    "run_app",
    "segment_file",
]

MAX_PIXELS = 4096 * 4096
"""The largest image the app segments (16.8 megapixels); larger ones are refused with a message."""
REFINERS = ("none", "pamr", "crf")
BACKGROUNDS = ("auto", "none", "class", "threshold")


class AppInputError(ValueError):
    """Input the page reports to the user (the app keeps serving)."""


@dataclass
class SegmenterCache:
    """Loaded segmenters by ``(method, model, refinement)``: each is built once, under its own lock."""

    _built: dict[tuple[str, str, str], BuiltSegmenter] = field(default_factory=dict)
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def get(self, method: str, model: str | None, refinement: str) -> BuiltSegmenter:
        """The segmenter of ``method`` with ``model`` (``None``: the method's default) and ``refinement``."""
        from seg_cli.predict import predict_preset
        from seg_cli.segmenters import build_segmenter, default_model

        key = (method, model or default_model(method), refinement)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._built:
                self._built[key] = build_segmenter(method, model, predict_preset(method, refinement))
            return self._built[key]

    def __len__(self) -> int:
        return len(self._built)


@dataclass(frozen=True)
class SegmentResult:
    """What one request returns: the overlay, the per-class areas and the label PNG."""

    overlay: Any
    areas: list[tuple[str, float, tuple[int, int, int]]]
    labels: Any
    label_png: Path
    model: str


def _check_image(path: str | Path | None) -> Any:
    from PIL import Image, UnidentifiedImageError

    from seg_cli.predict import read_rgb

    if path is None:
        raise AppInputError("no image: upload one, or pick an example below")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError) as error:
        raise AppInputError(
            f"the file is not an image seg can read ({type(error).__name__}); upload a PNG or JPEG"
        ) from None
    if width * height > MAX_PIXELS:
        raise AppInputError(
            f"the image is {width} x {height} pixels ({width * height / 1e6:.0f} MP); the app takes at most "
            f"{MAX_PIXELS / 1e6:.1f} MP: downscale it, or run `seg predict` on it"
        )
    try:
        return read_rgb(path)
    except (UnidentifiedImageError, OSError) as error:
        raise AppInputError(f"the image cannot be decoded ({error}); upload a PNG or JPEG") from None


def segment_file(  # noqa: PLR0917 (the page's inputs, in the page's order)
    cache: SegmenterCache,
    image: str | Path | None,
    classes: str,
    method: str,
    model: str | None = None,
    refinement: str = "none",
    background: str = "auto",
    out_dir: Path | None = None,
) -> SegmentResult:
    """Segment one image file into ``classes`` (comma-separated) with ``method``: what the page does per request.

    Raises:
        AppInputError: Anything the user can fix (the message says how).
    """

    from seg_cli.methods import resolve_method
    from seg_cli.params import parse_concept_names
    from seg_cli.predict import concept_set, render_prediction, segment_rgb
    from seg_cli.segmenters import AVAILABLE_METHODS
    from seg_core import ConfigError

    try:
        names = parse_concept_names(classes or "")
        method = resolve_method(method).name
    except ValueError as error:
        raise AppInputError(f"class names: {error}" if "class" in str(error) else str(error)) from None
    if method not in AVAILABLE_METHODS:
        raise AppInputError(f"method {method!r} is not available in this installation")
    if refinement not in REFINERS or background not in BACKGROUNDS:
        raise AppInputError(
            f"refiner {refinement!r} / background {background!r}: choose from {REFINERS} / {BACKGROUNDS}"
        )
    rgb = _check_image(image)
    model = (model or "").strip() or None
    concepts = concept_set(method, names, background)
    try:
        built = cache.get(method, model, refinement)
        labels, _ = segment_rgb(built.segmenter, rgb, concepts)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        raise AppInputError(str(error.args[0]) if error.args else str(error)) from None
    picture, label_png, areas = render_prediction(rgb, labels, concepts.label_names)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="seg-app-"))
    target = folder / f"{Path(str(image)).stem}_labels.png"
    label_png.save(target)
    return SegmentResult(overlay=picture, areas=areas, labels=labels, label_png=target, model=built.model)


def example_inputs(folder: Path, count: int = 4) -> list[tuple[str, str]]:
    """``(image path, classes)`` of a few synthetic-world validation images (world seed 1000, written under
    ``folder``): the classes are those in the image's ground truth plus one that is not, as a user would type."""
    import numpy as np
    from PIL import Image

    from seg_eval.world import CLASSES, generate_split

    world = folder / "world"
    generate_split(world, "val", count, seed=1000, fmt="coco")
    names = [c.name for c in CLASSES]
    examples = []
    for image in sorted((world / "images" / "val").iterdir()):
        with Image.open(world / "annotations" / "semantic_val" / image.name) as semantic:
            present = [names[i] for i in np.unique(np.asarray(semantic)) if i < len(names)]
        distractor = next(name for name in ("cow", "duck", "boat") if name not in present)
        examples.append((str(image), ", ".join([*present, distractor])))
    return examples


def _model_choices(method: str) -> list[str]:
    import seg_zoo

    names = seg_zoo.list_models(method="maskclip" if method == "dense-clip" else method)
    default = seg_zoo.default_entry(method).name
    return [default, *[name for name in names if name != default]]


def build_app(*, method: str = "maskclip", model: str | None = None, examples: int = 4) -> Any:
    """The Gradio page (a ``gradio.Blocks``); call ``.launch()`` on it.

    Args:
        method: The method selected when the page opens.
        model: The model selected when the page opens (default: the method's synthetic-world checkpoint).
        examples: How many synthetic-world example images to offer.
    """
    import os

    from PIL import Image

    # No usage reports or version checks to gradio.app unless the user asks for them (read at import).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise RuntimeError("the app needs Gradio: pip install 'seg-cli[app]'") from None

    from seg_cli.methods import METHODS
    from seg_cli.segmenters import AVAILABLE_METHODS

    cache = SegmenterCache()
    work = Path(tempfile.mkdtemp(prefix="seg-app-"))
    shown = [m for m in METHODS if m.name in AVAILABLE_METHODS]

    def run(  # noqa: PLR0917 (Gradio passes the inputs positionally)
        image: str | None,
        classes: str,
        method: str,
        model: str | None,
        refinement: str,
        background: str,
        progress: Any = gr.Progress(),  # noqa: B008 (Gradio injects the tracker through the default)
    ) -> tuple[str, list[list[Any]], str, str]:
        progress(0.1, desc="loading the model (once per model)")
        # Each request writes into its own folder and hands Gradio files, not arrays: concurrent requests must not
        # share a label PNG name, and Gradio 6 rewrites its cache file of an array in place (a half-written file
        # under another request's download).
        folder = Path(tempfile.mkdtemp(dir=work))
        try:
            result = segment_file(cache, image, classes, method, model, refinement, background, folder)
        except AppInputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        overlay_path = folder / f"{result.label_png.stem.removesuffix('_labels')}_overlay.png"
        Image.fromarray(result.overlay).save(overlay_path)
        progress(1.0, desc="done")
        rows = [
            [name, round(100 * fraction, 1), "#{:02x}{:02x}{:02x}".format(*color)]
            for name, fraction, color in result.areas
        ]
        summary = f"{result.model}: " + ", ".join(f"{name} {100 * fraction:.0f}%" for name, fraction, _ in result.areas)
        return str(overlay_path), rows, str(result.label_png), summary

    def models_for(selected: str) -> Any:
        choices = _model_choices(selected)
        return gr.Dropdown(choices=choices, value=choices[0])

    with gr.Blocks(title="seg: segment anything you can name") as page:
        gr.Markdown(
            "# seg: language-guided segmentation\n"
            "Upload an image (or pick an example), type the classes to find, choose a method, press **Segment**. "
            "Models are the zoo's (`seg zoo list`); type `hf-hub:org/name` or `local-dir:PATH` for others."
        )
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: the app reads the bytes as uploaded (no re-encoding, so the label map equals
                # `seg predict`'s on the same file) and answers a non-image with its own message.
                image = gr.File(label="image", file_types=["image"], type="filepath", elem_id="seg-image")
                classes = gr.Textbox(
                    label="classes (comma-separated)", placeholder="cow, grass, sky", elem_id="seg-classes"
                )
                method_box = gr.Dropdown(
                    choices=[(f"{m.display_name} ({m.name})", m.name) for m in shown],
                    value=method,
                    label="method",
                    elem_id="seg-method",
                )
                model_box = gr.Dropdown(
                    choices=_model_choices(method),
                    value=model or _model_choices(method)[0],
                    allow_custom_value=True,
                    label="model",
                    elem_id="seg-model",
                )
                with gr.Row():
                    refiner = gr.Radio(list(REFINERS), value="none", label="refiner", elem_id="seg-refiner")
                    background = gr.Radio(list(BACKGROUNDS), value="auto", label="background", elem_id="seg-background")
                button = gr.Button("Segment", variant="primary", elem_id="seg-run")
            with gr.Column():
                overlay = gr.Image(
                    label="overlay", type="filepath", format="png", interactive=False, elem_id="seg-overlay"
                )
                summary = gr.Textbox(label="result", interactive=False, elem_id="seg-summary")
                areas = gr.Dataframe(
                    headers=["class", "area %", "colour"],
                    label="area per class",
                    interactive=False,
                    elem_id="seg-areas",
                )
                download = gr.File(label="label map (PNG, pixel value = class id)", elem_id="seg-download")
        if examples:
            gr.Examples(
                examples=[list(example) for example in example_inputs(work, examples)],
                inputs=[image, classes],
                label="synthetic-world examples",
            )
        method_box.change(models_for, inputs=method_box, outputs=model_box)
        button.click(
            run,
            inputs=[image, classes, method_box, model_box, refiner, background],
            outputs=[overlay, areas, download, summary],
            api_name="segment",
        )
    page.queue(default_concurrency_limit=2, max_size=64)
    return page


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def export_space(folder: Path, *, method: str = "maskclip") -> Path:
    """Write a Hugging Face Space (Gradio SDK) that runs this app: ``app.py``, ``requirements.txt`` pinned to the
    installed seg versions, ``README.md`` with the Space metadata. Upload the folder to a Space to publish it."""
    folder.mkdir(parents=True, exist_ok=True)
    gradio_version = _installed("gradio") or "5.0.0"
    (folder / "app.py").write_text(
        '"""A Hugging Face Space running the seg app (written by `seg app --export-space`)."""\n\n'
        "from seg_cli.webapp import build_app\n\n"
        f"demo = build_app(method={method!r})\n\n"
        'if __name__ == "__main__":\n'
        "    demo.launch()\n",
        encoding="utf-8",
    )
    from seg_cli.versions import NOT_INSTALLED, installed_versions

    pins = [f"{name}=={version}" for name, version in installed_versions() if version != NOT_INSTALLED]
    extra = [f"{name}=={version}" for name in ("torch", "open_clip_torch") if (version := _installed(name))]
    (folder / "requirements.txt").write_text("\n".join([*pins, *extra, f"gradio=={gradio_version}"]) + "\n")
    (folder / "README.md").write_text(
        "---\n"
        "title: seg\n"
        "emoji: 🎨\n"
        "colorFrom: indigo\n"
        "colorTo: green\n"
        "sdk: gradio\n"
        f"sdk_version: {gradio_version}\n"
        "app_file: app.py\n"
        "pinned: false\n"
        "license: apache-2.0\n"
        "short_description: Segment any image into the classes you name, without pixel labels\n"
        "tags:\n  - image-segmentation\n  - open-vocabulary\n  - clip\n"
        "---\n\n"
        "# seg\n\n"
        "Segment any image into the classes you name with MaskCLIP, ReCo, ZUTIS, ReCLIP++, GroupViT, PGSeg or\n"
        "MV-SimCon ([seg](https://github.com/seg-toolkit/seg)). The models are the zoo's synthetic-world\n"
        "checkpoints, bundled in `seg-zoo`; type a zoo name or `hf-hub:org/name` in the model box for others.\n",
        encoding="utf-8",
    )
    return folder


def run_app(
    method: Annotated[str, typer.Option("--method", "-m", help="Method selected when the page opens.")] = "maskclip",
    model: Annotated[
        str | None, typer.Option("--model", help="Model selected when the page opens (zoo name, hf-hub:, local-dir:).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to serve on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on.", min=1, max=65535)] = 7860,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export-space", help="Write a Hugging Face Space folder here instead of serving.", file_okay=False
        ),
    ] = None,
) -> None:
    """Serve an interactive page: upload an image, type class names, pick a method and a model, see the result."""
    from seg_cli.methods import resolve_method

    try:
        method = resolve_method(method).name
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--method") from None
    if export is not None:
        written = export_space(export, method=method)
        stdout_console().print(f"Space written to {written}: upload it to a Gradio Space to publish the app")
        return
    try:
        page = build_app(method=method, model=model)
    except RuntimeError as error:
        stderr_console().print(f"[bold red]seg app:[/] {error}")
        raise typer.Exit(code=1) from None
    stdout_console().print(f"seg app: http://{host}:{port} (Ctrl-C stops it)")
    page.launch(server_name=host, server_port=port, show_error=True)
