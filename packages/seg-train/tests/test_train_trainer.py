"""The Trainer in one process: loop, step returns, schedule, AMP, accumulation, clipping, errors, interrupts."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from seg_core import ConfigError, ScheduleConfig, TrainConfig
from seg_train import (
    NonFiniteLossError,
    StepOutput,
    Trainer,
    TrainingInterrupted,
    build_optimizer,
    latest_checkpoint,
    load_model_weights,
    load_training_state,
)

Batch = tuple[torch.Tensor, torch.Tensor]


def _config(**overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {"max_steps": 6, "lr": 0.05, "log_every": 2, "progress": False, "tensorboard": False}
    values.update(overrides)
    return TrainConfig.parse(values)


def _sgd(model: nn.Module, lr: float = 0.05) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr)


def test_training_reduces_the_loss_and_logs_every_log_every(tiny_problem: Any) -> None:
    model = tiny_problem.make_model()
    lines: list[str] = []
    config = _config(max_steps=40, log_every=10, schedule={"kind": "constant"})
    result = Trainer(config, model, _sgd(model), tiny_problem.mse_step, log=lines.append).fit(tiny_problem.batches())
    assert result.final_step == 40
    assert result.checkpoint is None
    assert [record["step"] for record in result.history] == [10, 20, 30, 40]
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert len(lines) == 4
    assert lines[0].startswith("step 10/40 | loss ")
    assert "steps/s" in lines[0]


def test_step_may_return_a_step_output_or_a_mapping(tiny_problem: Any) -> None:
    def with_output(model: nn.Module, batch: Batch) -> StepOutput:
        loss = tiny_problem.mse_step(model, batch)
        return StepOutput(loss=loss, metrics={"half_loss": loss.detach() / 2, "one": 1}, num_samples=len(batch[0]))

    def with_mapping(model: nn.Module, batch: Batch) -> dict[str, Any]:
        return {"loss": tiny_problem.mse_step(model, batch), "constant": torch.tensor(3.0)}

    model = tiny_problem.make_model()
    first = Trainer(_config(), model, _sgd(model), with_output).fit(tiny_problem.batches())
    record = first.last_record
    assert record["half_loss"] == pytest.approx(record["loss"] / 2, rel=1e-5)
    assert record["one"] == 1.0
    assert record["samples_per_second"] > 0
    model = tiny_problem.make_model()
    second = Trainer(_config(), model, _sgd(model), with_mapping).fit(tiny_problem.batches())
    assert second.last_record["constant"] == 3.0
    assert "samples_per_second" not in second.last_record


@pytest.mark.parametrize(
    ("step_return", "error", "message"),
    [
        (lambda loss: [loss], TypeError, r"returned a list; return a scalar loss tensor, a StepOutput, or a mapping"),
        (lambda loss: {"total": loss}, KeyError, r"mapping without 'loss' \(keys: \['total'\]\)"),
        (lambda loss: loss.expand(4), ValueError, r"loss has shape \(4,\); reduce it to a scalar"),
        (lambda loss: loss.detach(), ValueError, r"loss does not require grad"),
        (lambda loss: {"loss": loss, "acc": torch.ones(2)}, ValueError, r"metric 'acc' has shape \(2,\)"),
        (lambda loss: {"loss": loss, "name": "x"}, TypeError, r"metric 'name' is a str"),
        (lambda loss: 0.5, TypeError, r"returned a float"),
    ],
)
def test_bad_step_returns_are_explained(
    tiny_problem: Any, step_return: Callable[[torch.Tensor], Any], error: type[Exception], message: str
) -> None:
    model = tiny_problem.make_model()

    def step(model: nn.Module, batch: Batch) -> Any:
        return step_return(tiny_problem.mse_step(model, batch))

    with pytest.raises(error, match=message):
        Trainer(_config(), model, _sgd(model), step).fit(tiny_problem.batches())


def test_each_param_group_follows_the_schedule_from_its_own_initial_lr(tiny_problem: Any) -> None:
    model = tiny_problem.make_model()
    config = _config(max_steps=6, lr=0.1, schedule={"kind": "cosine", "warmup_steps": 2, "warmup_start_ratio": 0.0})
    optimizer = build_optimizer(
        config,
        [{"params": model[0].parameters(), "lr_multiplier": 0.1}, {"params": model[3].parameters()}],
        optimizer_class=torch.optim.SGD,
    )
    seen: list[tuple[float, float]] = []

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"]))
        return tiny_problem.mse_step(model, batch)

    Trainer(config, model, optimizer, step).fit(tiny_problem.batches())
    # warm-up 0, 0.5; then cosine over 4 steps: t = 0, 1/4, 1/2, 3/4.
    multipliers = [0.0, 0.5, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627]
    assert [first for first, _ in seen] == pytest.approx([0.01 * value for value in multipliers])
    assert [second for _, second in seen] == pytest.approx([0.1 * value for value in multipliers])


def test_gradient_accumulation_matches_one_large_batch(tiny_problem: Any, exactly_equal: Any) -> None:
    accumulated = tiny_problem.make_model()
    Trainer(_config(max_steps=4, grad_accum_steps=2), accumulated, _sgd(accumulated), tiny_problem.mse_step).fit(
        tiny_problem.batches(batch_size=4, seed=0)
    )

    def large_batches(start_batch: int) -> Iterator[Batch]:
        small = tiny_problem.batches(batch_size=4, seed=0)(2 * start_batch)
        for first, second in zip(small, small, strict=False):
            yield torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    large = tiny_problem.make_model()
    Trainer(_config(max_steps=4), large, _sgd(large), tiny_problem.mse_step).fit(large_batches)
    for name, tensor in accumulated.state_dict().items():
        torch.testing.assert_close(tensor, large.state_dict()[name], rtol=1e-5, atol=1e-6)
    untrained = tiny_problem.make_model()
    assert not exactly_equal(untrained, large)


def test_gradient_clipping_bounds_the_update(tiny_problem: Any) -> None:
    def first_update(clip: float | None) -> tuple[float, dict[str, float]]:
        model = tiny_problem.make_model()
        before = torch.nn.utils.parameters_to_vector(model.parameters()).clone()
        config = _config(max_steps=1, log_every=1, grad_clip_norm=clip, schedule={"kind": "constant"})
        result = Trainer(config, model, _sgd(model, lr=1.0), tiny_problem.mse_step).fit(tiny_problem.batches())
        after = torch.nn.utils.parameters_to_vector(model.parameters())
        return float((after - before).detach().norm()), result.last_record

    clipped_norm, clipped_record = first_update(1e-3)
    free_norm, free_record = first_update(None)
    assert clipped_norm == pytest.approx(1e-3, rel=1e-3)  # SGD lr 1: the update is the clipped gradient
    assert free_norm > 10 * clipped_norm
    assert clipped_record["grad_norm"] == pytest.approx(free_norm, rel=1e-4)  # the norm before clipping is logged
    assert "grad_norm" not in free_record


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_on_cpu(tiny_problem: Any, precision: str, dtype: torch.dtype) -> None:
    seen: list[torch.dtype] = []

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        output = model(batch[0])
        seen.append(output.dtype)
        return (output.float() - batch[1]).pow(2).mean()

    model = tiny_problem.make_model()
    Trainer(_config(max_steps=2, precision=precision), model, _sgd(model), step).fit(tiny_problem.batches())
    assert seen == [dtype, dtype]
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32


def _run(
    tiny_problem: Any,
    out_dir: Path | None,
    config: TrainConfig,
    *,
    step: Callable[[nn.Module, Batch], Any] | None = None,
    resume_from: str | Path | None = None,
    dropout: float = 0.2,
) -> tuple[nn.Module, Trainer[Batch]]:
    model = tiny_problem.make_model(dropout=dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    trainer: Trainer[Batch] = Trainer(config, model, optimizer, step or tiny_problem.noisy_step, out_dir=out_dir)
    trainer.fit(tiny_problem.batches(), resume_from=resume_from)
    return model, trainer


def test_resume_after_a_failed_step_equals_an_uninterrupted_run(
    tiny_problem: Any, tmp_path: Path, exactly_equal: Any
) -> None:
    config = _config(max_steps=8, checkpoint_every=3, grad_accum_steps=2, schedule={"warmup_steps": 2})
    reference, _ = _run(tiny_problem, tmp_path / "reference", config)

    def failing_step(model: nn.Module, batch: Batch) -> Any:
        if failing_trainer_steps[0]() == 4:
            raise RuntimeError("injected failure")
        return tiny_problem.noisy_step(model, batch)

    failing_trainer_steps: list[Callable[[], int]] = []
    model = tiny_problem.make_model(dropout=0.2)
    trainer: Trainer[Batch] = Trainer(
        config, model, torch.optim.AdamW(model.parameters(), lr=config.lr), failing_step, out_dir=tmp_path / "run"
    )
    failing_trainer_steps.append(lambda: trainer.global_step)
    with pytest.raises(RuntimeError, match="injected failure"):
        trainer.fit(tiny_problem.batches())
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "step_00000003"

    resumed, resumed_trainer = _run(tiny_problem, tmp_path / "run", config, resume_from="latest")
    assert resumed_trainer.global_step == 8
    assert exactly_equal(resumed, reference)
    fresh_but_not_resumed = tiny_problem.make_model(dropout=0.2)
    assert not exactly_equal(fresh_but_not_resumed, reference)


def test_keyboard_interrupt_saves_a_checkpoint_that_resumes_exactly(
    tiny_problem: Any, tmp_path: Path, exactly_equal: Any
) -> None:
    config = _config(max_steps=6)
    reference, _ = _run(tiny_problem, tmp_path / "reference", config)
    calls = 0

    def interrupted_step(model: nn.Module, batch: Batch) -> Any:
        nonlocal calls
        calls += 1
        output = tiny_problem.noisy_step(model, batch)  # draws from the RNGs before the interrupt
        if calls == 4:
            raise KeyboardInterrupt
        return output

    with pytest.raises(TrainingInterrupted) as caught:
        _run(tiny_problem, tmp_path / "run", config, step=interrupted_step)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.step == 3
    assert caught.value.checkpoint == tmp_path / "run" / "checkpoints" / "step_00000003"
    assert latest_checkpoint(tmp_path / "run") == caught.value.checkpoint
    resumed, _ = _run(tiny_problem, tmp_path / "run", config, resume_from="latest")
    assert exactly_equal(resumed, reference)


def test_sigint_finishes_the_step_then_checkpoints(tiny_problem: Any, tmp_path: Path) -> None:
    lines: list[str] = []

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        if trainer.global_step == 2:
            signal.raise_signal(signal.SIGINT)
        return tiny_problem.mse_step(model, batch)

    model = tiny_problem.make_model()
    config = _config(max_steps=10)
    trainer: Trainer[Batch] = Trainer(config, model, _sgd(model), step, out_dir=tmp_path, log=lines.append)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit(tiny_problem.batches())
    assert caught.value.signal_name == "SIGINT"
    assert caught.value.step == 3  # the step that was running when the signal came completed
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000003"
    assert any("SIGINT received: finishing step 3, then saving a checkpoint" in line for line in lines)
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_non_finite_loss_stops_before_the_update(tiny_problem: Any, tmp_path: Path) -> None:
    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = tiny_problem.mse_step(model, batch)
        return loss * float("nan") if trainer.global_step == 2 else loss

    model = tiny_problem.make_model()
    config = _config(max_steps=5, checkpoint_every=2)
    trainer: Trainer[Batch] = Trainer(config, model, _sgd(model), step, out_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the loss is nan .* the last checkpoint .*step_00000002"):
        trainer.fit(tiny_problem.batches())
    saved = tiny_problem.make_model(seed=99)
    load_model_weights(tmp_path / "checkpoints" / "step_00000002", saved, device=torch.device("cpu"))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(
    tiny_problem: Any, tmp_path: Path, exactly_equal: Any
) -> None:
    config = _config(max_steps=6, precision="fp16", checkpoint_every=3, keep_checkpoints=3, lr=0.01)

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        return 100.0 * tiny_problem.mse_step(model, batch)  # large gradients: the scaler backs off early

    reference, _ = _run(tiny_problem, tmp_path / "reference", config, step=step)
    scaler_state = load_training_state(tmp_path / "reference" / "checkpoints" / "step_00000003")["grad_scaler"]
    assert scaler_state["scale"] < 65536.0  # it changed from the initial scale, so restoring it matters
    resumed, _ = _run(
        tiny_problem,
        tmp_path / "resumed",
        config,
        step=step,
        resume_from=tmp_path / "reference" / "checkpoints" / "step_00000003",
    )
    assert exactly_equal(resumed, reference)
    final_states = [
        load_training_state(tmp_path / run / "checkpoints/step_00000006") for run in ("reference", "resumed")
    ]
    assert final_states[0]["grad_scaler"] == final_states[1]["grad_scaler"]


def test_extra_state_is_saved_and_restored(tiny_problem: Any, tmp_path: Path) -> None:
    class StepCounter:
        def __init__(self) -> None:
            self.count = 0

        def state_dict(self) -> dict[str, int]:
            return {"count": self.count}

        def load_state_dict(self, state: dict[str, int]) -> None:
            self.count = state["count"]

    counter = StepCounter()

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        counter.count += 1
        return tiny_problem.mse_step(model, batch)

    model = tiny_problem.make_model()
    Trainer(_config(max_steps=3), model, _sgd(model), step, out_dir=tmp_path, extra_state={"counter": counter}).fit(
        tiny_problem.batches()
    )
    assert load_training_state(latest_checkpoint(tmp_path) or tmp_path)["extra"] == {"counter": {"count": 3}}
    restored = StepCounter()
    model = tiny_problem.make_model()
    Trainer(_config(max_steps=3), model, _sgd(model), step, out_dir=tmp_path, extra_state={"counter": restored}).fit(
        tiny_problem.batches(), resume_from="latest"
    )
    assert restored.count == 3


def test_fresh_run_refuses_an_out_dir_with_checkpoints(tiny_problem: Any, tmp_path: Path) -> None:
    model = tiny_problem.make_model()
    Trainer(_config(max_steps=2), model, _sgd(model), tiny_problem.mse_step, out_dir=tmp_path).fit(
        tiny_problem.batches()
    )
    again = Trainer(_config(max_steps=2), model, _sgd(model), tiny_problem.mse_step, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"already holds checkpoints up to step_00000002; pass resume_from='latest'"):
        again.fit(tiny_problem.batches())
    result = again.fit(tiny_problem.batches(), resume_from="latest")  # already done: nothing to train
    assert result.final_step == 2
    with pytest.raises(FileNotFoundError, match=r"resume_from: .* is not a checkpoint directory"):
        again.fit(tiny_problem.batches(), resume_from=tmp_path / "missing")


def test_resuming_an_older_checkpoint_with_later_ones_present_is_refused(tiny_problem: Any, tmp_path: Path) -> None:
    model = tiny_problem.make_model()
    config = _config(max_steps=4, checkpoint_every=2, keep_checkpoints=3)
    Trainer(config, model, _sgd(model), tiny_problem.mse_step, out_dir=tmp_path).fit(tiny_problem.batches())
    again = Trainer(config, model, _sgd(model), tiny_problem.mse_step, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"at step 2 but out_dir .* already has later checkpoints \(step_00000004\)"):
        again.fit(tiny_problem.batches(), resume_from=tmp_path / "checkpoints" / "step_00000002")


def test_constructor_errors_name_the_field(tiny_problem: Any) -> None:
    model = tiny_problem.make_model()
    with pytest.raises(ConfigError, match=r"checkpoint_every: set to 5 but the Trainer has no out_dir"):
        Trainer(_config(checkpoint_every=5), model, _sgd(model), tiny_problem.mse_step)
    stranger = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"optimizer: 2 of its parameters are not parameters of the model"):
        Trainer(_config(), model, _sgd(stranger), tiny_problem.mse_step)
    with pytest.raises(TypeError, match=r"config: expected a seg_core.TrainConfig, got dict"):
        Trainer({"max_steps": 1}, model, _sgd(model), tiny_problem.mse_step)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"resume_from: 'latest' needs the Trainer's out_dir"):
        Trainer(_config(), model, _sgd(model), tiny_problem.mse_step).fit(tiny_problem.batches(), resume_from="latest")


def test_running_out_of_batches_is_explained(tiny_problem: Any) -> None:
    model = tiny_problem.make_model()

    def three_batches(start_batch: int) -> list[Batch]:
        return [(tiny_problem.features[:4], tiny_problem.targets[:4])] * (3 - start_batch)

    trainer = Trainer(_config(max_steps=5), model, _sgd(model), tiny_problem.mse_step)
    with pytest.raises(RuntimeError, match=r"ran out after 3 batches, at step 4 of 5; it must yield .* = 5 batches"):
        trainer.fit(three_batches)


def test_deterministic_mode_is_scoped_to_fit(tiny_problem: Any) -> None:
    seen: list[bool] = []

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        seen.append(torch.are_deterministic_algorithms_enabled())
        return tiny_problem.mse_step(model, batch)

    model = tiny_problem.make_model()
    Trainer(_config(max_steps=1, deterministic=True), model, _sgd(model), step).fit(tiny_problem.batches())
    assert seen == [True]
    assert not torch.are_deterministic_algorithms_enabled()


def test_tensorboard_scalars(tiny_problem: Any, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def step(model: nn.Module, batch: Batch) -> StepOutput:
        loss = tiny_problem.mse_step(model, batch)
        return StepOutput(loss, {"abs_error": loss.detach().sqrt()}, num_samples=4)

    model = tiny_problem.make_model()
    config = _config(max_steps=4, log_every=2, tensorboard=True, schedule=ScheduleConfig(kind="constant"))
    result = Trainer(config, model, _sgd(model), step, out_dir=tmp_path).fit(tiny_problem.batches())
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected_tags = {"loss", "lr", "abs_error", "steps_per_second", "samples_per_second"}
    assert {f"train/{name}" for name in expected_tags} <= tags
    losses = events.Scalars("train/loss")
    assert [event.step for event in losses] == [2, 4]
    assert [event.value for event in losses] == pytest.approx([record["loss"] for record in result.history])
    assert [event.value for event in events.Scalars("train/lr")] == pytest.approx([0.05, 0.05])
