"""``seg zoo``: the model registry and Hugging Face Hub I/O (list, info, save, pull, push)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from seg_cli.console import stderr_console, stdout_console
from seg_cli.params import validate_repo_id

__all__ = ["app", "info", "list_models", "pull", "pull_retrieval", "push", "push_retrieval", "save"]

app = typer.Typer(
    name="zoo",
    help="List, inspect, save, download and publish pretrained models (zoo names, hf-hub:, local-dir:).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _fail(command: str, error: BaseException) -> NoReturn:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    message = str(error.args[0]) if error.args else str(error)
    if isinstance(error, LocalEntryNotFoundError | OfflineModeIsEnabled):
        message = (
            "the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and the files are not in the Hub cache; "
            "connect and retry. Zoo models with bundled weights load offline without pulling: "
            "`seg eval --model NAME ...`"
        )
    stderr_console().print(f"[bold red]seg zoo {command}:[/] {message}")
    raise typer.Exit(code=1)


def _errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    from seg_core import ConfigError

    return (ConfigError, KeyError, FileNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled)


@app.command("list")
def list_models(
    pattern: Annotated[
        str, typer.Argument(help="Wildcard over zoo names, e.g. 'reco*' or '*.synthetic'.", metavar="PATTERN")
    ] = "*",
    method: Annotated[str | None, typer.Option("--method", "-m", help="Only this method's models.")] = None,
) -> None:
    """List the zoo's models whose name matches PATTERN, with where their weights come from and their mIoU."""
    from rich.table import Table

    import seg_zoo

    names = seg_zoo.list_models(pattern, method=method)
    if not names:
        _fail("list", KeyError(f"no zoo name matches {pattern!r}" + (f" for method {method}" if method else "")))
    table = Table(title=f"seg zoo: {len(names)} model{'s' * (len(names) != 1)}")
    table.add_column("name", no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("weights")
    table.add_column("mIoU", justify="right")
    table.add_column("description", overflow="fold")
    for name in names:
        entry = seg_zoo.get_entry(name)
        weights = (
            "bundled + hub"
            if entry.bundled
            else (f"open_clip {entry.open_clip}" if entry.open_clip else f"hub ({entry.weights_format})")
        )
        miou = next((f"{r.value:.3f}" for r in entry.results if r.metric == "mean_iou"), "")
        table.add_row(name, entry.method, weights, miou, entry.description)
    stdout_console().print(table)


@app.command()
def info(
    name: Annotated[
        str,
        typer.Argument(
            help="Zoo name (method-arch.tag), hf-hub:org/name[@rev] or local-dir:PATH.",
            metavar="NAME",
            show_default=False,
        ),
    ],
) -> None:
    """Show a model's method, weights source, preprocessing, upstream weights and results."""
    import seg_zoo

    console = stdout_console()
    try:
        if name in seg_zoo.list_models():
            entry = seg_zoo.get_entry(name)
            console.print(entry.to_json(), markup=False, highlight=False)
            return
        resolved = seg_zoo.resolve(name)
    except _errors() as error:
        _fail("info", error)
    if resolved.manifest is None:
        console.print(
            f"{name}: a {resolved.kind} {resolved.method} model"
            + (f" at {resolved.folder}" if resolved.folder else f" ({resolved.target})"),
            markup=False,
        )
        return
    manifest = resolved.manifest.model_copy(update={"training": None, "architecture": {}})
    console.print(manifest.to_json(), markup=False, highlight=False)


@app.command()
def save(
    source: Annotated[
        str,
        typer.Argument(
            help="A model folder written by `seg train METHOD`, or any zoo name / local-dir: source.",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Argument(help="Folder to write.", file_okay=False, metavar="OUT", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="Zoo name to publish it as (method-arch.tag).")] = None,
    upstream_clip: Annotated[
        str | None,
        typer.Option("--upstream-clip", help="Where its CLIP is published (zoo name or hf-hub:), if a local folder."),
    ] = None,
) -> None:
    """Write SOURCE as a zoo checkpoint: model.safetensors, config.json (checked manifest) and README.md (card)."""
    import seg_zoo

    try:
        upstream = {"clip": upstream_clip} if upstream_clip else None
        folder = seg_zoo.save_pretrained(source, out, name=name, upstream=upstream)
    except _errors() as error:
        _fail("save", error)
    stdout_console().print(f"saved {source} to {folder} (model.safetensors, config.json, README.md)", markup=False)


@app.command()
def pull(
    name: Annotated[
        str,
        typer.Argument(help="Zoo name or hf-hub:org/name[@rev].", metavar="NAME", show_default=False),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder to copy the files into (default: the Hub cache only).", file_okay=False
        ),
    ] = None,
) -> None:
    """Download a model's weights, config and model card from the Hub (checking the weights' sha256)."""
    import seg_zoo

    try:
        folder = seg_zoo.pull(name, out)
    except _errors() as error:
        _fail("pull", error)
    stdout_console().print(f"{name}: {folder}", markup=False)


@app.command()
def push(  # noqa: PLR0917 (typer reads the options from the signature)
    source: Annotated[
        str,
        typer.Argument(
            help="A folder written by `seg train METHOD` or save_pretrained, or a zoo name.",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    repo_id: Annotated[
        str,
        typer.Argument(
            callback=validate_repo_id, help="Hub repository, namespace/name.", metavar="REPO_ID", show_default=False
        ),
    ],
    tag: Annotated[str | None, typer.Option("--tag", help="Tag the new commit (load it as @TAG).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Zoo name to publish it as (method-arch.tag).")] = None,
    upstream_clip: Annotated[
        str | None,
        typer.Option("--upstream-clip", help="Where its CLIP is published (zoo name or hf-hub:), if a local folder."),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
) -> None:
    """Save SOURCE as a zoo checkpoint and upload it to the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN apply)."""
    import seg_zoo

    try:
        upstream = {"clip": upstream_clip} if upstream_clip else None
        commit = seg_zoo.push_to_hub(source, repo_id, tag=tag, private=private, name=name, upstream=upstream)
    except _errors() as error:
        _fail("push", error)
    stdout_console().print(
        f"pushed {source} to {repo_id} (commit {commit[:12]}{f', tag {tag}' if tag else ''}); load it with "
        f"--model hf-hub:{repo_id}{f'@{tag}' if tag else ''}",
        markup=False,
    )


@app.command("push-retrieval")
def push_retrieval(
    store: Annotated[
        Path,
        typer.Argument(
            help="Embedding store folder (seg retrieve embed).", exists=True, file_okay=False, show_default=False
        ),
    ],
    repo_id: Annotated[
        str,
        typer.Argument(callback=validate_repo_id, help="Hub dataset repository, namespace/name.", metavar="REPO_ID"),
    ],
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Its faiss index folder (seg retrieve index).", exists=True, file_okay=False),
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Tag the new commit.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
) -> None:
    """Publish an embedding store (and its index) as a Hub dataset repository, with a digest of every file."""
    import seg_zoo

    try:
        commit = seg_zoo.push_retrieval_assets(store, repo_id, index=index, tag=tag, private=private)
    except _errors() as error:
        _fail("push-retrieval", error)
    stdout_console().print(
        f"pushed {store}{f' and {index}' if index else ''} to the dataset {repo_id} (commit {commit[:12]}); "
        f"pull it with `seg zoo pull-retrieval hf-hub:{repo_id}{f'@{tag}' if tag else ''} --out DIR`",
        markup=False,
    )


@app.command("pull-retrieval")
def pull_retrieval(
    source: Annotated[
        str, typer.Argument(help="hf-hub:org/name[@rev] of a dataset repository.", metavar="SOURCE", show_default=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder to copy the files into (default: the Hub cache only).", file_okay=False
        ),
    ] = None,
) -> None:
    """Download an embedding store (and its index), checking every file's sha256."""
    import seg_zoo

    try:
        pulled = seg_zoo.pull_retrieval_assets(source, out)
    except _errors() as error:
        _fail("pull-retrieval", error)
    record = pulled.record
    stdout_console().print(
        f"{source}: {record.count} images embedded by {record.encoder} ({record.dim}-d); store {pulled.store}"
        + (f", {record.index_kind} index {pulled.index}" if pulled.index else ""),
        markup=False,
    )
