"""The methods the ``seg`` command knows by name, and the validation of a method name given on the command line.

The catalogue is what the CLI accepts and displays; whether a method's code is installed is a separate question
answered by :mod:`seg_cli.probes`.
"""

import difflib
from dataclasses import dataclass
from typing import Final

import typer

__all__ = ["METHODS", "METHOD_NAMES", "Method", "resolve_method", "validate_method"]


@dataclass(frozen=True)
class Method:
    """One segmentation method as the CLI names it.

    Attributes:
        name: The command-line name (``reco-plus``), lower case, what ``--method`` and ``seg train`` take.
        display_name: The name the paper uses (``ReCo+``).
    """

    name: str
    display_name: str


METHODS: Final[tuple[Method, ...]] = (
    Method("maskclip", "MaskCLIP"),
    Method("dense-clip", "dense CLIP (naive)"),
    Method("groupvit", "GroupViT"),
    Method("reco", "ReCo"),
    Method("reco-plus", "ReCo+"),
    Method("zutis", "ZUTIS"),
    Method("reclip", "ReCLIP++"),
    Method("pgseg", "PGSeg"),
    Method("simcon", "MV-SimCon"),
)

METHOD_NAMES: Final[tuple[str, ...]] = tuple(method.name for method in METHODS)

_BY_ALIAS: Final[dict[str, Method]] = {
    alias.lower(): method
    for method in METHODS
    for alias in (method.name, method.display_name, method.name.replace("-", "_"))
}


def resolve_method(value: str) -> Method:
    """Find a method by its command-line name, its paper name or its snake_case form, ignoring case.

    Args:
        value: What the user typed, e.g. ``reco-plus``, ``ReCo+`` or ``reco_plus``.

    Returns:
        The method.

    Raises:
        ValueError: ``value`` names no method; the message lists the known names and the closest match.
    """
    method = _BY_ALIAS.get(value.strip().lower())
    if method is not None:
        return method
    close = difflib.get_close_matches(value.strip().lower(), list(_BY_ALIAS), n=1)
    hint = f" Did you mean {_BY_ALIAS[close[0]].name!r}?" if close else ""
    raise ValueError(f"unknown method {value!r}; choose one of: {', '.join(METHOD_NAMES)}.{hint}")


def validate_method(value: str) -> str:
    """Typer callback: turn a method given on the command line into its canonical name.

    Args:
        value: The raw option or argument value.

    Returns:
        The canonical command-line name (``ReCo+`` becomes ``reco-plus``).

    Raises:
        typer.BadParameter: The method is unknown; typer prefixes the option name and exits with code 2.
    """
    try:
        return resolve_method(value).name
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
