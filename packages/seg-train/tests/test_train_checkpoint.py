"""Atomic checkpoints: layout, latest pointer, pruning, crash safety, tied weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import seg_train.checkpoint as checkpoint_module
from seg_train import latest_checkpoint, list_checkpoints, load_model_weights, load_training_state, save_checkpoint

CPU = torch.device("cpu")


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def _state(step: int) -> dict[str, Any]:
    return {"step": step, "tensor": torch.arange(3), "nested": {"values": [1.0, 2.0], "name": "x"}}


def test_layout_latest_pointer_and_pruning(tmp_path: Path) -> None:
    model = _model(0)
    for step in (10, 20, 30, 40):
        written = save_checkpoint(tmp_path, step, model, _state(step), keep=2)
    root = tmp_path / "checkpoints"
    assert written == root / "step_00000040"
    assert sorted(path.name for path in root.iterdir()) == ["latest", "step_00000030", "step_00000040"]
    assert (root / "latest").read_text().strip() == "step_00000040"
    assert sorted(path.name for path in written.iterdir()) == ["model.safetensors", "training_state.pt"]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert latest_checkpoint(tmp_path) == written
    state = load_training_state(written)
    assert state["step"] == 40
    assert torch.equal(state["tensor"], torch.arange(3))
    assert state["nested"] == {"values": [1.0, 2.0], "name": "x"}


def test_weights_round_trip_including_buffers(tmp_path: Path) -> None:
    source = _model(0)
    source[1].running_mean.fill_(3.0)
    path = save_checkpoint(tmp_path, 1, source, _state(1), keep=1)
    target = _model(1)
    assert not torch.equal(target[0].weight, source[0].weight)
    load_model_weights(path, target, device=CPU)
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


class _TiedLanguageModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(5, 3)
        self.output = nn.Linear(3, 5, bias=False)
        self.output.weight = self.embedding.weight  # tied: one tensor under two names


def test_tied_weights_survive_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _TiedLanguageModel()
    path = save_checkpoint(tmp_path, 1, source, _state(1), keep=1)
    torch.manual_seed(1)
    target = _TiedLanguageModel()
    load_model_weights(path, target, device=CPU)
    assert torch.equal(target.embedding.weight, source.embedding.weight)
    assert target.output.weight is target.embedding.weight


def test_mismatched_model_is_reported_with_the_path(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, _model(0), _state(1), keep=1)
    with pytest.raises(RuntimeError, match=r"does not match the model"):
        load_model_weights(path, nn.Linear(3, 4), device=CPU)


def test_failure_while_writing_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(0)
    first = save_checkpoint(tmp_path, 1, model, _state(1), keep=2)

    def failing_save(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, model, _state(2), keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(path.name for path in root.iterdir()) == ["latest", "step_00000001"]  # no temp dir left
    assert latest_checkpoint(tmp_path) == first
    assert load_training_state(first)["step"] == 1


def test_stale_temp_dirs_are_cleaned_and_pointer_falls_back(tmp_path: Path) -> None:
    model = _model(0)
    save_checkpoint(tmp_path, 1, model, _state(1), keep=3)
    root = tmp_path / "checkpoints"
    stale = root / ".tmp-step_00000002-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    half = root / "step_00000005"  # a directory without the state file is never "latest"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == root / "step_00000001"
    second = save_checkpoint(tmp_path, 2, model, _state(2), keep=3)
    assert not stale.exists()
    (root / "latest").unlink()
    assert latest_checkpoint(tmp_path) == second
    (root / "latest").write_text("step_00000009\n")  # points nowhere
    assert latest_checkpoint(tmp_path) == second
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_saving_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 3, _model(0), _state(3), keep=2)
    replacement = _model(1)
    path = save_checkpoint(tmp_path, 3, replacement, {"step": 3, "again": True}, keep=2)
    assert load_training_state(path)["again"] is True
    restored = _model(2)
    load_model_weights(path, restored, device=CPU)
    assert torch.equal(restored[0].weight, replacement[0].weight)


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"keep: must be >= 1 \(got 0\)"):
        save_checkpoint(tmp_path, 1, _model(0), _state(1), keep=0)
