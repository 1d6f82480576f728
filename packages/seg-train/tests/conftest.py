"""Shared fixtures of the seg-train tests: a tiny regression problem with a 2-layer MLP."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from seg_train import ResumableIndexBatches, seed_everything

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TinyProblem:
    """32 samples of 6 features with 2 regression targets, and everything needed to train an MLP on them."""

    features: torch.Tensor
    targets: torch.Tensor

    def make_model(self, seed: int = 0, dropout: float = 0.0) -> nn.Module:
        seed_everything(seed)
        return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(dropout), nn.Linear(12, 2))

    def batches(self, batch_size: int = 4, seed: int = 0) -> Callable[[int], Iterator[Batch]]:
        index_batches = ResumableIndexBatches(len(self.features), batch_size=batch_size, seed=seed)

        def factory(start_batch: int) -> Iterator[Batch]:
            for indices in index_batches(start_batch):
                yield self.features[indices], self.targets[indices]

        return factory

    @staticmethod
    def mse_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return (model(inputs).float() - targets).pow(2).mean()

    @staticmethod
    def noisy_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """Draws from python's, numpy's and torch's global RNGs, so exact resume needs all three restored."""
        inputs, targets = batch
        jitter = 0.01 * random.random() + 0.01 * float(np.random.rand())
        noisy_inputs = inputs + jitter + 0.01 * torch.randn_like(inputs)
        loss = (model(noisy_inputs) - targets).pow(2).mean()
        return {"loss": loss, "jitter": jitter}


@pytest.fixture
def tiny_problem() -> TinyProblem:
    generator = torch.Generator().manual_seed(1234)
    features = torch.randn(32, 6, generator=generator)
    weights = torch.randn(6, 2, generator=generator)
    targets = features @ weights + 0.05 * torch.randn(32, 2, generator=generator)
    return TinyProblem(features=features, targets=targets)


def state_dicts_equal(first: nn.Module, second: nn.Module) -> bool:
    """Exact (bitwise) equality of two models' state dicts."""
    first_state, second_state = first.state_dict(), second.state_dict()
    return first_state.keys() == second_state.keys() and all(
        torch.equal(first_state[name], second_state[name]) for name in first_state
    )


@pytest.fixture
def exactly_equal() -> Callable[[nn.Module, nn.Module], bool]:
    return state_dicts_equal
