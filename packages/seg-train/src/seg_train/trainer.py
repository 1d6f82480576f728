"""The method-agnostic training loop.

A recipe builds a model and an optimizer, writes a ``step`` function that turns ``(model, batch)`` into a loss,
and hands them to :class:`Trainer` with a :class:`~seg_core.TrainConfig`. The Trainer owns everything else: the
learning-rate schedule, mixed precision, gradient accumulation and clipping, seeding, checkpoints and exact
resume, logging, and DistributedDataParallel under ``torchrun``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast, runtime_checkable

import torch
import torch.distributed as dist
from torch import nn

from seg_core import ConfigError, TrainConfig
from seg_train.checkpoint import (
    CHECKPOINTS_DIRNAME,
    MODEL_FILENAME,
    STATE_FILENAME,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_training_state,
    save_checkpoint,
)
from seg_train.data import BatchesFactory, move_to_device
from seg_train.distributed import DistributedContext, barrier, init_distributed
from seg_train.precision import ResolvedPrecision, autocast_dtype, resolve_precision
from seg_train.reporting import TENSORBOARD_DIRNAME, TrainingReporter
from seg_train.schedules import lr_multiplier
from seg_train.seeding import (
    RngSnapshot,
    capture_rng_state,
    deterministic_algorithms,
    restore_rng_snapshot,
    restore_rng_state,
    seed_everything,
    take_rng_snapshot,
)

__all__ = [
    "NonFiniteLossError",
    "Stateful",
    "StepFn",
    "StepOutput",
    "StepResult",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
]

BatchT = TypeVar("BatchT")

STATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class StepOutput:
    """What a step function may return instead of a bare loss.

    Attributes:
        loss: Scalar tensor to minimise (the Trainer divides it by ``grad_accum_steps`` before backward).
        metrics: Scalars to log next to the loss (numbers or one-element tensors), averaged over the steps
            between two log lines.
        num_samples: Samples in this batch; when given, throughput is also logged as samples per second.
    """

    loss: torch.Tensor
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)
    num_samples: int | None = None


StepResult: TypeAlias = torch.Tensor | StepOutput | Mapping[str, Any]
"""A step function's return: a scalar loss, a :class:`StepOutput`, or a mapping with ``"loss"`` plus metrics."""

StepFn: TypeAlias = Callable[[nn.Module, BatchT], StepResult]
"""``step(model, batch) -> loss``; ``model`` is the (possibly DDP-wrapped) model to call for the forward pass."""


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict``/``load_state_dict`` (an EMA model, a data sampler) to checkpoint alongside."""

    def state_dict(self) -> Any:
        """Tensors, numbers, strings and containers of them (``weights_only``-loadable)."""
        ...

    def load_state_dict(self, state_dict: Any, /) -> Any:
        """Restore what :meth:`state_dict` returned."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :meth:`Trainer.fit`.

    Attributes:
        final_step: Optimiser steps done (``max_steps`` after a complete run).
        checkpoint: The last checkpoint written, or ``None`` without ``out_dir``.
        history: Every logged record, oldest first: ``{"step", "loss", "lr", <metrics>, "steps_per_second", ...}``.
    """

    final_step: int
    checkpoint: Path | None
    history: tuple[dict[str, float], ...]

    @property
    def last_record(self) -> dict[str, float]:
        """The last logged record (empty when nothing was logged)."""
        return dict(self.history[-1]) if self.history else {}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; raised before the optimiser step, so the weights are not touched."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM; the state was checkpointed when ``out_dir`` was set.

    Attributes:
        step: Optimiser steps done when training stopped.
        checkpoint: The checkpoint written on the way out (``None`` when none could be written).
        signal_name: ``SIGINT``, ``SIGTERM`` or ``KeyboardInterrupt``.
    """

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str) -> None:
        where = f"; checkpoint {checkpoint}" if checkpoint is not None else "; no checkpoint written"
        super().__init__(f"training interrupted by {signal_name} after step {step}{where}")
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag read at step boundaries; a second one acts as usual."""

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self.signal_name: str | None = None
        self._on_first = on_first
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            # Second signal: stop waiting for the step to finish; re-deliver to the previous handler.
            self._restore()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        self._on_first(self.signal_name)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()


class _LogWindow:
    """Sums of loss, metrics and samples over the steps since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum: torch.Tensor | None = None
        self.metric_sums: dict[str, torch.Tensor | float] = {}
        self.metric_counts: dict[str, int] = {}
        self.micro_batches = 0
        self.steps = 0
        self.samples = 0
        self.samples_known = True
        self.grad_norm_sum: torch.Tensor | float = 0.0
        self.grad_norm_count = 0
        self.started = time.perf_counter()

    def add_micro_batch(
        self, loss: torch.Tensor, metrics: Mapping[str, float | torch.Tensor], samples: int | None
    ) -> None:
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        for name, value in metrics.items():
            previous = self.metric_sums.get(name, 0.0)
            self.metric_sums[name] = previous + value
            self.metric_counts[name] = self.metric_counts.get(name, 0) + 1
        self.micro_batches += 1
        if samples is None:
            self.samples_known = False
        else:
            self.samples += samples


