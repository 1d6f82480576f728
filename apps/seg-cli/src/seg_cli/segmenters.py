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
- ``simcon``: ``None`` (the bundled synthetic-world GroupViT trained with MV-SimCon) or a folder written by
  ``seg train simcon`` (a GroupViT, or a PGSeg when the recipe's model is one).
- ``reclip``: ``None`` (the bundled synthetic-world ReCLIP++ student) or a folder written by ``seg train reclip``
  (``model/``: the distilled student; ``rectifier/``: the rectified CLIP); the CLIP named in ``reclip.json`` is
  loaded as above (the student keeps the CLIP's pixel statistics and size).
- ``zutis``: ``None`` (the bundled synthetic-world ZUTIS) or a folder written by ``seg train zutis``; the CLIP it
  names in ``zutis.json`` (whose text tower classifies) is loaded as above.

GroupViT, PGSeg and SimCon models always normalise pixels with the statistics they were trained with (their config's
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
    "simcon": "simcon-synthetic",
    "zutis": "zutis-synthetic",
    "reclip": "reclip-synthetic",
}
GROUPING_METHODS = ("groupvit", "pgseg", "simcon")
AVAILABLE_METHODS: tuple[str, ...] = (*CLIP_METHODS, "reco", "reco-plus", "reclip", *GROUPING_METHODS, "zutis")
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
    """A GroupViT (``groupvit``), PGSeg (``pgseg``) or SimCon-trained GroupViT/PGSeg (``simcon``) from a
    command-line model source."""
    if method == "groupvit" and model is not None and (model.startswith("hf-hub:") or model.endswith((".pth", ".pt"))):
        from seg_models.groupvit import load_groupvit

        return load_groupvit(model), model
    folder, recorded = model_folder(method, model)
    _check_trained_by(folder, method)
    if method == "pgseg" or (method == "simcon" and (folder / "pgseg.json").is_file()):
        from seg_models.pgseg import load_pgseg

        return load_pgseg(folder), recorded
    from seg_models.groupvit import load_groupvit

    return load_groupvit(folder), recorded


def _check_trained_by(folder: Path, method: str) -> None:
    """Refuse a model folder whose ``training.json`` names another recipe (e.g. a GroupViT trained with InfoNCE)."""
    import json

    from seg_core import ConfigError

    info = folder / "training.json"
    trained_by = json.loads(info.read_text()).get("method") if info.is_file() else None
    if trained_by is not None and trained_by != method:
        from seg_cli.methods import METHOD_NAMES, resolve_method

        name = resolve_method(trained_by).display_name if trained_by in METHOD_NAMES else trained_by
        raise ConfigError(
            f"--model {folder}: this folder holds a {name} model (training.json: trained by `seg train {trained_by}`);"
            f" evaluate it with --method {trained_by}, or pass a folder written by `seg train {method}`"
        )


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
        from seg_models.proposals import BACKGROUND_LABEL_NAME, ComponentInstances

        clip, recorded = load_clip_source(model)
        protocol = preset(clip) if callable(preset) else preset
        segmenter: Segmenter = MaskCLIPSegmenter(clip, protocol, variant=CLIP_METHODS[method])  # type: ignore[arg-type]
        if BACKGROUND_LABEL_NAME in (protocol.class_names or ()):
            # Under an object protocol (a literal background class) its connected components are instances, so
            # the evaluator reports the mask AP of ZUTIS's MaskCLIP baseline.
            segmenter = ComponentInstances(segmenter)
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
    if method in GROUPING_METHODS:
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
    if method == "reclip":
        return _build_reclip(model, preset)
    ensure_available(method, "seg")
    raise AssertionError(f"method {method!r} is available but has no builder")


def _build_reclip(
    model: str | None, preset: ProtocolPreset | Callable[[ModelGeometry], ProtocolPreset]
) -> BuiltSegmenter:
    """ReCLIP++: the distilled student, or the rectified CLIP (a folder of either kind, told by ``reclip.json``).

    A rectifier needs its CLIP (named in ``reclip.json``, loaded as the CLIP methods' sources are); a student needs
    none: its geometry is the pixel normalisation it records and the image size it was trained at.
    """
    from seg_core import Normalization
    from seg_models.reclip import ReCLIPSegmenter, load_reclip, load_reclip_student, read_reclip_info

    folder, recorded = model_folder("reclip", model)
    info = read_reclip_info(folder)
    if info.get("kind") == "student":
        size = int(info.get("recipe", {}).get("world", {}).get("size", 224))
        geometry = _Geometry((size, size), Normalization.model_validate(info["normalization"]))
        protocol = preset(geometry) if callable(preset) else preset
        return BuiltSegmenter(ReCLIPSegmenter(load_reclip_student(folder), protocol), "reclip", recorded)
    clip, _ = load_clip_source(str(info["clip"]))
    protocol = preset(clip) if callable(preset) else preset
    return BuiltSegmenter(ReCLIPSegmenter(load_reclip(folder, clip), protocol), "reclip", recorded)
