"""Console-script entry point of ``seg`` (``seg = "seg_cli.main:main"``)."""

from seg_cli.app import app

__all__ = ["main"]


def main() -> None:
    """Run the ``seg`` command line with ``sys.argv``; exits with the command's exit code."""
    app(prog_name="seg")
