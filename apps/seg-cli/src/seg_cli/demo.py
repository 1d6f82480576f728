"""``seg demo``: every available method on a small synthetic world, evaluated, with an HTML report.

It first shows what the installed packages provide (probed in :mod:`seg_cli.probes`), then generates a cached
validation split of the synthetic world with a seed the bundled reference CLIP never saw, runs every method whose
model code has landed (MaskCLIP, the naive dense-CLIP baseline, ReCo, ReCo+; each method issue adds its own),
evaluates them, prints the table and writes
``report.html`` and ``results.json``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer
from rich.table import Table

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.probes import Availability, ProbeResult, method_statuses, piece_statuses

if TYPE_CHECKING:
    from collections.abc import Mapping

    from seg_core import ConceptSet, ProtocolPreset
    from seg_eval.datasets import SegmentationDataset
    from seg_eval.metrics.mask_ap import MaskAPResult

__all__ = ["demo", "run_demo", "status_tables"]

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


def demo(
    *,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.html, results.json and the world.")
    ] = Path("seg-demo"),
    num: Annotated[int, typer.Option("--num", "-n", min=4, help="Evaluation images.")] = 100,
    seed: Annotated[int, typer.Option("--seed", min=0, help="World seed (the reference CLIP trained on 0).")] = 1000,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="CLIP source of the CLIP-only methods (default: the bundled reference synthetic CLIP); the other "
            "methods use their bundled synthetic-world models.",
        ),
    ] = None,
    status: Annotated[bool, typer.Option("--status/--no-status", help="Show what the install provides.")] = True,
) -> None:
    """Run every available method on a small synthetic world, evaluate, and write a report.

    Generates (and caches) a validation split of the synthetic world with a seed the reference CLIP never saw,
    segments it with each available method (MaskCLIP, the naive dense-CLIP baseline, ReCo and ReCo+ so far; each
    method issue adds its own), prints the results table and writes OUT/report.html (table and overlays) and
    OUT/results.json.
    """
    console = stdout_console()
    if status:
        console.print("[bold]seg demo[/]: what the installed packages provide")
        for table in status_tables():
            console.print(table)
    run_demo(out=out, num=num, seed=seed, model=model)


def run_demo(*, out: Path, num: int, seed: int, model: str | None, overlays: int = 6) -> list[dict[str, object]]:
    """The end-to-end demo; returns the results records it wrote."""
    import numpy as np

    from seg_cli.evaluate import OBJECT_METHODS
    from seg_cli.report import ReportRow, write_report
    from seg_cli.segmenters import AVAILABLE_METHODS, CLIP_METHODS, build_segmenter
    from seg_eval.datasets import view_for_preset
    from seg_eval.evaluator import evaluate, image_to_tensor, write_results
    from seg_eval.presets import get_preset
    from seg_eval.world import CLASSES, STUFF_NAMES, THING_NAMES, WorldConfig, generate_split
    from seg_eval.world.benchmark import WorldBenchmark

    console = stdout_console()
    errors = stderr_console()
    world_dir = out / "world"
    preset = get_preset("synthetic")
    object_preset = get_preset("synthetic-object")
    # The object-protocol rows: the instance-aware methods, and MaskCLIP under the same protocol as their baseline.
    runs = [(method, preset) for method in AVAILABLE_METHODS if method not in OBJECT_METHODS]
    if any(method in AVAILABLE_METHODS for method in OBJECT_METHODS):
        runs += [("maskclip", object_preset)] + [(m, object_preset) for m in OBJECT_METHODS if m in AVAILABLE_METHODS]
    try:  # load every model before any work, so a missing model fails at once
        segmenters = [
            (build_segmenter(method, model if method in CLIP_METHODS else None, protocol), protocol)
            for method, protocol in runs
        ]
    except FileNotFoundError as error:
        errors.print(f"[bold red]seg demo:[/] {error}")
        raise typer.Exit(code=1) from None
    with progress_bar(f"world: val split, seed {seed}", num) as update:
        generate_split(
            world_dir,
            "val",
            num,
            seed,
            fmt="coco",
            config=WorldConfig(),
            progress=update,
        )
    dataset = WorldBenchmark(world_dir, "val")

    records = []
    predictions: dict[str, list[np.ndarray]] = {}
    for built, protocol in segmenters:
        name = built.method if protocol is preset else f"{built.method}*"
        with progress_bar(f"{name}: segment and evaluate", num) as update:
            record = evaluate(
                built.segmenter,
                dataset,
                preset=protocol,
                method=built.method,
                model=built.model,
                dataset_name="synthetic",
                split=f"val (seed {seed})",
                progress=update,
            )
        records.append(record)
        view = view_for_preset(dataset, protocol)
        to_world = np.array([_world_id(label) for label in view.class_names] + [255] * (256 - len(view.class_names)))
        with torch_inference():
            predictions[name] = [
                to_world[
                    built.segmenter.segment(image_to_tensor(dataset[i].image), _concepts(protocol, view))
                    .labels[0]
                    .numpy()
                ].astype(np.uint8)
                for i in range(min(overlays, len(dataset)))
            ]

    columns = ["method", "model", "mIoU", "thing mIoU", "stuff mIoU", "pixel acc.", "mask AP", "seconds"]
    rows = [
        [
            r.method if r.preset is preset else f"{r.method}*",
            r.model,
            f"{r.metrics.miou:.3f}",
            f"{r.metrics.miou_over(THING_NAMES):.3f}",
            f"{r.metrics.miou_over(STUFF_NAMES):.3f}" if r.preset is preset else "-",
            f"{r.metrics.pixel_accuracy:.3f}",
            _mask_ap(r.instance_metrics),
            f"{r.seconds:.1f}",
        ]
        for r in records
    ]
    models = ", ".join(sorted({r.model for r in records}))
    table = Table(title=f"Synthetic world, val split, seed {seed}, {num} images, preset {preset.name}, model {models}")
    for column in columns:
        if column != "model":  # named in the title: keeps the table inside an 80-column terminal
            table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(row[0], *row[2:])
    console.print(table)
    if any(r.preset is not preset for r in records):
        console.print(
            "* protocol synthetic-object: background + the 14 things, every stuff pixel is background (ZUTIS's "
            "protocol; MaskCLIP prompts the word 'background'); mask AP: COCO mask AP of the predicted instances"
        )

    out.mkdir(parents=True, exist_ok=True)
    results_path = write_results(records, out / "results.json")
    colors = np.zeros((256, 3), dtype=np.uint8)
    for world_class in CLASSES:
        colors[world_class.id] = world_class.color
    colors[255] = (224, 224, 192)
    colors[_BACKGROUND_COLOR_ID] = (96, 96, 96)
    report_rows = [
        ReportRow(
            image_id=dataset[i].image_id,
            image=dataset[i].image,
            ground_truth=dataset[i].label,
            predictions={method: predictions[method][i] for method in predictions},
        )
        for i in range(min(overlays, len(dataset)))
    ]
    report = write_report(
        out / "report.html",
        title="seg demo: the synthetic world",
        subtitle=(
            f"{num} validation images of world seed {seed} (the reference CLIP trained on seed 0), "
            f"protocol {preset.name} [{records[0].signature}]"
        ),
        columns=columns,
        table=rows,
        rows=report_rows,
        class_names=dataset.class_names,
        colors=colors,
    )
    console.print(f"wrote {report} and {results_path}")
    data: list[dict[str, object]] = [record.to_dict() for record in records]
    return data


_BACKGROUND_COLOR_ID = 254
"""Colour-table slot of "background" in the object protocol's overlays (world class ids stop at 20)."""


def _world_id(name: str) -> int:
    """The world class id of a label name, for colouring overlays in one table; background gets its own slot."""
    from seg_eval.world.classes import class_by_name

    return _BACKGROUND_COLOR_ID if name == "background" else class_by_name(name).id


def _mask_ap(metrics: Mapping[str, MaskAPResult] | None) -> str:
    if metrics is None or metrics["class_aware"].ap is None:
        return "-"
    return f"{metrics['class_aware'].ap:.3f}"


def _concepts(preset: ProtocolPreset, dataset: SegmentationDataset) -> ConceptSet:
    from seg_eval.presets import preset_concepts

    return preset_concepts(preset, dataset.class_names)


def torch_inference() -> AbstractContextManager[object]:
    import torch

    return torch.inference_mode()
