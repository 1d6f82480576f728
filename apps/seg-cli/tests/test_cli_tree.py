"""The command tree of ``seg``: its shape, and ``--help`` on every command."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer

from seg_cli.app import app

EXPECTED_COMMANDS = {
    ("demo",),
    ("predict",),
    ("eval",),
    ("train",),
    ("app",),
    ("world",),
    ("world", "generate"),
    ("retrieve",),
    ("retrieve", "embed"),
    ("retrieve", "index"),
    ("retrieve", "curate"),
    ("zoo",),
    ("zoo", "list"),
    ("zoo", "info"),
    ("zoo", "save"),
    ("zoo", "pull"),
    ("zoo", "push"),
    ("zoo", "push-retrieval"),
    ("zoo", "pull-retrieval"),
}


def _walk(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield (*path, name)
        yield from _walk(sub, (*path, name))


def test_command_tree_is_the_documented_one() -> None:
    assert set(_walk(typer.main.get_command(app))) == EXPECTED_COMMANDS


@pytest.mark.parametrize("path", [(), *sorted(EXPECTED_COMMANDS)], ids=lambda path: " ".join(("seg", *path)))
def test_help_of_every_command(run_seg: Callable[..., Any], path: tuple[str, ...]) -> None:
    result = run_seg(*path, "--help")
    assert result.exit_code == 0, result.text
    text = result.text
    assert f"Usage: seg {' '.join(path)}".rstrip() in text
    assert "--help" in text


def test_short_help_flag(run_seg: Callable[..., Any]) -> None:
    result = run_seg("world", "-h")
    assert result.exit_code == 0
    assert "generate" in result.text


def test_root_help_lists_every_top_level_command(run_seg: Callable[..., Any]) -> None:
    text = run_seg("--help").text
    for name in ("demo", "predict", "eval", "train", "app", "world", "retrieve", "zoo"):
        assert f" {name} " in text


def test_bare_seg_shows_help(run_seg: Callable[..., Any]) -> None:
    result = run_seg()
    assert "Usage: seg" in result.text
    assert "demo" in result.text
