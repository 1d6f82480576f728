"""Shared fixtures of the seg-cli tests: run ``seg`` in-process and read its output as plain words."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from seg_cli.app import app

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOX = re.compile(r"[│╭╮╰╯─┃┏┓┗┛━┡┩┠┨╇┳┻╋┣┫┼┬┴├┤└┘┌┐]")


def plain(text: str) -> str:
    """``text`` without colours, box drawing and line wrapping: words separated by single spaces."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", text)).split())


@dataclass(frozen=True)
class SegRun:
    """The outcome of one in-process ``seg`` invocation."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """Standard output and error together, flattened by :func:`plain`."""
        return plain(self.stdout + "\n" + self.stderr)


@pytest.fixture
def run_seg() -> Callable[..., SegRun]:
    """Run ``seg ARGS...`` in-process with a wide terminal; returns exit code, stdout and stderr."""
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    def run(*args: str) -> SegRun:
        result = runner.invoke(app, list(args), prog_name="seg")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return SegRun(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture(scope="session")
def random_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised synthetic-size CLIP in the open_clip local-dir layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from seg_core import CLIP_MEAN_STD
    from seg_models.clip import SYNTHETIC_CLIP_CONFIG, local_dir_config, register_model_config

    folder = tmp_path_factory.mktemp("clip")
    name = register_model_config()
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(local_dir_config(SYNTHETIC_CLIP_CONFIG, CLIP_MEAN_STD)))
    return f"local-dir:{folder}"
