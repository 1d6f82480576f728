"""Build a method's segmenter from the command line's ``--method`` and ``--model``, through the zoo.

``seg eval``, ``seg predict``, ``seg demo`` and the app all load models with :func:`seg_zoo.load`, so they accept
the same sources (see ``seg zoo --help`` and docs/zoo.md):

- nothing: the method's synthetic-world checkpoint (bundled in seg-zoo, no network);
- a zoo name ``method-arch.tag`` (``seg zoo list``), ``hf-hub:org/name[@rev]``, ``local-dir:PATH`` or a folder
  written by ``seg train METHOD`` or ``seg_zoo.save_pretrained``;
- for ``maskclip`` / ``dense-clip``: an open_clip ``NAME/TAG`` such as ``ViT-B-16/openai``;
- for ``groupvit``: ``hf-hub:nvidia/groupvit-gcc-yfcc`` (transformers), or an official ``.pth`` with
  ``--allow-pickle``.

A folder of another method (e.g. a GroupViT trained with InfoNCE given to ``--method simcon``) is refused with the
method that trained it. GroupViT, PGSeg and SimCon models always normalise pixels with the statistics they were
trained with, whatever the preset says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from seg_cli.unavailable import not_available
from seg_zoo.build import CLIP_METHODS, METHODS, ModelGeometry, PresetSpec

if TYPE_CHECKING:
    from seg_core import Segmenter
    from seg_models.clip import ClipModel

__all__ = [
    "AVAILABLE_METHODS",
    "CLIP_METHODS",
    "BuiltSegmenter",
    "ModelGeometry",
    "build_segmenter",
    "default_model",
    "ensure_available",
    "load_clip_source",
]

AVAILABLE_METHODS: tuple[str, ...] = METHODS
"""Methods whose model code has landed, in the order ``seg demo`` runs them."""


@dataclass(frozen=True)
class BuiltSegmenter:
    """A segmenter and the names to record it under."""

    segmenter: Segmenter
    method: str
    model: str


def default_model(method: str) -> str:
    """The zoo name a method uses when ``--model`` is not given (its synthetic-world checkpoint)."""
    from seg_zoo import default_entry

    return default_entry(method).name


def _as_config_error(error: Exception, model: str | None) -> Exception:
    """Hub and registry failures as :class:`ConfigError` with the model named (the CLI prints those)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    from seg_core import ConfigError

    if isinstance(error, KeyError):
        return ConfigError(str(error.args[0]) if error.args else str(error))
    if isinstance(error, LocalEntryNotFoundError | OfflineModeIsEnabled):
        return ConfigError(
            f"--model {model}: not in the Hub cache and the Hub cannot be reached ({error.__class__.__name__}); "
            "run `seg zoo pull` with a connection, or unset HF_HUB_OFFLINE"
        )
    if isinstance(error, HfHubHTTPError):
        return ConfigError(f"--model {model}: the Hub refused it: {str(error).splitlines()[0]}")
    return error


def load_clip_source(model: str | None) -> tuple[ClipModel, str]:
    """Load a CLIP from a command-line model source; returns the model and the name to record."""
    from seg_zoo import load_clip_model

    try:
        return load_clip_model(model)
    except Exception as error:  # translated for the CLI's error printing; anything else re-raised as is
        raise _as_config_error(error, model) from None


def ensure_available(method: str, command: str) -> None:
    """Exit 2 with a clear message when ``method``'s model code has not landed (before any work is done)."""
    if method not in AVAILABLE_METHODS:
        not_available(f"{command} --method {method}", f"the {method} issue (its model code in seg-models)")


def build_segmenter(
    method: str, model: str | None, preset: PresetSpec, *, allow_pickle: bool = False
) -> BuiltSegmenter:
    """The segmenter of ``method`` with weights from ``model`` under ``preset``.

    ``preset`` may be a function of the loaded model's geometry (e.g. windows of its training size).

    Raises:
        typer.Exit: (code 2) the method's model code is not available yet.
        FileNotFoundError: the model folder does not exist.
        seg_core.ConfigError: the folder holds another method's model, an unknown zoo name, a Hub failure.
    """
    import seg_zoo

    ensure_available(method, "seg")
    try:
        resolved = seg_zoo.resolve(model, method=method, allow_pickle=allow_pickle)
        segmenter = seg_zoo.build_resolved(resolved, preset=preset, allow_pickle=allow_pickle)
    except Exception as error:
        raise _as_config_error(error, model) from None
    return BuiltSegmenter(segmenter, method, resolved.source)
