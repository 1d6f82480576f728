"""Build a method's segmenter from a native model folder (one place, so the CLI, the zoo and the app agree).

A preset may be given as a function of the loaded model's geometry (its training size and pixel normalisation), so
that, e.g., sliding windows match the size a model was trained at. GroupViT, PGSeg and SimCon models always
normalise pixels with the statistics they were trained with, whatever the preset says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from seg_core import ConfigError, Normalization, ProtocolPreset, Segmenter
from seg_zoo.formats import NativeFormat, read_training

if TYPE_CHECKING:
    from seg_models.clip import ClipModel
    from seg_models.groupvit import GroupViT

__all__ = [
    "CLIP_METHODS",
    "DISPLAY_NAMES",
    "METHODS",
    "Geometry",
    "ModelGeometry",
    "PresetSpec",
    "build_clip_segmenter",
    "build_grouping_segmenter",
    "build_native",
    "check_method",
]

CLIP_METHODS: dict[str, str] = {"maskclip": "maskclip", "dense-clip": "naive"}
"""CLIP-based methods and the dense-feature variant each runs."""
METHODS: tuple[str, ...] = (*CLIP_METHODS, "reco", "reco-plus", "reclip", "groupvit", "pgseg", "simcon", "zutis")
"""Every method the zoo can build, in the order ``seg demo`` runs them."""
DISPLAY_NAMES: dict[str, str] = {
    "maskclip": "MaskCLIP",
    "dense-clip": "dense CLIP",
    "reco": "ReCo",
    "reco-plus": "ReCo+",
    "reclip": "ReCLIP++",
    "groupvit": "GroupViT",
    "pgseg": "PGSeg",
    "simcon": "MV-SimCon",
    "zutis": "ZUTIS",
}
"""The methods as their papers write them, for messages."""


class ModelGeometry(Protocol):
    """What a preset function may read from a loaded model: its training size and pixel normalisation."""

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def normalization(self) -> Normalization: ...


@dataclass(frozen=True)
class Geometry:
    """A :class:`ModelGeometry` of a model that is not itself one (GroupViT, ReCo+, a ReCLIP++ student)."""

    image_size: tuple[int, int]
    normalization: Normalization


PresetSpec = ProtocolPreset | Callable[[ModelGeometry], ProtocolPreset] | None
"""A preset, a function of the model's geometry returning one, or ``None`` (the segmenter's default)."""


def _preset(preset: PresetSpec, geometry: ModelGeometry) -> ProtocolPreset | None:
    return preset(geometry) if callable(preset) else preset


def check_method(requested: str | None, found: str, fmt: NativeFormat, where: str) -> str:
    """The method to run: ``requested`` when the model can run it, else ``found`` (what trained the model).

    Raises:
        ConfigError: ``requested`` is another method's name (e.g. ``groupvit`` for a folder trained by
            ``seg train simcon``); the message names both and the fix.
    """
    if requested is None or requested == found:
        return found
    if fmt.kind == "clip" and requested in fmt.methods:
        return requested
    shown, wanted = DISPLAY_NAMES.get(found, found), DISPLAY_NAMES.get(requested, requested)
    raise ConfigError(
        f"{where} holds a {shown} model (trained by `seg train {found}`), not a {wanted} one; run it with "
        f"--method {found} (method={found!r}), or pass a {wanted} model"
    )


def trained_method(folder: Path, fmt: NativeFormat) -> str:
    """The method a native folder was trained with: ``training.json``'s ``method`` or the layout's default."""
    training = read_training(folder) or {}
    method = training.get("method")
    return method if isinstance(method, str) and method in METHODS else fmt.methods[0]


def build_clip_segmenter(method: str, clip: ClipModel, preset: PresetSpec) -> Segmenter:
    """MaskCLIP (``maskclip``) or the naive dense CLIP (``dense-clip``) on ``clip``.

    Under an object protocol (a literal ``background`` class) its connected components are instances, so the
    evaluator reports the mask AP of ZUTIS's MaskCLIP baseline.
    """
    from seg_models.maskclip import MaskCLIPSegmenter
    from seg_models.proposals import BACKGROUND_LABEL_NAME, ComponentInstances

    protocol = _preset(preset, clip)
    segmenter: Segmenter = MaskCLIPSegmenter(clip, protocol, variant=CLIP_METHODS[method])  # type: ignore[arg-type]
    if protocol is not None and BACKGROUND_LABEL_NAME in (protocol.class_names or ()):
        segmenter = ComponentInstances(segmenter)
    return segmenter


def build_grouping_segmenter(grouping: GroupViT, preset: PresetSpec) -> Segmenter:
    """A GroupViT or PGSeg under ``preset``, normalising pixels with the model's own statistics."""
    from seg_models.groupvit import GroupViTSegmenter

    vision = grouping.config.vision
    protocol = _preset(preset, Geometry((vision.image_size, vision.image_size), grouping.config.normalization))
    if protocol is not None:
        protocol = protocol.model_copy(update={"normalization": grouping.config.normalization})
    return GroupViTSegmenter(grouping, protocol)


