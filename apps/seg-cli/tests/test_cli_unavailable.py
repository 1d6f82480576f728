"""Commands whose content does not exist yet say so, name who provides it, write nothing and exit 2."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from seg_cli.unavailable import NOT_AVAILABLE_EXIT_CODE, not_available


@pytest.fixture(autouse=True)
def reclip_not_landed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every method's code has landed; the path for one that has not is exercised by taking ReCLIP++ away."""
    from seg_cli import segmenters, train

    monkeypatch.setattr(
        segmenters, "AVAILABLE_METHODS", tuple(m for m in segmenters.AVAILABLE_METHODS if m != "reclip")
    )
    monkeypatch.setattr(train, "TRAINABLE_METHODS", tuple(m for m in train.TRAINABLE_METHODS if m != "reclip"))


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Existing input files and folders, so that only the command's body can refuse."""
    image = tmp_path / "inputs" / "cat.png"
    image.parent.mkdir()
    image.write_bytes(b"not read")
    config = tmp_path / "inputs" / "recipe.yaml"
    config.write_text("{}\n")
    model_folder = tmp_path / "inputs" / "model"
    model_folder.mkdir()
    return {"image": image, "config": config, "folder": image.parent, "model": model_folder, "out": tmp_path / "out"}


UNAVAILABLE: list[tuple[str, list[str], str]] = [
    (
        "predict",
        ["predict", "{image}", "--method", "reclip", "--classes", "cat,dog", "--out", "{out}"],
        "the reclip issue",
    ),
    ("train reclip", ["train", "reclip", "--config", "{config}", "--out", "{out}"], "the reclip issue"),
]


@pytest.mark.parametrize(("command", "args", "provider"), UNAVAILABLE, ids=[case[0] for case in UNAVAILABLE])
def test_unavailable_command_says_so_and_exits_2(
    run_seg: Callable[..., Any], inputs: dict[str, Path], command: str, args: list[str], provider: str
) -> None:
    result = run_seg(*(arg.format(**inputs) for arg in args))
    assert result.exit_code == NOT_AVAILABLE_EXIT_CODE == 2
    assert f"Not available yet: seg {command}" in result.text
    assert f"provided by {provider}" in result.text
    assert result.stdout == ""  # no result, not even a partial one
    assert not inputs["out"].exists()


def test_not_available_raises_exit_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as raised:
        not_available("seg frobnicate (the [bold]thing[/])", "seg-core (issue 42)")
    assert raised.value.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Not available yet: seg frobnicate (the [bold]thing[/])." in err  # markup in names is printed literally
    assert "It will be provided by seg-core (issue 42)." in err
