"""DistributedDataParallel under torchrun (2 CPU processes, gloo), and the single-process helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from seg_core import ConfigError, TrainConfig
from seg_train import (
    ResumableIndexBatches,
    Trainer,
    distributed_context,
    init_distributed,
    latest_checkpoint,
    seed_everything,
    unwrap_model,
)

DDP_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    from torch import nn

    from seg_core import TrainConfig
    from seg_train import ResumableIndexBatches, Trainer, init_distributed, seed_everything, shutdown_distributed

    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    context = init_distributed()
    assert context.world_size == 2, context
    seed_everything(100 + context.rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    torch.save(model.state_dict(), f"{out_dir}/initial_rank{context.rank}.pt")
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(32, 5, generator=generator)
    targets = features.sum(dim=1, keepdim=True)
    index_batches = ResumableIndexBatches(32, batch_size=4, seed=5)  # rank and world size from the process group
    seen_indices = []

    def batches(start_batch):
        for indices in index_batches(start_batch):
            seen_indices.append(indices)
            yield features[indices], targets[indices]

    def step(model, batch):
        inputs, targets = batch
        return (model(inputs) - targets).pow(2).mean()

    def train(model, max_steps, resume_from):
        config = TrainConfig.parse({
            "max_steps": max_steps, "lr": 0.1, "grad_accum_steps": 2, "checkpoint_every": 2,
            "schedule": {"kind": "constant"}, "log_every": 2, "progress": False, "tensorboard": True,
        })
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        Trainer(config, model, optimizer, step, out_dir=f"{out_dir}/run").fit(batches, resume_from=resume_from)

    train(model, max_steps=2, resume_from=None)
    # A second run resumes on every rank from rank 0's checkpoint into a fresh, differently initialised model.
    seed_everything(200 + context.rank)
    resumed = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    train(resumed, max_steps=4, resume_from="latest")
    torch.save({"state": resumed.state_dict(), "indices": seen_indices}, f"{out_dir}/final_rank{context.rank}.pt")
    shutdown_distributed()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_gloo_processes_keep_identical_replicas(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), str(tmp_path),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, env=environment, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr

    initial = [torch.load(tmp_path / f"initial_rank{rank}.pt", weights_only=True) for rank in range(2)]
    final = [torch.load(tmp_path / f"final_rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert not torch.equal(initial[0]["0.weight"], initial[1]["0.weight"])  # the ranks started apart
    for name, tensor in final[0]["state"].items():
        assert torch.equal(tensor, final[1]["state"][name]), f"replicas differ in {name}"
        assert not torch.equal(tensor, initial[0][name]), f"{name} did not train"
    # Different data per rank: within the first epoch (4 batches of 4 per rank) the ranks split the 32 items.
    first_epoch = [{index for batch in final[rank]["indices"][:4] for index in batch} for rank in range(2)]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 16
    assert first_epoch[0] | first_epoch[1] == set(range(32))

    # Gradients were averaged over ranks: one process accumulating both ranks' batches gets the same weights.
    seed_everything(100)
    reference = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(32, 5, generator=generator)
    targets = features.sum(dim=1, keepdim=True)
    per_rank = [ResumableIndexBatches(32, batch_size=4, seed=5, rank=rank, world_size=2) for rank in range(2)]

    def both_ranks(start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank0, rank1 = per_rank[0](start_batch // 2), per_rank[1](start_batch // 2)
        while True:
            for indices in (next(rank0), next(rank0), next(rank1), next(rank1)):
                yield features[indices], targets[indices]

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (model(batch[0]) - batch[1]).pow(2).mean()

    config = TrainConfig(max_steps=4, lr=0.1, grad_accum_steps=4, progress=False, tensorboard=False)
    config = config.model_copy(update={"schedule": config.schedule.model_copy(update={"kind": "constant"})})
    Trainer(config, reference, torch.optim.SGD(reference.parameters(), lr=0.1), step).fit(both_ranks)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(final[0]["state"][name], tensor, rtol=1e-5, atol=1e-6)

    # Only rank 0 wrote: one checkpoint series, one TensorBoard event file per fit.
    run = tmp_path / "run"
    assert latest_checkpoint(run) == run / "checkpoints" / "step_00000004"
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per fit() call
    assert "step 4/4 | loss" in finished.stdout + finished.stderr


def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed()
    assert (context.rank, context.world_size, context.is_main, context.is_distributed) == (0, 1, True, False)
    assert distributed_context() == context


def test_world_size_without_launch_variables_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT not set; launch with"):
        init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"environment variable WORLD_SIZE: expected an integer \(got 'two'\)"):
        init_distributed()


def test_unwrap_model_returns_the_inner_module() -> None:
    class CompiledLike(nn.Module):  # torch.compile's OptimizedModule keeps the original as `_orig_mod`
        def __init__(self, original: nn.Module) -> None:
            super().__init__()
            self._orig_mod = original

    inner = nn.Linear(2, 2)
    assert unwrap_model(inner) is inner
    assert unwrap_model(CompiledLike(inner)) is inner


def test_run_as_forward_in_one_process_is_the_computation_itself() -> None:
    from seg_train import run_as_forward

    model = nn.Linear(3, 2)
    batch = torch.ones(4, 3)
    result = run_as_forward(model, lambda inner, items: inner.weight.sum() * items.sum(), batch)
    assert torch.equal(result, model.weight.sum() * 12)
    assert "forward" not in model.__dict__  # the class's forward is untouched
