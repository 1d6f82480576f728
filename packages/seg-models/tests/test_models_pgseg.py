"""PGSeg on the tiny CPU config: the I-NPR hook adds exactly the reconstruction, the training forward (EM per stage,
momentum prototypes in training mode only), segmenting through GroupViTSegmenter, save/load and wrong-folder errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seg_core import ConceptSet, ConfigError
from seg_models.groupvit import GroupViT, GroupViTSegmenter, load_groupvit, save_groupvit
from seg_models.pgseg import (
    PGSEG_TINY_CONFIG,
    PGSeg,
    PGSegConfig,
    load_pgseg,
    save_pgseg,
)


def _model(**updates: object) -> PGSeg:
    torch.manual_seed(0)
    return PGSeg(PGSEG_TINY_CONFIG.model_copy(update=updates)).eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _tokens(model: PGSeg, batch: int = 2) -> torch.Tensor:
    return model.tokenize([f"a photo of a cow number {i}" for i in range(batch)])


def test_the_hook_adds_exactly_the_projected_reconstruction() -> None:
    model = _model()
    plain = GroupViT(model.config).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    images = _images()
    with torch.no_grad():
        for head in model.reconstructions:
            head.fc2.weight.zero_()  # type: ignore[union-attr]
            head.fc2.bias.zero_()  # type: ignore[union-attr]
        torch.testing.assert_close(model.encode_image(images), plain.encode_image(images))
        head = model.reconstructions[0]
        head.fc2.weight.normal_(std=1.0)  # type: ignore[union-attr]  (a constant shift would vanish in LayerNorm)
        assert not torch.allclose(model.encode_image(images), plain.encode_image(images))


def test_without_image_npr_pgseg_is_groupvit() -> None:
    model = _model(image_npr=False, text_npr=False)
    assert len(model.reconstructions) == 0
    plain = GroupViT(model.config).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), plain.encode_image(images))


def test_training_forward_returns_one_em_per_stage_and_updates_prototypes_only_in_training() -> None:
    model = _model()
    images = _images()
    tokens = _tokens(model)
    before = [model.image_prototype_buffer(i).clone() for i in range(2)]
    text_before = model.text_prototype_buffer(0).clone()
    out = model.training_forward(images, tokens)
    groups = PGSEG_TINY_CONFIG.groupvit.vision.num_output_groups
    assert [em.prototypes.shape for em in out.image_em] == [torch.Size([2, g, 64]) for g in groups]
    assert [c.shape for c in out.centres()] == [torch.Size([2, g, 64]) for g in groups]
    assert [em.prototypes.shape for em in out.text_em] == [torch.Size([2, g, 1]) for g in groups]
    assert out.text_em[0].responsibilities.shape == (2, 64, groups[0])  # 64 text channels as scalars
    for i in range(2):
        torch.testing.assert_close(model.image_prototype_buffer(i), before[i])  # eval: no update
    model.train()
    out = model.training_forward(images, tokens)
    for i in range(2):
        expected = F.normalize(0.9 * before[i] + 0.1 * out.image_em[i].prototypes.mean(0), dim=-1)
        torch.testing.assert_close(model.image_prototype_buffer(i), expected)
    expected_text = 0.9 * text_before + 0.1 * out.text_em[0].prototypes.mean(0)
    torch.testing.assert_close(model.text_prototype_buffer(0), expected_text)
    assert out.image_embeddings.requires_grad
    assert not out.image_em[0].prototypes.requires_grad


def test_config_checks_one_prototype_count_per_stage() -> None:
    with pytest.raises(ValueError, match="num_prototypes"):
        PGSegConfig(groupvit=PGSEG_TINY_CONFIG.groupvit, num_prototypes=(4,))
    config = PGSEG_TINY_CONFIG.model_copy(update={"num_prototypes": (3, 2)})
    model = PGSeg(config)
    assert model.image_prototype_buffer(0).shape == (3, 64)


def test_groupvit_segmenter_segments_with_pgseg() -> None:
    model = _model()
    concepts = ConceptSet(names=["cow", "sky", "grass"], templates="single")
    output = GroupViTSegmenter(model).segment(torch.rand(1, 3, 64, 64), concepts)
    assert output.logits.shape == (1, 3, 64, 64)
    assert torch.isfinite(output.logits).all()


@pytest.mark.parametrize("fp16", [False, True])
def test_save_load_round_trip(tmp_path: Path, fp16: bool) -> None:
    model = _model()
    model.train()
    model.training_forward(_images(), _tokens(model))  # move the prototypes and BatchNorm statistics
    model.eval()
    folder = save_pgseg(model, tmp_path / "pgseg", fp16=fp16)
    loaded = load_pgseg(folder)
    assert loaded.pg_config == model.pg_config
    torch.testing.assert_close(
        loaded.image_prototype_buffer(1), model.image_prototype_buffer(1), atol=1e-3 if fp16 else 0, rtol=0
    )
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(images), model.encode_image(images), atol=5e-2 if fp16 else 1e-6, rtol=0
        )


def test_loaders_refuse_each_others_folders(tmp_path: Path) -> None:
    model = _model()
    pgseg_folder = save_pgseg(model, tmp_path / "pgseg")
    groupvit_folder = save_groupvit(GroupViT(model.config), tmp_path / "groupvit")
    with pytest.raises(ConfigError, match="PGSeg"):
        load_groupvit(pgseg_folder)
    with pytest.raises(ConfigError, match="GroupViT"):
        load_pgseg(groupvit_folder)
    with pytest.raises(FileNotFoundError):
        load_pgseg(tmp_path / "missing")
