"""``seg demo``: for now an honest status page of what the installed packages provide.

The end-to-end demo (train a tiny CLIP on the synthetic world, segment, evaluate) replaces :func:`demo`'s body when
the CLIP/MaskCLIP issue lands; the probing lives in :mod:`seg_cli.probes` so that it can go or stay independently.
"""

from typing import Final

from rich.table import Table

from seg_cli.console import stdout_console
from seg_cli.probes import Availability, ProbeResult, method_statuses, piece_statuses

__all__ = ["DEMO_ARRIVES_WITH", "demo", "status_tables"]

DEMO_ARRIVES_WITH: Final = "the CLIP/MaskCLIP issue (seg-models)"

_STYLE: Final[dict[Availability, str]] = {
    Availability.AVAILABLE: "green",
    Availability.MISSING: "yellow",
    Availability.BROKEN: "bold red",
}


def _cell(result: ProbeResult | None) -> str:
    """A status cell: the availability, plus the reason when the module is there but broken."""
    if result is None:
        return "[dim]n/a (training-free)[/]"
    text = result.availability.value
    if result.availability is Availability.BROKEN:
        text = f"{text} ({result.detail})"
    return f"[{_STYLE[result.availability]}]{text}[/]"


def status_tables() -> tuple[Table, Table]:
    """Probe the installed packages and lay the results out as two tables: methods, then project pieces."""
    methods = Table(title="Methods", title_justify="left")
    methods.add_column("Method")
    methods.add_column("--method")
    methods.add_column("Model (seg-models)")
    methods.add_column("Training recipe (seg-trainers)")
    for method_status in method_statuses():
        method = method_status.method
        methods.add_row(method.display_name, method.name, _cell(method_status.model), _cell(method_status.recipe))

    pieces = Table(title="Project pieces", title_justify="left")
    pieces.add_column("Piece")
    pieces.add_column("Distribution")
    pieces.add_column("Status")
    pieces.add_column("Checked by importing")
    for piece_status in piece_statuses():
        piece = piece_status.piece
        pieces.add_row(piece.label, piece.distribution, _cell(piece_status.result), piece.probe.target)
    return methods, pieces


def demo() -> None:
    """Show what the installed packages provide. The end-to-end demo is not available yet.

    Until the end-to-end demo exists this prints which methods and project pieces are installed, checked by
    importing them, and exits 0.
    """
    console = stdout_console()
    console.print("[bold]seg demo[/]: status of the installed packages")
    for table in status_tables():
        console.print(table)
    console.print(
        "The end-to-end demo (a tiny CLIP trained on the synthetic world, then segmentation and evaluation) "
        f"arrives with {DEMO_ARRIVES_WITH}."
    )
