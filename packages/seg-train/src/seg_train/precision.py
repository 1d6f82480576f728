"""Mixed precision: resolve ``TrainConfig.precision`` for a device, and the autocast dtype it means."""

from __future__ import annotations

from typing import Literal

import torch

from seg_core import ConfigError

__all__ = ["ResolvedPrecision", "autocast_dtype", "resolve_precision"]

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]

_VALID = ("fp32", "bf16", "fp16", "auto")


def _cuda_supports_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device: torch.device) -> ResolvedPrecision:
    """Turn the configured precision into the one used on ``device``.

    ``auto``: bf16 on a CUDA device that supports it natively, fp16 (with a GradScaler) on an older GPU, and
    fp32 on CPU and other devices, where mixed precision rarely pays off (ask for ``bf16`` explicitly to get
    CPU autocast). ``fp16`` on CPU is accepted (torch has CPU fp16 autocast and a CPU GradScaler) but is slow.

    Args:
        precision: ``TrainConfig.precision``: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        device: The training device.

    Raises:
        ConfigError: Unknown value, or ``bf16`` on a GPU without bf16 support.
    """
    if precision not in _VALID:
        raise ConfigError(f"precision: unknown value {precision!r}; use one of {', '.join(_VALID)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if _cuda_supports_bf16() else "fp16"
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and not _cuda_supports_bf16():
        raise ConfigError(f"precision: 'bf16' is not supported on {device}; use 'fp16' or 'auto'")
    if precision == "bf16":
        return "bf16"
    if precision == "fp16":
        return "fp16"
    return "fp32"


def autocast_dtype(precision: ResolvedPrecision) -> torch.dtype | None:
    """The autocast dtype of a resolved precision: ``None`` for fp32 (autocast off)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    return None
