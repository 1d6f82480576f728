"""gather_batch under torchrun (2 CPU processes, gloo): InfoNCE over the gathered batch, with DDP averaging the
gradients, gives the single-process loss and gradients of the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from seg_losses import info_nce_loss
from seg_losses.distributed import gather_batch, process_count

GLOBAL_BATCH, DIM = 8, 5

SCRIPT = textwrap.dedent(
    """
    import gc
    import sys

    import torch
    import torch.distributed as dist
    from torch import nn

    from seg_losses import info_nce_loss
    from seg_losses.distributed import gather_batch, process_count


    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.image, self.text = nn.Linear(6, 5), nn.Linear(4, 5)
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, images, texts):
            return self.image(images), self.text(texts), self.scale


    out, gather_grad = sys.argv[1], sys.argv[2] == "grad"
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert process_count() == world == 2
    torch.manual_seed(0)  # the same model and global batch on every rank; each rank takes its half
    images_in, texts_in = torch.randn(8, 6), torch.randn(8, 4)
    model = Pair()
    ddp = nn.parallel.DistributedDataParallel(model)  # averages the gradients over the ranks in backward
    half = slice(4 * rank, 4 * rank + 4)
    images, texts, scale = ddp(images_in[half], texts_in[half])
    loss = info_nce_loss(
        gather_batch(images, with_grad=gather_grad), gather_batch(texts, with_grad=gather_grad), scale
    )
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, f"{out}/rank{rank}.pt")
    try:
        gather_batch(torch.zeros(3 + rank, 2))
    except ValueError as error:
        torch.save(str(error), f"{out}/error{rank}.pt")
    # Release DDP's reducer (it holds the process group) and let both ranks arrive before the group goes: a group
    # destroyed under a live DDP could abort at exit ("terminate called without an active exception").
    del ddp, images, texts, scale, loss
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image, self.text = nn.Linear(6, DIM), nn.Linear(4, DIM)
        self.scale = nn.Parameter(torch.tensor(2.0))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _single_process() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    images_in, texts_in = torch.randn(GLOBAL_BATCH, 6), torch.randn(GLOBAL_BATCH, 4)
    model = _Pair()
    loss = info_nce_loss(model.image(images_in), model.text(texts_in), model.scale)
    loss.backward()  # type: ignore[no-untyped-call]
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_single_process_gather_is_the_identity() -> None:
    tensor = torch.randn(3, 2, requires_grad=True)
    assert process_count() == 1
    assert gather_batch(tensor) is tensor


def _torchrun(tmp_path: Path, gather: str) -> None:
    script = tmp_path / "gather.py"
    script.write_text(SCRIPT)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), str(tmp_path), gather,
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, env=environment, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss_and_gradients(tmp_path: Path) -> None:
    _torchrun(tmp_path, "grad")
    loss, grads = _single_process()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], loss, rtol=1e-6, atol=1e-6)
        assert set(result["grads"]) == set(grads)
        for name, grad in grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=name)
        error = torch.load(tmp_path / f"error{rank}.pt", weights_only=True)
        assert "rank 0: (3, 2), rank 1: (4, 2)" in error


@pytest.mark.slow
def test_without_gradient_through_the_gather_the_gradients_are_wrong(tmp_path: Path) -> None:
    # The check above can fail: detaching the other ranks' slices (what a plain all_gather does) changes the
    # gradient of the shared model, so the equality above depends on the autograd-aware gather.
    _torchrun(tmp_path, "detached")
    loss, grads = _single_process()
    result = torch.load(tmp_path / "rank0.pt", weights_only=True)
    torch.testing.assert_close(result["loss"], loss, rtol=1e-6, atol=1e-6)  # the forward is the same
    assert not torch.allclose(result["grads"]["image.weight"], grads["image.weight"], rtol=1e-3, atol=1e-5)
