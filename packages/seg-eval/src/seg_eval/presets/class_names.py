"""Class-name files shipped with seg-eval, and readers for them.

Two kinds of text files live in ``seg_eval/presets/classes/`` (package data, one entry per line, ``#`` lines are
comments):

* **label files** (``voc21.txt``, ``coco-stuff171.txt``, ...): the official class names of a benchmark in label
  order, line ``i`` naming label value ``i``;
* **prompt files** (``voc21_sclip.txt``, ``context60_groupvit.txt``, ...): what a method actually prompts for each
  label of a label file, where the field renames classes or adds synonyms. A row lists the surface forms separated
  by ``", "``; the first is the prompt name, the others are synonyms scored as the same label (SCLIP's format).

``coco-stuff171_to_27.tsv`` maps each fine COCO-Stuff class to its coarse class (``fine<TAB>coarse``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from seg_core import ConfigError

__all__ = [
    "CLASS_FILE_DIR",
    "list_class_files",
    "read_class_mapping",
    "read_class_names",
    "read_prompt_names",
]

CLASS_FILE_DIR = "classes"
"""Folder of the class-name files inside the ``seg_eval.presets`` package."""

_SYNONYM_SEPARATOR = ", "


def list_class_files() -> tuple[str, ...]:
    """Names of the shipped class-name files (label files, prompt files and mappings), sorted."""
    folder = resources.files("seg_eval.presets").joinpath(CLASS_FILE_DIR)
    return tuple(sorted(entry.name for entry in folder.iterdir() if entry.name.endswith((".txt", ".tsv"))))


def _read_lines(name_or_path: str | Path, suffix: str) -> tuple[str, list[str]]:
    """The non-comment lines of a shipped file (by name, suffix optional) or of a file on disk (by path)."""
    if isinstance(name_or_path, Path) or "/" in name_or_path or "\\" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"class-name file not found: {path}")
        source, text = str(path), path.read_text(encoding="utf-8")
    else:
        file_name = name_or_path if name_or_path.endswith((".txt", ".tsv")) else f"{name_or_path}{suffix}"
        entry = resources.files("seg_eval.presets").joinpath(CLASS_FILE_DIR, file_name)
        if not entry.is_file():
            known = ", ".join(name for name in list_class_files() if name.endswith(suffix))
            raise ConfigError(f"no shipped class-name file {file_name!r}; shipped: {known}")
        source, text = f"seg_eval/presets/{CLASS_FILE_DIR}/{file_name}", entry.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    return source, [line for line in lines if line and not line.startswith("#")]


def read_class_names(name_or_path: str | Path) -> tuple[str, ...]:
    """Read a label file: one class name per line, in label order.

    Args:
        name_or_path: A shipped file (``"voc21"`` or ``"voc21.txt"``) or a path to your own file.

    Returns:
        The names, line ``i`` naming label ``i``.

    Raises:
        ConfigError: The file is missing, empty, or repeats a name.
    """
    source, names = _read_lines(name_or_path, ".txt")
    if not names:
        raise ConfigError(f"class-name file {source} lists no names")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"class-name file {source} repeats {', '.join(repeated)}")
    return tuple(names)


def read_prompt_names(name_or_path: str | Path) -> tuple[tuple[str, ...], ...]:
    """Read a prompt file: per label, the surface forms to prompt (first = prompt name, then synonyms).

    Args:
        name_or_path: A shipped file (``"voc21_sclip"``) or a path to your own file.

    Returns:
        One tuple of surface forms per label, in label order.

    Raises:
        ConfigError: The file is missing, empty, has an empty form, or uses a prompt name twice.
    """
    source, lines = _read_lines(name_or_path, ".txt")
    if not lines:
        raise ConfigError(f"prompt-name file {source} lists no names")
    rows = tuple(tuple(form.strip() for form in line.split(_SYNONYM_SEPARATOR.strip())) for line in lines)
    for number, row in enumerate(rows):
        if any(not form for form in row):
            raise ConfigError(f"prompt-name file {source}: row {number} has an empty name: {lines[number]!r}")
    primaries = [row[0] for row in rows]
    repeated = sorted({name for name in primaries if primaries.count(name) > 1})
    if repeated:
        raise ConfigError(f"prompt-name file {source} uses the prompt names {', '.join(repeated)} twice")
    return rows


def read_class_mapping(name_or_path: str | Path) -> dict[str, str]:
    """Read a ``<source name><TAB><target name>`` mapping (e.g. ``"coco-stuff171_to_27"``).

    Args:
        name_or_path: A shipped mapping (``"coco-stuff171_to_27"`` or with ``.tsv``) or a path.

    Returns:
        ``{source name: target name}`` in file order.

    Raises:
        ConfigError: The file is missing, a row is not two tab-separated names, or a source repeats.
    """
    source, lines = _read_lines(name_or_path, ".tsv")
    mapping: dict[str, str] = {}
    for line in lines:
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"mapping file {source}: expected '<name><TAB><name>', got {line!r}")
        if parts[0] in mapping:
            raise ConfigError(f"mapping file {source} maps {parts[0]!r} twice")
        mapping[parts[0]] = parts[1]
    return mapping
