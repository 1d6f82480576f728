"""Dense CLIP features on the real ViT-B/16 and RN50 architectures (random weights) and on a tiny ViT."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from torch import nn

from seg_models.dense_clip import (
    dense_clip_features,
    feature_stride,
    global_clip_features,
    interpolate_positional_embedding,
    resnet_dense_features,
    vit_dense_features,
    vit_global_features,
)


def _build(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None, **kwargs)
    model.eval()
    return model


@pytest.fixture(scope="module")
def vit_b16() -> nn.Module:
    return _build("ViT-B-16")


@pytest.fixture(scope="module")
def rn50() -> nn.Module:
    model = _build("RN50")
    # open_clip zero-initialises every bn3 weight, which makes random residual branches vanish; perturb them so
    # the trunk is not the identity on its shortcut path.
    with torch.no_grad():
        for name, parameter in model.visual.named_parameters():
            if name.endswith("bn3.weight"):
                parameter.normal_(1.0, 0.1)
    return model


@pytest.fixture(scope="module")
def tiny_vit() -> nn.Module:
    return _build(
        "ViT-B-16",
        vision_cfg={"image_size": 32, "layers": 3, "width": 64, "head_width": 16, "patch_size": 8},
    )


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


@torch.no_grad()
def test_vit_b16_dense_features_at_a_non_square_size_leave_the_model_untouched(vit_b16: nn.Module) -> None:
    reference_images = torch.randn(1, 3, 224, 224)
    before = vit_b16.encode_image(reference_images)
    weights = _params(vit_b16.visual)
    images = torch.randn(1, 3, 224, 320)
    variants = ("maskclip", "value", "naive")
    features = {variant: vit_dense_features(vit_b16.visual, images, variant) for variant in variants}
    for variant_features in features.values():
        assert variant_features.shape == (1, 512, 14, 20)
        assert variant_features.dtype == torch.float32
        assert torch.isfinite(variant_features).all()
    assert not torch.allclose(features["maskclip"], features["value"])
    assert not torch.allclose(features["maskclip"], features["naive"])
    after = vit_b16.encode_image(reference_images)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert all(torch.equal(weights[name], tensor) for name, tensor in vit_b16.visual.state_dict().items())
    # The unmodified CLS path at the training size is open_clip's encode_image.
    torch.testing.assert_close(vit_global_features(vit_b16.visual, reference_images), before)
    assert vit_global_features(vit_b16.visual, images).shape == (1, 512)


def test_positional_embedding_at_the_training_grid_is_the_original(vit_b16: nn.Module) -> None:
    trained = vit_b16.visual.positional_embedding
    same = interpolate_positional_embedding(trained, (14, 14), (14, 14))
    torch.testing.assert_close(same, trained, rtol=0, atol=0)
    resized = interpolate_positional_embedding(trained, (14, 14), (28, 20))
    assert resized.shape == (1 + 28 * 20, 768)
    torch.testing.assert_close(resized[0], trained[0], rtol=0, atol=0)  # class token kept
    constant = torch.ones(1 + 14 * 14, 4)
    torch.testing.assert_close(interpolate_positional_embedding(constant, (14, 14), (9, 31)), torch.ones(1 + 279, 4))
    with pytest.raises(ValueError, match="rows"):
        interpolate_positional_embedding(trained, (13, 14), (14, 14))


@torch.no_grad()
def test_maskclip_path_equals_the_last_block_with_self_only_attention(tiny_vit: nn.Module) -> None:
    """Independent check: with attention restricted to each token itself, the block computes the value path."""
    visual = tiny_vit.visual
    images = torch.randn(2, 3, 32, 32)
    tokens = visual._embeds(images)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        tokens = block(tokens)
    length = tokens.shape[1]
    self_only = torch.full((length, length), float("-inf"))
    self_only.fill_diagonal_(0.0)
    expected = blocks[-1](tokens, attn_mask=self_only)
    expected = (visual.ln_post(expected[:, 1:]) @ visual.proj).transpose(1, 2).reshape(2, -1, 4, 4)
    torch.testing.assert_close(vit_dense_features(visual, images, "maskclip"), expected)


@torch.no_grad()
def test_naive_path_equals_open_clips_final_tokens(tiny_vit: nn.Module) -> None:
    visual = tiny_vit.visual
    images = torch.randn(2, 3, 32, 32)
    out = visual.forward_intermediates(images, indices=1, normalize_intermediates=True, intermediates_only=True)
    last = out["image_intermediates"][-1]  # [B, C, 4, 4] after ln_post
    expected = torch.einsum("bchw,cd->bdhw", last, visual.proj)
    torch.testing.assert_close(vit_dense_features(visual, images, "naive"), expected)


@torch.no_grad()
def test_sequence_first_blocks_give_the_same_features(tiny_vit: nn.Module) -> None:
    images = torch.randn(1, 3, 40, 24)
    expected = {variant: vit_dense_features(tiny_vit.visual, images, variant) for variant in ("maskclip", "naive")}
    global_expected = vit_global_features(tiny_vit.visual, images)
    visual = copy.deepcopy(tiny_vit.visual)
    visual.transformer.batch_first = False
    for block in visual.transformer.resblocks:
        block.attn.batch_first = False
    for variant, features in expected.items():
        torch.testing.assert_close(vit_dense_features(visual, images, variant), features)
    torch.testing.assert_close(vit_global_features(visual, images), global_expected)


@torch.no_grad()
def test_avg_pool_and_layer_scale_towers_are_supported() -> None:
    model = _build(
        "ViT-B-16",
        vision_cfg={
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "head_width": 16,
            "patch_size": 8,
            "pool_type": "avg",
            "final_ln_after_pool": True,
            "ls_init_value": 0.5,
            "no_ln_pre": True,
        },
    )
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(vit_global_features(model.visual, images), model.encode_image(images))
    assert vit_dense_features(model.visual, torch.randn(1, 3, 24, 40)).shape == (1, 512, 3, 5)


@torch.no_grad()
def test_custom_attention_blocks_follow_their_self_only_attention() -> None:
    model = _build(
        "ViT-B-16",
        vision_cfg={
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "head_width": 16,
            "patch_size": 8,
            "scale_heads": True,
            "scale_attn_inner": True,
            "scale_attn": True,
        },
    )
    visual = model.visual
    for block in visual.transformer.resblocks:
        block.attn.head_scale.data.uniform_(0.5, 1.5)
    images = torch.randn(1, 3, 32, 32)
    tokens = visual._embeds(images)
    tokens = visual.transformer.resblocks[0](tokens)
    length = tokens.shape[1]
    self_only = torch.full((length, length), float("-inf"))
    self_only.fill_diagonal_(0.0)
    expected = visual.transformer.resblocks[1](tokens, attn_mask=self_only)
    expected = (visual.ln_post(expected[:, 1:]) @ visual.proj).transpose(1, 2).reshape(1, -1, 4, 4)
    torch.testing.assert_close(vit_dense_features(visual, images), expected)


@torch.no_grad()
def test_rn50_dense_features_and_global_embedding(rn50: nn.Module) -> None:
    reference_images = torch.randn(1, 3, 224, 224)
    before = rn50.encode_image(reference_images)
    images = torch.randn(2, 3, 224, 320)
    features = dense_clip_features(rn50.visual, images)
    assert features.shape == (2, 1024, 7, 10)
    assert features.dtype == torch.float32
    torch.testing.assert_close(rn50.encode_image(reference_images), before, rtol=0, atol=0)
    torch.testing.assert_close(global_clip_features(rn50.visual, reference_images), before)
    assert global_clip_features(rn50.visual, images).shape == (2, 1024)
    assert feature_stride(rn50.visual) == (32, 32)
    with pytest.raises(ValueError, match="ViTs only"):
        dense_clip_features(rn50.visual, images, "naive")


@torch.no_grad()
def test_rn50_value_path_is_the_attention_pool_without_mixing(rn50: nn.Module) -> None:
    """With one layer4 cell and no positional embedding, the attention pool sees two equal tokens (the cell and
    their mean), so whatever its attention weights it outputs c_proj(v_proj(cell)): the dense path's value."""
    visual = copy.deepcopy(rn50.visual)
    visual.attnpool.positional_embedding.zero_()
    images = torch.randn(2, 3, 32, 32)
    dense = resnet_dense_features(visual, images)
    assert dense.shape == (2, 1024, 1, 1)
    torch.testing.assert_close(dense.flatten(1), global_clip_features(visual, images))


def test_unsupported_towers_and_inputs_raise_clear_errors(tiny_vit: nn.Module) -> None:
    with pytest.raises(TypeError, match="VisionTransformer and ModifiedResNet"):
        dense_clip_features(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        vit_dense_features(tiny_vit.visual, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="variant"):
        vit_dense_features(tiny_vit.visual, torch.randn(1, 3, 32, 32), "keys")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="smaller than one"):
        vit_dense_features(tiny_vit.visual, torch.randn(1, 3, 4, 32))
