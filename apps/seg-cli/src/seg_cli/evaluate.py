"""``seg eval``: evaluate a method on a dataset under a protocol preset."""

from pathlib import Path
from typing import Annotated

import typer

from seg_cli.console import progress_bar, stderr_console, stdout_console
from seg_cli.methods import METHOD_NAMES, validate_method
from seg_cli.params import AllowPickle

__all__ = ["evaluate"]


def evaluate(
    *,
    method: Annotated[
        str,
        typer.Option(
            "--method", "-m", callback=validate_method, help=f"Method: {', '.join(METHOD_NAMES)}.", show_default=False
        ),
    ],
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            help="Dataset folder in COCO or VOC layout (e.g. made by `seg world generate`).",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Results file (JSON) to write.", dir_okay=False, show_default=False),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Zoo name, hf-hub:org/name[@rev] or local-dir:PATH (default: the method's default)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Protocol preset name or file (default: the method's preset for the dataset)."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split to evaluate (default: the dataset's).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evaluate only the first N images.")] = None,
    allow_pickle: AllowPickle = False,
) -> None:
    """Evaluate a method on a dataset under a protocol preset and write results.json.

    The dataset's layout is recognised (a synthetic world written by `seg world generate`, or a benchmark in its
    released layout). The record names the method, model, dataset and the protocol with its signature.
    """
    from seg_cli.segmenters import build_segmenter, ensure_available
    from seg_core import ConfigError
    from seg_eval.datasets import DatasetLayoutError, detect_layout, open_dataset
    from seg_eval.evaluator import evaluate as run_evaluation
    from seg_eval.evaluator import write_results
    from seg_eval.presets import list_presets, load_preset

    ensure_available(method, "seg eval")
    try:
        layout = detect_layout(dataset)
        data = open_dataset(dataset, split=split)
        data_name = str(getattr(data, "name", layout))
        if preset is None:
            preset = _default_preset(method, data_name, list_presets())
        protocol = load_preset(preset)
    except (DatasetLayoutError, ConfigError, ValueError) as error:
        stderr_console().print(f"[bold red]seg eval:[/] {error}")
        raise typer.Exit(code=1) from None
    try:
        built = build_segmenter(method, model, protocol, allow_pickle=allow_pickle)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        stderr_console().print(f"[bold red]seg eval:[/] {error}")
        raise typer.Exit(code=1) from None
    total = len(data) if limit is None else min(limit, len(data))
    with progress_bar(f"[bold]{method}[/] on {data_name}", total) as update:
        try:
            record = run_evaluation(
                built.segmenter,
                data,
                preset=protocol,
                method=built.method,
                model=built.model,
                dataset_name=data_name,
                split=str(getattr(data, "split", split or "")),
                limit=limit,
                progress=update,
            )
        except (ConfigError, ValueError) as error:
            stderr_console().print(f"[bold red]seg eval:[/] {error}")
            raise typer.Exit(code=1) from None
    write_results(record, out)
    metrics = record.metrics
    instances = ""
    if record.instance_metrics is not None:
        aware, agnostic = record.instance_metrics["class_aware"], record.instance_metrics["class_agnostic"]
        instances = (
            f", mask AP {_fraction(aware.ap)} (AP50 {_fraction(aware.ap50)}, AP75 {_fraction(aware.ap75)}; "
            f"class-agnostic AP {_fraction(agnostic.ap)})"
        )
    stdout_console().print(
        f"{built.method} ({built.model}) on {data_name}: mIoU {metrics.miou:.3f}, pixel accuracy "
        f"{metrics.pixel_accuracy:.3f}{instances} over {record.num_images} images; protocol {protocol.name} "
        f"[{record.signature}]; written to {out}"
    )


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


OBJECT_METHODS = ("zutis",)
"""Methods trained with a literal "background" class: on the world they are evaluated under ``synthetic-object``."""


def _default_preset(method: str, dataset_name: str, known: tuple[str, ...]) -> str:
    """``<method>-<dataset>`` when registered, else the dataset's first preset; on the world ``synthetic`` (21
    classes), or ``synthetic-object`` (background + things) for the methods of :data:`OBJECT_METHODS`."""
    if dataset_name == "synthetic":
        return "synthetic-object" if method in OBJECT_METHODS else "synthetic"
    for candidate in (f"{method}-{dataset_name}", *(p for p in known if p.endswith(f"-{dataset_name}"))):
        if candidate in known:
            return candidate
    raise ValueError(f"no preset for dataset {dataset_name!r}; pass --preset (known: {', '.join(known)})")