def build_native(
    method: str,
    folder: Path,
    fmt: NativeFormat,
    preset: PresetSpec,
    load_clip: Callable[[str], ClipModel],
    *,
    device: str = "cpu",
) -> Segmenter:
    """The segmenter of ``method`` from a native folder of layout ``fmt``.

    Args:
        method: The method to run (already checked against the folder with :func:`check_method`).
        folder: The native folder.
        fmt: Its layout.
        preset: The protocol preset (or a function of the model's geometry).
        load_clip: Loads the CLIP a ReCo, ZUTIS or rectifier folder names (its ``clip`` field).
        device: Where the weights go.
    """
    import json

    if fmt.kind == "clip":
        from seg_models.clip import load_clip as open_clip_load

        return build_clip_segmenter(method, open_clip_load(f"local-dir:{folder}", device=device), preset)
    if fmt.kind == "reco":
        from seg_models.reco import load_reco, read_reco_info

        clip = load_clip(str(read_reco_info(folder)["clip"]))
        return load_reco(folder, clip, _preset(preset, clip))
    if fmt.kind == "reco-plus":
        from seg_models.reco import load_reco_plus, read_reco_plus_info

        plus = read_reco_plus_info(folder)
        protocol = _preset(preset, Geometry(plus.image_size, plus.normalization))
        return load_reco_plus(folder, protocol, device=device)
    if fmt.kind == "pgseg":
        from seg_models.pgseg import load_pgseg

        return build_grouping_segmenter(load_pgseg(folder, device=device), preset)
    if fmt.kind == "groupvit":
        from seg_models.groupvit import load_groupvit

        return build_grouping_segmenter(load_groupvit(folder, device=device), preset)
    if fmt.kind == "zutis":
        from seg_models.zutis import load_zutis, read_zutis_info

        clip = load_clip(str(read_zutis_info(folder)["clip"]))
        return load_zutis(folder, clip, _preset(preset, clip), device=device)
    if fmt.kind == "reclip":
        from seg_models.reclip import ReCLIPSegmenter, load_reclip, load_reclip_student, read_reclip_info

        info = read_reclip_info(folder)
        if info.get("kind") == "student":
            size = int(info.get("recipe", {}).get("world", {}).get("size", 224))
            geometry = Geometry((size, size), Normalization.model_validate(info["normalization"]))
            return ReCLIPSegmenter(load_reclip_student(folder, device=device), _preset(preset, geometry))
        clip = load_clip(str(info["clip"]))
        return ReCLIPSegmenter(load_reclip(folder, clip, device=device), _preset(preset, clip))
    raise ConfigError(f"{folder}: no builder for model folder kind {fmt.kind!r} ({json.dumps(fmt.methods)})")
