"""Build a method's segmenter from the command line's ``--method`` and ``--model``.

One place maps method names to model code, so ``seg eval``, ``seg predict`` and ``seg demo`` agree. A method whose
model code has not landed yet is a clear "not available" (exit 2), never a stand-in.

Model sources for the CLIP-based methods: ``None`` (the bundled reference synthetic-world CLIP), ``local-dir:PATH``,
``hf-hub:org/name``, or an open_clip ``NAME/TAG`` such as ``ViT-B-16/openai`` (downloads with internet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seg_cli.unavailable import not_available

if TYPE_CHECKING:
    from seg_core import ProtocolPreset, Segmenter
    from seg_models.clip import ClipModel

__all__ = ["BuiltSegmenter", "build_segmenter", "default_model", "ensure_available", "load_clip_source"]

CLIP_METHODS = {"maskclip": "maskclip", "dense-clip": "naive"}


@dataclass(frozen=True)
class BuiltSegmenter:
    """A segmenter and the names to record it under."""

    segmenter: Segmenter
    method: str
    model: str


def default_model(method: str) -> str:
    """The model a method uses when ``--model`` is not given (its synthetic-world checkpoint)."""
    if method in CLIP_METHODS:
        from seg_zoo.bundled import REFERENCE_CLIP

        return f"bundled:{REFERENCE_CLIP}"
    return "default"


def load_clip_source(model: str | None) -> tuple[ClipModel, str]:
    """Load a CLIP from a command-line model source; returns the model and the name to record."""
    from seg_models.clip import load_clip

    if model is None or model.startswith("bundled:"):
        from seg_zoo.bundled import REFERENCE_CLIP, bundled_model_dir

        name = REFERENCE_CLIP if model is None else model.removeprefix("bundled:")
        return load_clip(f"local-dir:{bundled_model_dir(name)}"), f"bundled:{name}"
    if model.startswith(("local-dir:", "hf-hub:")):
        return load_clip(model), model
    name, _, tag = model.partition("/")
    return load_clip(name, tag or None), model


def ensure_available(method: str, command: str) -> None:
    """Exit 2 with a clear message when ``method``'s model code has not landed (before any work is done)."""
    if method not in CLIP_METHODS:
        not_available(f"{command} --method {method}", f"the {method} issue (its model code in seg-models)")


def build_segmenter(
    method: str, model: str | None, preset: ProtocolPreset | Callable[[ClipModel], ProtocolPreset]
) -> BuiltSegmenter:
    """The segmenter of ``method`` with weights from ``model`` under ``preset``.

    ``preset`` may be a function of the loaded CLIP (e.g. windows of its training size).

    Raises:
        typer.Exit: (code 2) the method's model code is not available yet.
    """
    if method in CLIP_METHODS:
        from seg_models.maskclip import MaskCLIPSegmenter

        clip, recorded = load_clip_source(model)
        protocol = preset(clip) if callable(preset) else preset
        segmenter = MaskCLIPSegmenter(clip, protocol, variant=CLIP_METHODS[method])  # type: ignore[arg-type]
        return BuiltSegmenter(segmenter, method, recorded)
    ensure_available(method, "seg")
    raise AssertionError(f"method {method!r} is available but has no builder")
