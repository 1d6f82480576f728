"""The root of the ``seg`` command: the command tree and ``--version``.

Each command lives in its own module; this module only assembles them, so that filling a command in never touches
the others. Nothing heavy is imported here: commands import torch and friends inside their bodies.
"""

from typing import Annotated

import typer

from seg_cli import retrieve, world, zoo
from seg_cli.console import stdout_console
from seg_cli.demo import demo
from seg_cli.evaluate import evaluate
from seg_cli.predict import predict
from seg_cli.train import train
from seg_cli.versions import version_report
from seg_cli.webapp import run_app

__all__ = ["app"]

app = typer.Typer(
    name="seg",
    help="Language-guided segmentation with CLIP: demo, predict, eval, train, app, world, retrieve, zoo.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
)


def _print_versions(value: bool) -> None:
    """Eager ``--version`` callback: print every seg distribution's version and stop."""
    if value:
        stdout_console().print(version_report(), markup=False)
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_print_versions, is_eager=True, help="Show the version of every seg package."
        ),
    ] = False,
) -> None:
    """Language-guided segmentation with CLIP. Start with [bold]seg demo[/]."""


app.command("demo")(demo)
app.command("predict")(predict)
app.command("eval")(evaluate)
app.command("train")(train)
app.command("app")(run_app)
app.add_typer(world.app, name="world")
app.add_typer(retrieve.app, name="retrieve")
app.add_typer(zoo.app, name="zoo")
