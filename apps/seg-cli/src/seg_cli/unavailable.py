"""The single way a command says that its content does not exist yet.

A command whose implementation is still to come calls :func:`not_available` as its whole body, after typer has
validated its arguments. Filling the command in later means replacing that one call with the real body.
"""

from typing import Final, NoReturn

import typer
from rich.markup import escape

from seg_cli.console import stderr_console

__all__ = ["NOT_AVAILABLE_EXIT_CODE", "not_available"]

NOT_AVAILABLE_EXIT_CODE: Final = 2
"""Exit code of a command that exists but has nothing to run yet (the same as a usage error: nothing was done)."""


def not_available(feature: str, provided_by: str) -> NoReturn:
    """Tell the user that ``feature`` is not available yet and which piece of the project brings it, then exit 2.

    Nothing is computed and nothing is written: a command never prints a placeholder result.

    Args:
        feature: What the user asked for, starting with the command, e.g. ``"seg world generate (the synthetic
            world)"``.
        provided_by: The piece of the project that will provide it, e.g. ``"seg-eval (the synthetic-world
            issue)"``.

    Raises:
        typer.Exit: Always, with code :data:`NOT_AVAILABLE_EXIT_CODE`.
    """
    console = stderr_console()
    console.print(f"[bold yellow]Not available yet:[/] {escape(feature)}.")
    console.print(f"It will be provided by {escape(provided_by)}.")
    console.print("Nothing was run and nothing was written. `seg demo` shows what the installed packages provide.")
    raise typer.Exit(code=NOT_AVAILABLE_EXIT_CODE)
