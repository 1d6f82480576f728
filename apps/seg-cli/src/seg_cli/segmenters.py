"""Build a method's segmenter from the command line's ``--method`` and ``--model``.

One place maps method names to model code, so ``seg eval``, ``seg predict`` and ``seg demo`` agree. A method whose
model code has not landed yet is a clear "not available" (exit 2), never a stand-in.

Model sources:

- CLIP-based methods (``maskclip``, ``dense-clip``): ``None`` (the bundled reference synthetic-world CLIP),
  ``local-dir:PATH``, ``hf-hub:org/name``, or an open_clip ``NAME/TAG`` such as ``ViT-B-16/openai``.
- ``reco``: ``None`` (the bundled synthetic-world ReCo model) or ``local-dir:PATH`` / ``PATH`` of a folder written by
  ``seg train reco``; the CLIP it names in ``reco.json`` is loaded as above.
- ``reco-plus``: ``None`` (the bundled synthetic-world ReCo+ model) or a folder written by ``seg train reco-plus``.
- ``groupvit``: ``None`` (the bundled synthetic-world GroupViT), a folder written by ``seg train groupvit`` or
  ``save_groupvit`` or transformers' ``save_pretrained``, ``hf-hub:nvidia/groupvit-gcc-yfcc``, or an official ``.pth``.
- ``pgseg``: ``None`` (the bundled synthetic-world PGSeg) or a folder written by ``seg train pgseg``.
- ``zutis``: ``None`` (the bundled synthetic-world ZUTIS) or a folder written by ``seg train zutis``; the CLIP it
  names in ``zutis.json`` (whose text tower classifies) is loaded as above.

GroupViT and PGSeg always normalise pixels with the statistics they were trained with (their config's
``normalization``), whatever the preset says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from seg_cli.unavailable import not_available

if TYPE_CHECKING:
    from seg_core import Normalization, ProtocolPreset, Segmenter
    from seg_models.clip import ClipModel
    from seg_models.groupvit import GroupViT

__all__ = [
    "AVAILABLE_METHODS",
    "BuiltSegmenter",
    "ModelGeometry",
    "build_segmenter",
    "default_model",
    "ensure_available",
    "load_clip_source",
]

CLIP_METHODS = {"maskclip": "maskclip", "dense-clip": "naive"}
BUNDLED_DEFAULTS = {
    "reco": "reco-synthetic",
    "reco-plus": "reco-plus-synthetic",
    "groupvit": "groupvit-synthetic",
    "pgseg": "pgseg-synthetic",
    "zutis": "zutis-synthetic",
}
AVAILABLE_METHODS: tuple[str, ...] = (*CLIP_METHODS, "reco", "reco-plus", "groupvit", "pgseg", "zutis")
"""Methods whose model code has landed, in the order ``seg demo`` runs them."""


class ModelGeometry(Protocol):
    """What a preset function may read from a loaded model: its training size and pixel normalisation."""

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def normalization(self) -> Normalization: ...


@dataclass(frozen=True)
class _Geometry:
    image_size: tuple[int, int]
    normalization: Normalization


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
    if method in BUNDLED_DEFAULTS:
        return f"bundled:{BUNDLED_DEFAULTS[method]}"
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


def model_folder(method: str, model: str | None) -> tuple[Path, str]:
    """The folder of a folder-based model (``reco``, ``reco-plus``) and the name to record.

    ``None`` or ``bundled:NAME`` is a model shipped in seg-zoo; ``local-dir:PATH`` or a plain path is a folder.
    """
    if model is None or model.startswith("bundled:"):
        from seg_zoo.bundled import bundled_model_dir

        name = BUNDLED_DEFAULTS[method] if model is None else model.removeprefix("bundled:")
        return bundled_model_dir(name), f"bundled:{name}"
    if model.startswith("hf-hub:"):
        raise ValueError(
            f"--model {model}: {method} models are not on the Hub yet; pass a folder written by `seg train {method}`"
        )
    folder = Path(model.removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--model {model}: no folder at {folder}; pass a folder written by `seg train {method}`"
        )
    return folder, model


def _load_grouping_model(method: str, model: str | None) -> tuple[GroupViT, str]:
    """A GroupViT (``groupvit``) or PGSeg (``pgseg``) from a command-line model source."""
    if method == "groupvit" and model is not None and (model.startswith("hf-hub:") or model.endswith((".pth", ".pt"))):
        from seg_models.groupvit import load_groupvit

        return load_groupvit(model), model
    folder, recorded = model_folder(method, model)
    if method == "pgseg":
        from seg_models.pgseg import load_pgseg

        return load_pgseg(folder), recorded
    from seg_models.groupvit import load_groupvit

    return load_groupvit(folder), recorded


def ensure_available(method: str, command: str) -> None:
    """Exit 2 with a clear message when ``method``'s model code has not landed (before any work is done)."""
    if method not in AVAILABLE_METHODS:
        not_available(f"{command} --method {method}", f"the {method} issue (its model code in seg-models)")


def build_segmenter(
    method: str, model: str | None, preset: ProtocolPreset | Callable[[ModelGeometry], ProtocolPreset]
) -> BuiltSegmenter:
    """The segmenter of ``method`` with weights from ``model`` under ``preset``.

    ``preset`` may be a function of the loaded model's geometry (e.g. windows of its training size).

    Raises:
        typer.Exit: (code 2) the method's model code is not available yet.
        FileNotFoundError: the model folder does not exist.
        seg_core.ConfigError: the folder holds another method's model.
    """
    if method in CLIP_METHODS:
        from seg_models.maskclip import MaskCLIPSegmenter

        clip, recorded = load_clip_source(model)
        protocol = preset(clip) if callable(preset) else preset
        segmenter = MaskCLIPSegmenter(clip, protocol, variant=CLIP_METHODS[method])  # type: ignore[arg-type]
        return BuiltSegmenter(segmenter, method, recorded)
    if method == "reco":
        from seg_trainers.reco import load_reco, read_reco_info

        folder, recorded = model_folder(method, model)
        clip, _ = load_clip_source(str(read_reco_info(folder)["clip"]))
        protocol = preset(clip) if callable(preset) else preset
        return BuiltSegmenter(load_reco(folder, clip, protocol), method, recorded)
    if method == "reco-plus":
        from seg_trainers.reco import load_reco_plus, read_reco_plus_info

        folder, recorded = model_folder(method, model)
        info = read_reco_plus_info(folder)
        geometry = _Geometry(info.image_size, info.normalization)
        protocol = preset(geometry) if callable(preset) else preset
        return BuiltSegmenter(load_reco_plus(folder, protocol), method, recorded)
    if method in ("groupvit", "pgseg"):
        from seg_models.groupvit import GroupViTSegmenter

        grouping, recorded = _load_grouping_model(method, model)
        vision = grouping.config.vision
        geometry = _Geometry((vision.image_size, vision.image_size), grouping.config.normalization)
        protocol = preset(geometry) if callable(preset) else preset
        protocol = protocol.model_copy(update={"normalization": grouping.config.normalization})
        return BuiltSegmenter(GroupViTSegmenter(grouping, protocol), method, recorded)
    if method == "zutis":
        from seg_models.zutis import load_zutis, read_zutis_info

        folder, recorded = model_folder(method, model)
        clip, _ = load_clip_source(str(read_zutis_info(folder)["clip"]))
        protocol = preset(clip) if callable(preset) else preset
        return BuiltSegmenter(load_zutis(folder, clip, protocol), method, recorded)
    ensure_available(method, "seg")
    raise AssertionError(f"method {method!r} is available but has no builder")
