"""Gathering embeddings across processes, so a contrastive loss sees the global batch as its negatives pool.

Under ``torchrun`` each process embeds its share of the global batch. CLIP, GroupViT (``dist_collect``) and their
descendants gather every process's embeddings, compute the loss over the whole global batch on every process, and
let DDP average the gradients. For that average to equal the single-process gradient of the global batch, the
gather must carry gradients back to the process that produced each slice: the backward of an all-gather is the sum
of the incoming gradients over processes, restricted to the local slice. ``torch.distributed.nn.functional``'s
``all_gather`` implements exactly that; :func:`gather_batch` wraps it, checks the shapes (every process must hold
the same batch size, as a sampler that drops the last incomplete batch gives) and is the identity in a single
process, so recipes call it unconditionally.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather_batch", "process_count"]


def process_count() -> int:
    """The number of processes in the default group (1 when ``torch.distributed`` is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_batch(tensor: Tensor, *, with_grad: bool = True) -> Tensor:
    """Concatenate ``tensor`` (``[B, ...]``) from every process, in rank order: ``[world_size * B, ...]``.

    Args:
        tensor: This process's part of the batch; every process must pass the same shape.
        with_grad: Carry gradients back to every process's slice (what a loss over the global batch needs); false
            gathers detached copies except for the local slice, which keeps its graph.

    Returns:
        The global batch; ``tensor`` itself in a single process.

    Raises:
        ValueError: The processes hold batches of different shapes (the message gives every process's shape).
    """
    world = process_count()
    if world == 1:
        return tensor
    shape = torch.tensor(list(tensor.shape), dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(other, shape) for other in shapes):
        raise ValueError(
            "gather_batch: every process must hold a batch of the same shape, got "
            + ", ".join(f"rank {rank}: {tuple(other.tolist())}" for rank, other in enumerate(shapes))
            + "; drop the last incomplete batch (ResumableIndexBatches does) or pad it"
        )
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)  # type: ignore[no-untyped-call]
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)
