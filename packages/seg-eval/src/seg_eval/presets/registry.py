"""The preset registry: named :class:`~seg_core.ProtocolPreset` instances, lookup, loading and registration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seg_core import ConceptSet, ConfigError, ProtocolPreset

__all__ = [
    "PresetInfo",
    "get_preset",
    "list_presets",
    "load_preset",
    "preset_concepts",
    "preset_info",
    "register_preset",
    "unregister_preset",
]


@dataclass(frozen=True)
class PresetInfo:
    """What a preset cannot hold itself: provenance, and settings :class:`~seg_core.ProtocolPreset` has no field for.

    A preset's ``class_names`` are the dataset's label names (what is scored); what the method *prompts* for each
    label, where the field renames classes or adds synonyms, is here.

    Attributes:
        papers: Who reports numbers under this protocol.
        source: Where the settings were read (official repository files).
        notes: Settings of the original protocol the preset cannot express (e.g. SCLIP's ``prob_thd`` next to its
            background synonyms), and anything a user must know to compare numbers.
        prompt_names: The name prompted for each label, in label order (row 0 stays ``"background"`` when the
            preset has a background policy: background's surface forms are the policy's ``names``); ``None``:
            the class names themselves. With a ``prediction_map`` these are the predicted labels instead.
        prompt_file: The shipped prompt file ``prompt_names`` and ``synonyms`` came from.
        synonyms: Extra surface forms per prompt name, scored as that label (SCLIP's "person in shirt", ...).
        prediction_map: A mapping applied to predictions before scoring, e.g. ``"coco-stuff171_to_27"``: ReCo
            prompts the 171 fine COCO-Stuff classes and scores the 27 coarse ones (see
            :func:`seg_eval.datasets.coco_stuff_coarse_table`).
    """

    papers: tuple[str, ...] = ()
    source: str = ""
    notes: str = ""
    prompt_names: tuple[str, ...] | None = None
    prompt_file: str | None = None
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prediction_map: str | None = None


_PRESETS: dict[str, tuple[ProtocolPreset, PresetInfo]] = {}


def register_preset(preset: ProtocolPreset, info: PresetInfo | None = None, *, replace: bool = False) -> None:
    """Add a preset to the registry under ``preset.name``.

    Args:
        preset: The preset.
        info: Its provenance and extra settings.
        replace: Replace a preset of the same name instead of raising.

    Raises:
        ValueError: The name is taken and ``replace`` is false, ``info.prompt_names`` does not have one name per
            class, or ``info.synonyms`` names an unknown prompt name.
    """
    if preset.name in _PRESETS and not replace:
        raise ValueError(f"a preset named {preset.name!r} is registered already; pass replace=True to replace it")
    info = info or PresetInfo()
    prompts = info.prompt_names or preset.class_names
    if (
        info.prompt_names is not None
        and info.prediction_map is None
        and (preset.class_names is None or len(info.prompt_names) != len(preset.class_names))
    ):
        count = "no" if preset.class_names is None else len(preset.class_names)
        raise ValueError(
            f"preset {preset.name!r}: {len(info.prompt_names)} prompt names for {count} class names "
            "(give one per label, or a prediction_map)"
        )
    if prompts is not None:
        unknown = sorted(set(info.synonyms) - set(prompts))
        if unknown:
            raise ValueError(f"preset {preset.name!r}: synonyms given for classes it does not have: {unknown}")
    _PRESETS[preset.name] = (preset, info)


def unregister_preset(name: str) -> None:
    """Remove a preset from the registry (unknown names are ignored; built-ins come back with
    :func:`~seg_eval.presets.register_builtin_presets`)."""
    _PRESETS.pop(name, None)


def list_presets(dataset: str | None = None) -> tuple[str, ...]:
    """Names of the registered presets, sorted; only those for ``dataset`` (e.g. ``"voc21"``) if given."""
    return tuple(sorted(name for name, (preset, _) in _PRESETS.items() if dataset in (None, preset.dataset)))


def _lookup(name: str) -> tuple[ProtocolPreset, PresetInfo]:
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}") from None


def get_preset(name: str) -> ProtocolPreset:
    """The registered preset called ``name``.

    Raises:
        ConfigError: No preset has that name (the message lists the known ones).
    """
    return _lookup(name)[0]


def preset_info(name: str) -> PresetInfo:
    """Provenance and extra settings of the registered preset ``name`` (see :class:`PresetInfo`)."""
    return _lookup(name)[1]


def load_preset(path_or_name: str | Path) -> ProtocolPreset:
    """A registered preset by name, or a preset file (``.yaml``, ``.yml`` or ``.json``) written by hand or by
    :meth:`~seg_core.SegModel.save`.

    Args:
        path_or_name: ``"sclip-voc21"``, or ``"my_protocol.yaml"``.

    Raises:
        ConfigError: Neither a registered name nor an existing file, or the file is not a valid preset (the message
            names each bad field).
    """
    if isinstance(path_or_name, str) and path_or_name in _PRESETS:
        return _PRESETS[path_or_name][0]
    path = Path(path_or_name)
    if path.is_file():
        return ProtocolPreset.load(path)
    raise ConfigError(
        f"{str(path_or_name)!r} is neither a preset name nor an existing preset file (.yaml/.yml/.json); "
        f"known presets: {', '.join(list_presets())}"
    )


def preset_concepts(preset: ProtocolPreset | str, class_names: Sequence[str] | None = None) -> ConceptSet:
    """The :class:`~seg_core.ConceptSet` a segmenter is asked for under ``preset``.

    The labels are the preset's ``class_names``, or ``class_names`` (the dataset's label names) when the preset
    leaves them to the dataset (``class_names: null``, e.g. ``synthetic``). A registered preset's
    :class:`PresetInfo` supplies the prompted names and synonyms. With a background policy label 0 is background:
    it is not a concept (the policy prompts or thresholds it), so the concepts are labels 1, 2, ...

    Args:
        preset: A preset or the name of a registered one.
        class_names: The dataset's label names; required when the preset has none, checked against its own otherwise.

    Raises:
        ConfigError: No class names, names that differ from the preset's, or a background policy on labels whose
            first name is not background.
    """
    info = PresetInfo()
    if isinstance(preset, str):
        preset, info = _lookup(preset)
    elif preset.name in _PRESETS and _PRESETS[preset.name][0] == preset:
        info = _PRESETS[preset.name][1]
    labels = preset.class_names
    if labels is None:
        if class_names is None:
            raise ConfigError(f"preset {preset.name!r} takes its class names from the dataset: pass class_names")
        labels = tuple(class_names)
    elif class_names is not None and tuple(class_names) != labels:
        raise ConfigError(
            f"preset {preset.name!r} is for the labels {list(labels[:4])}..., not {list(class_names)[:4]}...; "
            "choose the preset of this dataset"
        )
    names = list(info.prompt_names or labels)
    if preset.background.kind != "none":
        if labels[0].lower() not in {"background", "bg", "_background_", "other", "others"}:
            raise ConfigError(
                f"preset {preset.name!r} has a {preset.background.kind} background policy, so label 0 must be "
                f"background, but it is {labels[0]!r}"
            )
        names = names[1:]
    return ConceptSet.parse(
        {
            "names": tuple(names),
            "templates": preset.templates,
            "synonyms": {name: forms for name, forms in info.synonyms.items() if name in names},
            "background": preset.background.model_dump(),
        },
        source=f"preset {preset.name}",
    )
