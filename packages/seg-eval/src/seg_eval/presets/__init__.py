"""Evaluation protocols as data: named :class:`~seg_core.ProtocolPreset` instances and the class-name files.

::

    from seg_eval.presets import get_preset, list_presets, load_preset, preset_concepts

    preset = get_preset("sclip-voc21")                 # short side 336, slide 224/112, background synonyms, ...
    list_presets(dataset="voc21")                      # every protocol published on VOC with background
    preset = load_preset("my_protocol.yaml")           # a user's own preset file (or a registered name)
    concepts = preset_concepts("sclip-voc21")          # the ConceptSet to segment (names, synonyms, background)

Presets are named ``<method>-<dataset>`` plus ``synthetic``; see ``docs/evaluation.md`` for the table.
"""

from seg_eval.presets.builtin import BUILTIN_PRESETS, register_builtin_presets
from seg_eval.presets.class_names import list_class_files, read_class_mapping, read_class_names, read_prompt_names
from seg_eval.presets.registry import (
    PresetInfo,
    get_preset,
    list_presets,
    load_preset,
    preset_concepts,
    preset_info,
    register_preset,
    unregister_preset,
)

register_builtin_presets()

__all__ = [
    "BUILTIN_PRESETS",
    "PresetInfo",
    "get_preset",
    "list_class_files",
    "list_presets",
    "load_preset",
    "preset_concepts",
    "preset_info",
    "read_class_mapping",
    "read_class_names",
    "read_prompt_names",
    "register_builtin_presets",
    "register_preset",
    "unregister_preset",
]
