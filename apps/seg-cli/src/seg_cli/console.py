"""Rich consoles for the ``seg`` command, created on use so that they write to the current ``sys.stdout``/``stderr``.

Creating them lazily matters under test runners that swap the standard streams per invocation.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["progress_bar", "stderr_console", "stdout_console"]


def stdout_console() -> Console:
    """A console on standard output, for results."""
    return Console(highlight=False)


def stderr_console() -> Console:
    """A console on standard error, for errors and notices."""
    return Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on standard error for one task; yields ``update(done, total)`` for ``progress=`` callbacks.

    Args:
        description: What is being done (rich markup allowed).
        total: Expected number of items.
    """
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console()) as bar:
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int) -> None:
            bar.update(task, completed=done, total=new_total)

        yield update
