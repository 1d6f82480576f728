"""The synthetic-CLIP recipe trains (the loss falls), exports an open_clip local-dir model that loads back with
the same weights, and feeds exactly reproducible batches."""

from __future__ import annotations

from pathlib import Path

import torch

from seg_core import ScheduleConfig, TrainConfig
from seg_eval.world import WorldConfig
from seg_models.clip import load_clip
from seg_trainers.clip import SyntheticClipRecipe, WorldPairBatches, build_synthetic_clip, train_synthetic_clip

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _recipe(steps: int) -> SyntheticClipRecipe:
    return SyntheticClipRecipe(
        world=WorldConfig(seed=11),
        model_name="seg-test-tiny-clip",
        model_cfg=TINY_CFG,
        batch_size=32,
        workers=0,
        train=TrainConfig(
            max_steps=steps,
            lr=2e-3,
            weight_decay=0.1,
            schedule=ScheduleConfig(kind="constant", warmup_steps=2),
            log_every=1,
            progress=False,
            tensorboard=False,
        ),
    )


def test_loss_falls_and_the_export_loads_back(tmp_path: Path) -> None:
    run = train_synthetic_clip(_recipe(steps=24), tmp_path / "run")
    losses = [record["loss"] for record in run.result.history]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1
    loaded = load_clip(f"local-dir:{run.model_dir}")
    assert loaded.embed_dim == 32
    trained = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "seg-test-tiny-clip" in trained
    tokens = loaded.tokenize(["a photo of a cow."])
    assert tokens.shape == (1, 32)
    with torch.no_grad():
        embedding = loaded.encode_text(["a photo of a cow."])
    assert torch.isfinite(embedding).all()


def test_batches_are_a_pure_function_of_their_index() -> None:
    recipe = _recipe(steps=2)
    clip = build_synthetic_clip(recipe)
    batches = WorldPairBatches(recipe.world, 4, clip.tokenizer, clip.normalization)
    first, again, other = batches[3], batches[3], batches[4]
    assert torch.equal(first["images"], again["images"])
    assert torch.equal(first["tokens"], again["tokens"])
    assert not torch.equal(first["images"], other["images"])
    assert first["images"].shape == (4, 3, 64, 64)
    assert abs(float(first["images"].mean())) < 3.0  # normalised, not raw 0-255 pixels
