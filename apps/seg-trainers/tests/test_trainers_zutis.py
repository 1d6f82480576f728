"""The ZUTIS recipe's plumbing with a tiny random CLIP (the end-to-end run with the bundled CLIP lives in tests/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seg_core import BackgroundClass, ConceptSet, ConfigError, TrainConfig
from seg_coseg.copy_paste import CopyPasteConfig
from seg_models.clip import load_clip, register_model_config
from seg_models.zutis import ZUTIS, ZUTISConfig, load_zutis, read_zutis_info
from seg_trainers.reco import WorldImages
from seg_trainers.zutis import (
    CopyPasteBatches,
    PseudoMasks,
    SaliencySettings,
    ZUTISRecipe,
    text_embeddings,
    train_zutis,
    zutis_step,
)

TINY_DECODER = ZUTISConfig(
    num_queries=4, decoder_layers=2, decoder_heads=2, decoder_dim=16, decoder_ffn=32, ffn_hidden=16
)


def _pseudo(num: int = 3, size: int = 16) -> PseudoMasks:
    """Two categories of ``num`` images: a red square on grey (1) and a blue disc-ish square on grey (2)."""
    images, masks = {}, {}
    for category, channel in ((1, 0), (2, 2)):
        pictures = torch.full((num, 3, size, size), 128, dtype=torch.uint8)
        mask = torch.zeros(num, size, size, dtype=torch.bool)
        for i in range(num):
            top = 2 + i
            mask[i, top : top + 6, 3 : 3 + 6] = True
            pictures[i, channel][mask[i]] = 250
        images[category], masks[category] = pictures, mask
    return PseudoMasks(names=("cow", "car"), images=images, masks=masks, iou={})


def test_copy_paste_batches_are_deterministic_and_well_formed() -> None:
    config = CopyPasteConfig(crop_size=16, max_sources=3, hue=0.0, saturation=0.0, grayscale_prob=0.0)
    batches = CopyPasteBatches(
        _pseudo(), config, batch_size=4, num_batches=5, seed=7, normalization=((0.5,) * 3, (0.25,) * 3)
    )
    first, again, other = batches[2], batches[2], batches[3]
    assert first["images"].shape == (4, 3, 16, 16)
    assert first["semantic"].shape == (4, 16, 16)
    assert first["instances"].shape == (4, 3, 16, 16)
    assert first["valid"].shape == (4, 3)
    torch.testing.assert_close(first["images"], again["images"])
    assert not torch.equal(first["images"], other["images"])
    # Labels: background 0, the two categories, the padding label; every valid instance lies on its category.
    assert set(first["semantic"].unique().tolist()) <= {0, 1, 2, 255}
    for row in range(4):
        for slot in range(3):
            mask = first["instances"][row, slot]
            assert bool(first["valid"][row, slot]) == bool(mask.any())
            if mask.any():
                assert first["semantic"][row][mask].unique().numel() == 1
                assert int(first["semantic"][row][mask][0]) in {1, 2}


def test_zutis_step_learns_a_fixed_batch() -> None:
    """The semantic CE and the set criterion both fall when the step is repeated on one batch."""
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    model = ZUTIS(clip.visual, TINY_DECODER.model_copy(update={"logit_scale": 10.0}))
    config = CopyPasteConfig(crop_size=32, max_sources=2, hue=0.0, saturation=0.0, grayscale_prob=0.0)
    norm = clip.normalization
    batch = CopyPasteBatches(
        _pseudo(size=32), config, batch_size=4, num_batches=1, seed=0, normalization=(norm.mean, norm.std)
    )[0]
    step = zutis_step(text_embeddings(clip, ("cow", "car")), logit_scale=10.0, mask_loss_weight=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        output = step(model, batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append({"ce": float(output.metrics["ce"]), "mask": float(output.metrics["mask"])})
    assert history[-1]["ce"] < 0.7 * history[0]["ce"]
    assert history[-1]["mask"] < 0.7 * history[0]["mask"]


def test_train_zutis_end_to_end_with_a_random_clip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    recipe = ZUTISRecipe(
        collection_size=40,
        k=4,
        concepts=("cow", "car"),
        templates=("a photo of a {}.",),
        saliency=SaliencySettings(features="colour"),
        copy_paste=CopyPasteConfig(crop_size=32, max_sources=3, hue=0.0, saturation=0.0, grayscale_prob=0.0),
        model=TINY_DECODER,
        batch_size=2,
        train=TrainConfig(max_steps=3, lr=1e-3, log_every=1, progress=False, tensorboard=False, checkpoint_every=2),
        embed_batch_size=16,
    )
    run = train_zutis(recipe, clip, tmp_path, clip_source="random")
    saliency = json.loads((tmp_path / "saliency.json").read_text())
    assert set(saliency) == {"cow", "car", "<mean>"}
    assert 0.0 <= saliency["<mean>"]["concept"] <= 1.0
    info = read_zutis_info(run.model_dir)
    assert info["label_names"] == ["background", "cow", "car"]
    assert json.loads((run.model_dir / "training.json").read_text())["steps"] == 3
    assert [r["step"] for r in run.result.history] == [1, 2, 3]

    segmenter = load_zutis(run.model_dir, clip)
    image = WorldImages(recipe.world, "val", 1).pixels(0)[None]
    output = segmenter.segment(image, ConceptSet(names=("cow", "car"), background=BackgroundClass()))
    assert output.logits.shape == (1, 3, 64, 64)
    assert output.instances is not None
    assert len(output.instances) == 1
    instances = output.instances[0]
    assert instances.masks.shape[1:] == (64, 64)
    assert bool(((instances.labels >= 1) & (instances.labels <= 2)).all())

    # A re-run reuses the pseudo-masks; one with other concepts is refused rather than mixing them.
    with pytest.raises(ConfigError, match="concepts"):
        train_zutis(recipe.model_copy(update={"concepts": ("cow",)}), clip, tmp_path, clip_source="random")


def test_recipe_refuses_bad_concepts() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        ZUTISRecipe(concepts=("cow", "unicorn")).concept_names()
    with pytest.raises(ConfigError, match="empty"):
        ZUTISRecipe(concepts=()).concept_names()
    with pytest.raises(ConfigError, match="background"):
        ZUTISRecipe(concepts=("background", "cow")).concept_names()
    with pytest.raises(ConfigError):
        ZUTISRecipe.parse({"method": "zutis", "stepz": 3})
