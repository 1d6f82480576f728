"""Rich consoles for the ``seg`` command, created on use so that they write to the current ``sys.stdout``/``stderr``.

Creating them lazily matters under test runners that swap the standard streams per invocation.
"""

from rich.console import Console

__all__ = ["stderr_console", "stdout_console"]


def stdout_console() -> Console:
    """A console on standard output, for results."""
    return Console(highlight=False)


def stderr_console() -> Console:
    """A console on standard error, for errors and notices."""
    return Console(stderr=True, highlight=False)
