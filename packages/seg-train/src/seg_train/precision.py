"""Mixed precision: resolve ``TrainConfig.precision`` for a device, and the autocast dtype it means."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from seg_core import ConfigError

__all__ = ["ResolvedPrecision", "SlowPrecisionWarning", "autocast_dtype", "cpu_bf16_is_native", "resolve_precision"]

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]

_VALID = ("fp32", "bf16", "fp16", "auto")


def _cuda_supports_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


class SlowPrecisionWarning(RuntimeWarning):
    """The precision asked for runs, but much slower than fp32 on this hardware."""


def _cpu_probe(name: str) -> bool | None:
    probe = getattr(torch.cpu, name, None)  # private torch.cpu probes; absent in some builds
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:  # a probe that cannot run tells us nothing
        return None


def cpu_bf16_is_native() -> bool | None:
    """Whether this CPU computes bf16 matrix products in hardware (x86 AVX512-BF16 or AMX).

    ``False`` on an x86 CPU without either (AVX2 machines, most laptops): there CPU bf16 autocast is emulated and was
    measured 13x slower than fp32 for a training step of the reference synthetic CLIP (docs/benchmarks.md).
    ``None`` when it cannot be told (not x86, or torch lacks the probes).
    """
    if _cpu_probe("_is_avx512_bf16_supported") or _cpu_probe("_is_amx_tile_supported"):
        return True
    if _cpu_probe("_is_avx2_supported") or _cpu_probe("_is_avx512_supported"):
        return False
    return None


def resolve_precision(precision: str, device: torch.device) -> ResolvedPrecision:
    """Turn the configured precision into the one used on ``device``.

    ``auto``: bf16 on a CUDA device that supports it natively, fp16 (with a GradScaler) on an older GPU, and
    fp32 on CPU and other devices, where mixed precision rarely pays off (ask for ``bf16`` explicitly to get
    CPU autocast). ``fp16`` on CPU is accepted (torch has CPU fp16 autocast and a CPU GradScaler) but is slow.
    ``bf16`` on an x86 CPU without native bf16 (:func:`cpu_bf16_is_native`) is honoured with a
    :class:`SlowPrecisionWarning`: it is emulated there, about an order of magnitude slower than fp32.

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
        if device.type == "cpu" and cpu_bf16_is_native() is False:
            warnings.warn(
                "precision: 'bf16' on this CPU is emulated (no AVX512-BF16 or AMX) and runs about 10x slower than "
                "fp32; set precision to 'fp32' (or 'auto') to train at full speed, at fp32 numerics",
                SlowPrecisionWarning,
                stacklevel=2,
            )
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
