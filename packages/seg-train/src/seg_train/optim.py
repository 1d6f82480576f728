"""Build an optimizer from ``TrainConfig.lr``/``weight_decay`` with per-group learning-rate multipliers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from seg_core import ConfigError, TrainConfig

__all__ = ["build_optimizer"]


def build_optimizer(
    config: TrainConfig,
    params: Iterable[nn.Parameter] | Iterable[Mapping[str, Any]],
    *,
    optimizer_class: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """An optimizer whose groups start at ``config.lr * lr_multiplier`` with ``config.weight_decay``.

    A backbone trained ten times slower than a fresh head::

        build_optimizer(config, [
            {"params": model.backbone.parameters(), "lr_multiplier": 0.1},
            {"params": model.head.parameters()},
        ])

    Args:
        config: Supplies ``lr`` and ``weight_decay``.
        params: Parameters, or param-group dicts with ``params`` and optionally ``lr_multiplier`` (default 1,
            kept in the group for reference) and ``weight_decay`` (overrides the config, e.g. 0 for norms).
        optimizer_class: Any ``torch.optim.Optimizer`` taking ``lr`` and ``weight_decay`` per group.
        **optimizer_kwargs: Further arguments of ``optimizer_class`` (``betas``, ``momentum``...).

    Raises:
        ConfigError: A group without ``params`` or with a negative ``lr_multiplier``.
    """
    items = list(params)
    if items and all(isinstance(item, Mapping) for item in items):
        groups: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            assert isinstance(item, Mapping)
            if "params" not in item:
                raise ConfigError(f"params[{index}]: a param group needs a 'params' entry (got keys {sorted(item)})")
            multiplier = float(item.get("lr_multiplier", 1.0))
            if multiplier < 0:
                raise ConfigError(f"params[{index}].lr_multiplier: must be >= 0 (got {multiplier})")
            group = dict(item)
            group["params"] = list(item["params"])
            group["lr_multiplier"] = multiplier
            group["lr"] = config.lr * multiplier
            group.setdefault("weight_decay", config.weight_decay)
            groups.append(group)
        return optimizer_class(groups, lr=config.lr, weight_decay=config.weight_decay, **optimizer_kwargs)
    if any(isinstance(item, Mapping) for item in items):
        raise ConfigError("params: mixes parameters and param-group dicts; pass one kind")
    return optimizer_class(items, lr=config.lr, weight_decay=config.weight_decay, **optimizer_kwargs)