def _as_scalar(value: object, what: str, step: int) -> float | torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise TypeError(
            f"step {step}: {what} is a {type(value).__name__}; metrics must be numbers or one-element tensors"
        )
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"step {step}: {what} has shape {tuple(value.shape)}; metrics must be scalars (reduce it, e.g. .mean())"
            )
        return value.detach().float().reshape(())
    return float(value)


def _parse_step_result(result: object, step: int) -> tuple[torch.Tensor, dict[str, float | torch.Tensor], int | None]:
    """Split a step function's return into (loss, metrics, num_samples), with clear errors for bad returns."""
    samples: int | None = None
    raw_metrics: Mapping[str, Any]
    if isinstance(result, torch.Tensor):
        loss, raw_metrics = result, {}
    elif isinstance(result, StepOutput):
        loss, raw_metrics, samples = result.loss, result.metrics, result.num_samples
    elif isinstance(result, Mapping):
        if "loss" not in result:
            raise KeyError(
                f"step {step}: the step function returned a mapping without 'loss' (keys: {sorted(result)}); "
                "add the loss under 'loss'"
            )
        loss = result["loss"]
        raw_metrics = {name: value for name, value in result.items() if name != "loss"}
    else:
        raise TypeError(
            f"step {step}: the step function returned a {type(result).__name__}; return a scalar loss tensor, "
            "a StepOutput, or a mapping with a 'loss' tensor"
        )
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"step {step}: loss is a {type(loss).__name__}; it must be a scalar tensor with a graph")
    if loss.numel() != 1:
        raise ValueError(f"step {step}: loss has shape {tuple(loss.shape)}; reduce it to a scalar (e.g. loss.mean())")
    if not loss.requires_grad:
        raise ValueError(
            f"step {step}: loss does not require grad; compute it from the model's output without .detach(), "
            ".item() or torch.no_grad()"
        )
    metrics = {str(name): _as_scalar(value, f"metric {name!r}", step) for name, value in raw_metrics.items()}
    if samples is not None and (isinstance(samples, bool) or not isinstance(cast(object, samples), int) or samples < 0):
        raise ValueError(f"step {step}: num_samples must be a non-negative int (got {samples!r})")
    return loss.reshape(()), metrics, samples


class _RestoredRng:
    """Runs a block without changing any global RNG (the block may draw; the state is put back afterwards)."""

    def __enter__(self) -> None:
        self._snapshot = take_rng_snapshot()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        restore_rng_snapshot(self._snapshot)


