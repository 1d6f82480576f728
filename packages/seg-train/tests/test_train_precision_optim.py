"""Precision resolution and the optimizer builder."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import seg_train.precision as precision_module
from seg_core import ConfigError, TrainConfig
from seg_train import SlowPrecisionWarning, autocast_dtype, build_optimizer, cpu_bf16_is_native, resolve_precision

CPU = torch.device("cpu")


def test_precision_on_cpu() -> None:
    assert resolve_precision("fp32", CPU) == "fp32"
    with warnings.catch_warnings():  # bf16 on a CPU without native bf16 also warns; tested below
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp16", CPU) == "fp16"
    assert resolve_precision("auto", CPU) == "fp32"  # CPU mixed precision is opt-in


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, **flags: bool) -> None:
    def probe(value: bool) -> Callable[[], bool]:
        return lambda: value

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_avx2_supported", "_is_avx512_supported"):
        monkeypatch.setattr(torch.cpu, name, probe(flags.get(name, False)), raising=False)


def test_bf16_on_an_x86_cpu_without_native_bf16_warns_and_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, _is_avx2_supported=True)
    assert cpu_bf16_is_native() is False
    with pytest.warns(SlowPrecisionWarning, match=r"'bf16' on this CPU is emulated .* set precision to 'fp32'"):
        assert resolve_precision("bf16", CPU) == "bf16"  # honoured: the recipe's numerics are not changed silently


@pytest.mark.parametrize("native", ["_is_avx512_bf16_supported", "_is_amx_tile_supported"])
def test_bf16_on_a_cpu_with_native_bf16_is_silent(monkeypatch: pytest.MonkeyPatch, native: str) -> None:
    _fake_cpu(monkeypatch, _is_avx2_supported=True, _is_avx512_supported=True, **{native: True})
    assert cpu_bf16_is_native() is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) == "bf16"


def test_unknown_cpu_does_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch)  # no x86 flag: an ARM machine, say, where the probes tell nothing
    assert cpu_bf16_is_native() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) == "bf16"


def test_missing_or_failing_probes_tell_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("no cpuinfo")

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_avx512_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", broken, raising=False)
    assert precision_module.cpu_bf16_is_native() is None


def test_auto_and_fp32_never_warn_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, _is_avx2_supported=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", CPU) == "fp32"
        assert resolve_precision("fp32", CPU) == "fp32"


def test_unknown_precision_names_the_field_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"precision: unknown value 'fp8'; use one of fp32, bf16, fp16, auto"):
        resolve_precision("fp8", CPU)


def test_autocast_dtypes() -> None:
    assert autocast_dtype("fp32") is None
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is torch.float16


def test_build_optimizer_scales_group_lrs() -> None:
    config = TrainConfig(max_steps=1, lr=0.01, weight_decay=0.05)
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    optimizer = build_optimizer(
        config,
        [
            {"params": model[0].parameters(), "lr_multiplier": 0.1},
            {"params": model[1].parameters(), "weight_decay": 0.0},
        ],
    )
    first, second = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.AdamW)
    assert first["lr"] == pytest.approx(0.001)
    assert first["weight_decay"] == pytest.approx(0.05)
    assert second["lr"] == pytest.approx(0.01)
    assert second["weight_decay"] == 0.0


def test_build_optimizer_plain_parameters_and_class() -> None:
    config = TrainConfig(max_steps=1, lr=0.5)
    optimizer = build_optimizer(config, nn.Linear(2, 2).parameters(), optimizer_class=torch.optim.SGD, momentum=0.9)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_build_optimizer_errors() -> None:
    config = TrainConfig(max_steps=1)
    layer = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"params\[0\]: a param group needs a 'params' entry"):
        build_optimizer(config, [{"lr_multiplier": 2.0}])
    with pytest.raises(ConfigError, match=r"params\[0\].lr_multiplier: must be >= 0 \(got -1.0\)"):
        build_optimizer(config, [{"params": layer.parameters(), "lr_multiplier": -1}])
