"""What a run shows and records: a rich progress bar, a plain log line every ``log_every`` steps, TensorBoard.

Only the main process (rank 0) reports; on other ranks every method is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["TrainingReporter", "format_log_line"]

TENSORBOARD_DIRNAME = "tensorboard"


def _format_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if value == 0 or 1e-3 <= magnitude < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


def format_log_line(step: int, max_steps: int, values: Mapping[str, float]) -> str:
    """One plain log line: ``step 20/100 | loss 0.4312 | lr 1.000e-04 | 41.2 steps/s``.

    Throughput values (``steps_per_second``, ``samples_per_second``) come last, written as rates.
    """
    rates = {"steps_per_second": "steps/s", "samples_per_second": "samples/s"}
    parts = [f"step {step}/{max_steps}"]
    parts += [f"{name} {_format_value(value)}" for name, value in values.items() if name not in rates]
    parts += [f"{values[name]:.1f} {unit}" for name, unit in rates.items() if name in values]
    return " | ".join(parts)


class TrainingReporter:
    """Progress bar, log lines and TensorBoard scalars of one ``fit`` call.

    Args:
        enabled: False on every rank but 0 (then nothing is shown or written).
        max_steps: Total optimiser steps.
        start_step: Steps already done (a resumed run); TensorBoard events after it are purged.
        show_progress: Show a rich progress bar (only when stderr is a terminal).
        tensorboard_dir: Where to write TensorBoard events; ``None`` disables TensorBoard.
        log: Where log lines go; default: printed on stderr (above the progress bar).
    """

    def __init__(
        self,
        *,
        enabled: bool,
        max_steps: int,
        start_step: int,
        show_progress: bool,
        tensorboard_dir: Path | None,
        log: Callable[[str], None] | None,
    ) -> None:
        self.enabled = enabled
        self.max_steps = max_steps
        self.start_step = start_step
        self._console = Console(stderr=True)
        self._log = log
        self._show_progress = enabled and show_progress and self._console.is_terminal
        self._tensorboard_dir = tensorboard_dir if enabled else None
        self._writer: Any = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TrainingReporter:
        if self._tensorboard_dir is not None:
            # Imported here: tensorboard takes a second or two to import and is only needed when enabled.
            from torch.utils.tensorboard import SummaryWriter

            purge_step = self.start_step + 1 if self.start_step > 0 else None
            self._writer = SummaryWriter(log_dir=str(self._tensorboard_dir), purge_step=purge_step)
        if self._show_progress:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self._console,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.max_steps, completed=self.start_step, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def message(self, text: str) -> None:
        """Show one line (rank 0 only)."""
        if not self.enabled:
            return
        if self._log is not None:
            self._log(text)
        else:
            self._console.print(text, markup=False, highlight=False, soft_wrap=True)

    def advance(self, step: int) -> None:
        """Move the progress bar to ``step`` completed steps."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step)

    def record(self, step: int, values: Mapping[str, float]) -> None:
        """Log ``values`` after ``step`` steps: a log line, TensorBoard scalars ``train/<name>``, the bar's status."""
        if not self.enabled:
            return
        self.message(format_log_line(step, self.max_steps, values))
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"train/{name}", value, global_step=step)
            self._writer.flush()
        if self._progress is not None and self._task is not None and "loss" in values:
            self._progress.update(self._task, status=f"loss {_format_value(values['loss'])}")