class Trainer(Generic[BatchT]):
    """Runs a step function over a batches factory for ``config.max_steps`` optimiser steps.

    Each optimiser step: set every group's lr to ``initial_lr * lr_multiplier(step)``; for each of
    ``grad_accum_steps`` batches run ``step_fn(model, batch)`` under autocast and backpropagate ``loss /
    grad_accum_steps`` (without DDP gradient sync but on the last); check the loss is finite; unscale and clip
    gradients; step the optimizer (through the GradScaler under fp16). Then log, checkpoint, and stop cleanly if
    SIGINT/SIGTERM arrived.

    Args:
        config: The run's :class:`~seg_core.TrainConfig`.
        model: The model; moved to the device by :meth:`fit` and wrapped in DistributedDataParallel when
            ``WORLD_SIZE > 1``.
        optimizer: Built by the recipe over ``model``'s parameters. Each group's ``lr`` when the Trainer is made is
            its initial lr (stored as ``initial_lr``), which the schedule scales: groups with different lr
            multipliers keep their ratios. ``config.lr``/``weight_decay`` are for the recipe to use when it builds
            the optimizer; the Trainer never overrides a group's lr other than by the schedule.
        step_fn: ``step_fn(model, batch) -> loss | StepOutput | {"loss": ..., **metrics}``. It receives the
            (possibly DDP-wrapped) model: call it for the forward pass so gradients are synchronised.
        out_dir: Run directory for checkpoints (``out_dir/checkpoints``) and TensorBoard (``out_dir/tensorboard``);
            ``None`` trains without writing anything.
        device: Training device; default ``cuda:<LOCAL_RANK>`` when CUDA is available, else CPU.
        extra_state: Named objects with ``state_dict``/``load_state_dict`` saved in, and restored from, every
            checkpoint (an EMA teacher, a stateful sampler).
        ddp_kwargs: Extra DistributedDataParallel arguments (e.g. ``find_unused_parameters=True``).
        log: Sink for log lines; default: printed on stderr by rank 0.

    Attributes:
        global_step: Optimiser steps done so far (restored on resume).
        last_checkpoint: The newest checkpoint written or resumed from, ``None`` before any.

    Raises:
        TypeError: An argument of the wrong kind.
        ValueError: The optimizer holds parameters that are not the model's.
        ConfigError: A config field that cannot work with the other arguments (the message names it).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step_fn: StepFn[BatchT],
        *,
        out_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        extra_state: Mapping[str, Stateful] | None = None,
        ddp_kwargs: Mapping[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a seg_core.TrainConfig, got {type(config).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(step_fn):
            raise TypeError(f"step_fn: expected a callable step(model, batch) -> loss, got {type(step_fn).__name__}")
        if config.checkpoint_every is not None and out_dir is None:
            raise ConfigError(
                f"checkpoint_every: set to {config.checkpoint_every} but the Trainer has no out_dir; "
                "pass out_dir=... or set checkpoint_every to null"
            )
        for name, stateful in (extra_state or {}).items():
            if not isinstance(stateful, Stateful):
                raise TypeError(f"extra_state[{name!r}]: {type(stateful).__name__} has no state_dict/load_state_dict")
        model_parameters = {id(parameter) for parameter in model.parameters()}
        foreign = sum(
            1
            for group in optimizer.param_groups
            for parameter in group["params"]
            if id(parameter) not in model_parameters
        )
        if foreign:
            raise ValueError(
                f"optimizer: {foreign} of its parameters are not parameters of the model; build the optimizer from "
                "model.parameters() (or param groups of them)"
            )
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.step_fn = step_fn
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = torch.device(device) if device is not None else None
        self.extra_state = dict(extra_state or {})
        self.ddp_kwargs = dict(ddp_kwargs or {})
        self._log = log
        self.global_step = 0
        self.last_checkpoint: Path | None = None
        self._updating = False
        self._rng_at_step_start: RngSnapshot | None = None

    # ------------------------------------------------------------------ resume

    def _resolve_resume(self, resume_from: str | os.PathLike[str] | None) -> Path | None:
        if resume_from is None:
            existing = list_checkpoints(self.out_dir) if self.out_dir is not None else []
            if existing:
                raise ConfigError(
                    f"out_dir: {self.out_dir} already holds checkpoints up to {existing[-1][1].name}; pass "
                    "resume_from='latest' to continue that run, or choose a new out_dir"
                )
            return None
        if resume_from == "latest":
            if self.out_dir is None:
                raise ConfigError("resume_from: 'latest' needs the Trainer's out_dir (where the checkpoints are)")
            return latest_checkpoint(self.out_dir)
        path = Path(resume_from)
        if not ((path / MODEL_FILENAME).is_file() and (path / STATE_FILENAME).is_file()):
            raise FileNotFoundError(
                f"resume_from: {path} is not a checkpoint directory (expected {MODEL_FILENAME} and {STATE_FILENAME}); "
                f"pass a {CHECKPOINTS_DIRNAME}/step_* directory or 'latest'"
            )
        return path

    def _restore(
        self,
        checkpoint: Path,
        scaler: torch.amp.GradScaler,
        context: DistributedContext,
        device: torch.device,
        reporter: TrainingReporter,
    ) -> int:
        state = load_training_state(checkpoint)
        version = state.get("format_version")
        if version != STATE_FORMAT_VERSION:
            raise ValueError(
                f"{checkpoint / STATE_FILENAME}: state format {version!r} is not supported "
                f"(this seg-train reads format {STATE_FORMAT_VERSION})"
            )
        step = int(state["step"])
        if self.out_dir is not None:
            later = [path.name for saved_step, path in list_checkpoints(self.out_dir) if saved_step > step]
            if later:
                raise ConfigError(
                    f"resume_from: {checkpoint} is at step {step} but out_dir {self.out_dir} already has later "
                    f"checkpoints ({', '.join(later)}); resume from 'latest' or move them away"
                )
        load_model_weights(checkpoint, self.model, device=device)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"{checkpoint}: the optimizer state does not fit this optimizer ({error}); build the same "
                "optimizer (param groups in the same order) as the run that wrote it"
            ) from error
        scaler_state = state.get("grad_scaler") or {}
        if scaler.is_enabled() and scaler_state:
            scaler.load_state_dict(scaler_state)
        saved_extra = state.get("extra", {})
        for name, stateful in self.extra_state.items():
            if name not in saved_extra:
                raise KeyError(
                    f"{checkpoint}: no extra state {name!r} (saved: {sorted(saved_extra)}); it was written "
                    f"without extra_state={{{name!r}: ...}}"
                )
            stateful.load_state_dict(saved_extra[name])
        rng_states = state.get("rng", [])
        if len(rng_states) == context.world_size:
            restore_rng_state(rng_states[context.rank])
        else:
            seed_everything(self.config.seed + step, rank=context.rank)
            reporter.message(
                f"warning: {checkpoint.name} was written by {len(rng_states)} process(es), this run has "
                f"{context.world_size}; random streams are reseeded, so the run will not repeat the original exactly"
            )
        saved_config = state.get("config", {})
        current_config = self.config.model_dump(mode="json")
        changed = [name for name in current_config if saved_config.get(name) != current_config[name]]
        if changed:
            reporter.message(f"note: config fields changed since {checkpoint.name}: {', '.join(changed)}")
        return step

    # ------------------------------------------------------------------ checkpoints

    def _training_state(self, step: int, scaler: torch.amp.GradScaler, context: DistributedContext) -> dict[str, Any]:
        rng_state = capture_rng_state()
        if context.is_distributed:
            rng_states: list[Any] = [None] * context.world_size
            dist.all_gather_object(rng_states, rng_state)
        else:
            rng_states = [rng_state]
        return {
            "format_version": STATE_FORMAT_VERSION,
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": scaler.state_dict(),
            "schedule": {
                "kind": self.config.schedule.kind,
                "multiplier": lr_multiplier(
                    min(step, self.config.max_steps - 1), self.config.schedule, self.config.max_steps
                ),
                "initial_lrs": [float(group["initial_lr"]) for group in self.optimizer.param_groups],
            },
            "rng": rng_states,
            "world_size": context.world_size,
            "config": self.config.model_dump(mode="json"),
            "extra": {name: stateful.state_dict() for name, stateful in self.extra_state.items()},
        }

    def _save(self, step: int, scaler: torch.amp.GradScaler, context: DistributedContext) -> Path | None:
        """Collective: every rank must call it at the same step; rank 0 writes."""
        if self.out_dir is None:
            return None
        state = self._training_state(step, scaler, context)
        barrier()
        path = self.out_dir / CHECKPOINTS_DIRNAME / checkpoint_name(step)
        if context.is_main:
            path = save_checkpoint(self.out_dir, step, self.model, state, keep=self.config.keep_checkpoints)
        barrier()
        self.last_checkpoint = path
        return path

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        batches: BatchesFactory[BatchT],
        *,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> TrainResult:
        """Train until ``config.max_steps`` optimiser steps are done.

        Args:
            batches: ``batches(start_batch) -> Iterable[batch]``, where ``start_batch`` is the number of batches
                this rank already consumed (``steps_done * grad_accum_steps``). It must yield the same batches as
                ``batches(0)`` after skipping ``start_batch`` of them (see :mod:`seg_train.data`), and enough of
                them; under DDP, each rank its own shard.
            resume_from: ``None`` for a fresh run (refused when ``out_dir`` already has checkpoints),
                ``"latest"`` to continue from the newest checkpoint in ``out_dir`` (fresh when there is none),
                or a checkpoint directory.

        Returns:
            The final step, the last checkpoint and the logged history.

        Raises:
            NonFiniteLossError: The loss became NaN/inf (before the update; the last checkpoint is intact).
            TrainingInterrupted: SIGINT/SIGTERM or KeyboardInterrupt; a checkpoint was written when possible.
        """
        if not callable(batches):
            raise TypeError(
                f"batches: expected a factory batches(start_batch) -> iterable of batches, got {type(batches).__name__}"
            )
        context = init_distributed()
        device = self.device if self.device is not None else context.device
        if device.type == "cuda" and cast(int | None, device.index) is None:  # DDP wants an explicit index
            device = torch.device("cuda", torch.cuda.current_device())
        precision = resolve_precision(self.config.precision, device)
        self.model.to(device)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        checkpoint = self._resolve_resume(resume_from)
        tensorboard_dir = (
            self.out_dir / TENSORBOARD_DIRNAME if self.out_dir is not None and self.config.tensorboard else None
        )
        history: list[dict[str, float]] = []
        # Messages before the start step is known (resume) go through a reporter with no bar and no writer.
        resume_reporter = TrainingReporter(
            enabled=context.is_main,
            max_steps=self.config.max_steps,
            start_step=0,
            show_progress=False,
            tensorboard_dir=None,
            log=self._log,
        )
        if checkpoint is not None:
            start_step = self._restore(checkpoint, scaler, context, device, resume_reporter)
            self.last_checkpoint = checkpoint
            resume_reporter.message(f"resumed from {checkpoint} at step {start_step}")
        else:
            start_step = 0
            seed_everything(self.config.seed, rank=context.rank)
            self.last_checkpoint = None
        self.global_step = start_step
        if start_step >= self.config.max_steps:
            resume_reporter.message(f"nothing to do: step {start_step} >= max_steps {self.config.max_steps}")
            return TrainResult(final_step=start_step, checkpoint=self.last_checkpoint, history=())

        reporter = TrainingReporter(
            enabled=context.is_main,
            max_steps=self.config.max_steps,
            start_step=start_step,
            show_progress=self.config.progress,
            tensorboard_dir=tensorboard_dir,
            log=self._log,
        )
        then = "saving a checkpoint" if self.out_dir is not None else "stopping (no out_dir: nothing is saved)"
        stop_signals = _StopSignals(
            lambda name: reporter.message(
                f"{name} received: finishing step {self.global_step + 1}, then {then} (send it again to stop at once)"
            )
        )
        with deterministic_algorithms(self.config.deterministic), reporter, stop_signals:
            wrapped = self._wrap(context, device)
            with _RestoredRng():  # setting up the data (e.g. a DataLoader's iterator) must not shift the RNG streams
                batch_iterator = iter(batches(start_step * self.config.grad_accum_steps))
            try:
                self._loop(
                    wrapped=wrapped,
                    batch_iterator=batch_iterator,
                    precision=precision,
                    scaler=scaler,
                    context=context,
                    device=device,
                    reporter=reporter,
                    stop_signals=stop_signals,
                    history=history,
                )
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt as interrupt:
                saved = self._save_after_interrupt(scaler, context, reporter)
                raise TrainingInterrupted(self.global_step, saved, "KeyboardInterrupt") from interrupt
            except BaseException:
                if self.last_checkpoint is not None:
                    reporter.message(
                        f"training failed during step {self.global_step + 1}; last checkpoint: {self.last_checkpoint}"
                    )
                raise
            finally:
                self._updating = False
        return TrainResult(final_step=self.global_step, checkpoint=self.last_checkpoint, history=tuple(history))

    def _wrap(self, context: DistributedContext, device: torch.device) -> nn.Module:
        self.model.train()
        if not context.is_distributed:
            return self.model
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids, **self.ddp_kwargs)

    def _save_after_interrupt(
        self, scaler: torch.amp.GradScaler, context: DistributedContext, reporter: TrainingReporter
    ) -> Path | None:
        if self.out_dir is None:
            return None
        if self._updating:
            reporter.message("interrupted inside the optimiser update: the weights are half-updated, not saving")
            return self.last_checkpoint
        if context.is_distributed:
            # Other ranks may be anywhere: no collective (hence no checkpoint) is safe now.
            reporter.message("interrupted outside a step boundary under DDP: no checkpoint written")
            return self.last_checkpoint
        if self.last_checkpoint is not None and self.last_checkpoint.name == checkpoint_name(self.global_step):
            return self.last_checkpoint
        if self._rng_at_step_start is not None:
            restore_rng_snapshot(self._rng_at_step_start)  # the RNG as it was at the step boundary being saved
        saved = self._save(self.global_step, scaler, context)
        reporter.message(f"interrupted: saved {saved}")
        return saved

    def _control_flags(
        self, step_loss: torch.Tensor, stop_requested: bool, context: DistributedContext
    ) -> tuple[bool, bool]:
        """(loss is finite on every rank, some rank wants to stop): one tiny all-reduce per step under DDP."""
        finite = bool(torch.isfinite(step_loss))
        if not context.is_distributed:
            return finite, stop_requested
        flags = torch.tensor(
            [0 if finite else 1, 1 if stop_requested else 0], dtype=torch.int32, device=step_loss.device
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags[0].item() == 0, flags[1].item() == 1

    def _loop(
        self,
        *,
        wrapped: nn.Module,
        batch_iterator: Iterator[BatchT],
        precision: ResolvedPrecision,
        scaler: torch.amp.GradScaler,
        context: DistributedContext,
        device: torch.device,
        reporter: TrainingReporter,
        stop_signals: _StopSignals,
        history: list[dict[str, float]],
    ) -> None:
        config = self.config
        accum_steps = config.grad_accum_steps
        dtype = autocast_dtype(precision)
        parameters = [parameter for group in self.optimizer.param_groups for parameter in group["params"]]
        window = _LogWindow()
        while self.global_step < config.max_steps:
            step = self.global_step
            self._rng_at_step_start = take_rng_snapshot()
            multiplier = lr_multiplier(step, config.schedule, config.max_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * multiplier
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro_batch in range(accum_steps):
                batch = self._next_batch(batch_iterator, step, micro_batch)
                batch = move_to_device(batch, device, non_blocking=device.type == "cuda")
                syncs = micro_batch == accum_steps - 1 or not context.is_distributed
                sync_context: AbstractContextManager[Any] = nullcontext() if syncs else _no_sync(wrapped)
                with sync_context:
                    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
                    with autocast:
                        result = self.step_fn(wrapped, batch)
                    loss, metrics, samples = _parse_step_result(result, step + 1)
                    torch.autograd.backward(scaler.scale(loss.float() / accum_steps))
                detached = loss.detach().float()
                step_loss = step_loss + detached / accum_steps
                window.add_micro_batch(detached, metrics, samples)
            finite, stop_requested = self._control_flags(step_loss, stop_signals.signal_name is not None, context)
            if not finite:
                last = f"; the last checkpoint ({self.last_checkpoint}) is intact" if self.last_checkpoint else ""
                raise NonFiniteLossError(
                    f"step {step + 1}: the loss is {step_loss.item()} (not finite) on at least one rank, so the "
                    f"update was not applied{last}; lower lr, set grad_clip_norm, use fp32, or check the data"
                )
            self._updating = True
            if config.grad_clip_norm is not None:
                scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip_norm)
                window.grad_norm_sum = window.grad_norm_sum + grad_norm.detach()  # no device sync per step
                window.grad_norm_count += 1
            scaler.step(self.optimizer)
            scaler.update()
            self.global_step = step + 1
            self._rng_at_step_start = None  # nothing draws from here to the next step: capture at save time
            self._updating = False
            window.steps += 1
            reporter.advance(self.global_step)
            if self.global_step % config.log_every == 0 or self.global_step == config.max_steps:
                record = self._summarise(window, multiplier, context)
                history.append({"step": float(self.global_step), **record})
                reporter.record(self.global_step, record)
                window.reset()
            checkpoint_due = config.checkpoint_every is not None and self.global_step % config.checkpoint_every == 0
            if self.out_dir is not None and (checkpoint_due or stop_requested or self.global_step == config.max_steps):
                self._save(self.global_step, scaler, context)
            if stop_requested:
                raise TrainingInterrupted(self.global_step, self.last_checkpoint, stop_signals.signal_name or "signal")

    def _next_batch(self, batch_iterator: Iterator[BatchT], step: int, micro_batch: int) -> BatchT:
        try:
            return next(batch_iterator)
        except StopIteration:
            consumed = step * self.config.grad_accum_steps + micro_batch
            needed = self.config.max_steps * self.config.grad_accum_steps
            raise RuntimeError(
                f"batches: the factory ran out after {consumed} batches, at step {step + 1} of "
                f"{self.config.max_steps}; it must yield max_steps x grad_accum_steps = {needed} batches in all "
                "(loop over epochs inside it, e.g. with ResumableIndexBatches)"
            ) from None

    def _summarise(self, window: _LogWindow, multiplier: float, context: DistributedContext) -> dict[str, float]:
        elapsed = max(time.perf_counter() - window.started, 1e-9)
        assert window.loss_sum is not None
        mean_loss = window.loss_sum / window.micro_batches
        if context.is_distributed:
            mean_loss = mean_loss.clone()
            dist.all_reduce(mean_loss, op=dist.ReduceOp.SUM)
            mean_loss = mean_loss / context.world_size
        record: dict[str, float] = {"loss": float(mean_loss)}
        initial_lrs = [float(group["initial_lr"]) for group in self.optimizer.param_groups]
        record["lr"] = initial_lrs[0] * multiplier
        if len(set(initial_lrs)) > 1:
            for index, initial_lr in enumerate(initial_lrs):
                record[f"lr_group{index}"] = initial_lr * multiplier
        if window.grad_norm_count:
            record["grad_norm"] = float(window.grad_norm_sum) / window.grad_norm_count
        for name, total in window.metric_sums.items():
            record[name] = float(total) / window.metric_counts[name]
        record["steps_per_second"] = window.steps / elapsed
        if window.samples_known and window.samples:
            record["samples_per_second"] = window.samples * context.world_size / elapsed
        return record


def _no_sync(model: nn.Module) -> AbstractContextManager[Any]:
    no_sync: Callable[[], AbstractContextManager[Any]] | None = getattr(model, "no_sync", None)
    return no_sync() if no_sync is not None else nullcontext()
