"""Parsing and validation of command-line values shared by several commands.

Each ``parse_*`` function is pure and raises :class:`ValueError`; each ``validate_*`` function is the typer callback
around it, raising :class:`typer.BadParameter` so that typer names the option and exits with code 2.
"""

import re
from collections.abc import Callable
from typing import Annotated, Final

import typer

__all__ = [
    "AllowPickle",
    "at_least",
    "parse_concept_names",
    "parse_repo_id",
    "parse_split_name",
    "validate_concept_names",
    "validate_repo_id",
    "validate_split_name",
]

_SPLIT: Final = re.compile(r"[a-z][a-z0-9_-]*")
_REPO_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_concept_names(value: str) -> tuple[str, ...]:
    """Split a comma-separated list of class (concept) names.

    Args:
        value: E.g. ``"cat, dog,sky"``.

    Returns:
        The stripped names in order, e.g. ``("cat", "dog", "sky")``.

    Raises:
        ValueError: The list is empty, an item is empty, or a name repeats.
    """
    names = tuple(name.strip() for name in value.split(","))
    if not any(names):
        raise ValueError("expected comma-separated class names such as 'cat,dog,sky' (got an empty list)")
    for index, name in enumerate(names, start=1):
        if not name:
            raise ValueError(f"item {index} of {value!r} is empty; write class names separated by single commas")
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ValueError(f"class {name!r} is listed twice in {value!r}; list each class once")
        seen.add(name.lower())
    return names


def parse_split_name(value: str) -> str:
    """Check a dataset split name: lower case letters, digits, ``-`` and ``_``, starting with a letter.

    Args:
        value: E.g. ``train`` or ``test-shifted``.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: The name has other characters.
    """
    if _SPLIT.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a split name; use lower case letters, digits, '-' and '_', e.g. 'train' or 'test'"
        )
    return value


def parse_repo_id(value: str) -> str:
    """Check a Hugging Face Hub repository id of the form ``namespace/name``.

    Args:
        value: E.g. ``seg-toolkit/maskclip-vit-b16``.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: ``value`` is not two valid parts separated by one ``/``.
    """
    parts = value.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(part) for part in parts):
        raise ValueError(f"{value!r} is not a Hub repository id; write it as 'namespace/name', e.g. 'my-org/my-model'")
    return value


def validate_concept_names(value: str) -> str:
    """Typer callback around :func:`parse_concept_names`; returns ``value`` unchanged when it is valid."""
    try:
        parse_concept_names(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def validate_split_name(value: str) -> str:
    """Typer callback around :func:`parse_split_name`."""
    try:
        return parse_split_name(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def validate_repo_id(value: str) -> str:
    """Typer callback around :func:`parse_repo_id`."""
    try:
        return parse_repo_id(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def at_least(minimum: int) -> Callable[[int], int]:
    """A typer callback refusing integers below ``minimum`` with a message that names the value and the bound.

    Args:
        minimum: The smallest accepted value.

    Returns:
        The callback; it returns the value unchanged when it is large enough.
    """

    def callback(value: int) -> int:
        if value < minimum:
            raise typer.BadParameter(f"{value} is too small; use an integer >= {minimum}")
        return value

    return callback


AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Accept a pickle checkpoint (an official GroupViT .pth), read with torch.load(weights_only=True).",
    ),
]
"""The ``--allow-pickle`` option of ``seg eval`` and ``seg predict``."""
