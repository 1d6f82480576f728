"""Shared fixtures of the seg-cli tests: run ``seg`` in-process and read its output as plain words."""

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from seg_cli.app import app

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOX = re.compile(r"[│╭╮╰╯─┃┏┓┗┛━┡┩┠┨╇┳┻╋┣┫┼┬┴├┤└┘┌┐]")


def plain(text: str) -> str:
    """``text`` without colours, box drawing and line wrapping: words separated by single spaces."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", text)).split())


@dataclass(frozen=True)
class SegRun:
    """The outcome of one in-process ``seg`` invocation."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """Standard output and error together, flattened by :func:`plain`."""
        return plain(self.stdout + "\n" + self.stderr)


@pytest.fixture
def run_seg() -> Callable[..., SegRun]:
    """Run ``seg ARGS...`` in-process with a wide terminal; returns exit code, stdout and stderr."""
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    def run(*args: str) -> SegRun:
        result = runner.invoke(app, list(args), prog_name="seg")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return SegRun(result.exit_code, result.stdout, result.stderr)

    return run
