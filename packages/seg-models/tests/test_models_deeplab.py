"""DeepLabv3+ on timm backbones: shapes, output stride, separable convs, configs, gradients, a tiny overfit."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seg_core import ConfigError
from seg_models.deeplab import (
    DEEPLAB_PRESETS,
    DeepLabConfig,
    DeepLabV3Plus,
    SeparableConv2d,
    build_deeplab,
    deeplab_preset,
    parameter_groups,
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny convs on a busy shared 2-core machine: two intra-op threads spin against each other (the overfit test
    takes 16 s instead of 0.7 s); one thread for these tests, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A ResNet-18 shape with one basic block per stage and 8/8/16/16 channels: ~25k backbone parameters, builds in ms.
TINY_BACKBONE: dict[str, Any] = {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]}


def tiny_config(**overrides: Any) -> DeepLabConfig:
    fields: dict[str, Any] = {
        "backbone": "resnet18",
        "num_classes": 3,
        "output_stride": 8,
        "aspp_channels": 16,
        "low_level_channels": 8,
        "decoder_channels": 16,
        "backbone_kwargs": TINY_BACKBONE,
    }
    fields.update(overrides)
    return DeepLabConfig.parse(fields)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def head_params(
    *, c_high: int, c_low: int, aspp: int, rates: int, low: int, dec: int, convs: int, k: int, separable: bool
) -> int:
    """Parameter count of ASPP + decoder written out from the architecture (BN: weight and bias)."""

    def conv3x3(c_in: int, c_out: int) -> int:
        return 9 * c_in + c_in * c_out if separable else 9 * c_in * c_out

    total = c_high * aspp + 2 * aspp  # 1x1 branch
    total += rates * (conv3x3(c_high, aspp) + 2 * aspp)  # atrous branches
    total += c_high * aspp + 2 * aspp  # image pooling
    total += (2 + rates) * aspp * aspp + 2 * aspp  # projection
    total += c_low * low + 2 * low  # low-level projection
    width = aspp + low
    for _ in range(convs):
        total += conv3x3(width, dec) + 2 * dec
        width = dec
    return total + dec * k + k  # classifier with bias


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (50, 70), (17, 29)])
def test_logits_match_any_input_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_deeplab(tiny_config()).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, *size))
    assert logits.shape == (2, 3, *size)
    assert torch.isfinite(logits).all()


def test_output_stride_sets_feature_sizes_and_rates() -> None:
    images = torch.rand(1, 3, 50, 64)
    sizes = {}
    for stride in (8, 16):
        model = build_deeplab(tiny_config(output_stride=stride)).eval()
        with torch.no_grad():
            low, high = model.forward_features(images)
        sizes[stride] = (tuple(low.shape[-2:]), tuple(high.shape[-2:]))
        assert low.shape[1] == 8
        assert high.shape[1] == 16
    # ResNet arithmetic for 50 x 64: stem conv s2 -> 25 x 32, max-pool s2 -> 13 x 16 (stride 4), then each stride-2
    # stage halves rounding up: 7 x 8 (stride 8), 4 x 4 (stride 16).
    assert sizes[8] == ((13, 16), (7, 8))
    assert sizes[16] == ((13, 16), (4, 4))
    assert tiny_config(output_stride=16).resolved_aspp_rates == (6, 12, 18)
    assert tiny_config(output_stride=8).resolved_aspp_rates == (12, 24, 36)
    model = build_deeplab(tiny_config(output_stride=8))
    dilations = [branch[0].dilation for branch in list(model.aspp.branches)[1:]]
    assert dilations == [(12, 12), (24, 24), (36, 36)]


def test_separable_option_changes_conv_type_and_parameter_count() -> None:
    dense = build_deeplab(tiny_config(separable=False))
    separable = build_deeplab(tiny_config(separable=True))
    atrous = list(separable.aspp.branches)[1][0]
    assert isinstance(atrous, SeparableConv2d)
    assert atrous.depthwise.groups == 16
    assert atrous.depthwise.dilation == (12, 12)
    assert atrous.pointwise.kernel_size == (1, 1)
    assert isinstance(list(dense.aspp.branches)[1][0], nn.Conv2d)
    assert all(isinstance(block[0], SeparableConv2d) for block in separable.decoder.convs)
    assert not any(isinstance(module, SeparableConv2d) for module in dense.modules())
    shape = {"c_high": 16, "c_low": 8, "aspp": 16, "rates": 3, "low": 8, "dec": 16, "convs": 2, "k": 3}
    for model, is_separable in ((dense, False), (separable, True)):
        head = n_params(model.aspp) + n_params(model.decoder)
        assert head == head_params(**shape, separable=is_separable)
    # Backbone untouched by the option.
    assert n_params(dense.backbone) == n_params(separable.backbone)


def test_decoder_convs_count() -> None:
    model = build_deeplab(tiny_config(decoder_convs=1, aspp_rates=[2, 4]))
    assert len(model.decoder.convs) == 1
    assert len(model.aspp.branches) == 3  # 1x1 + two atrous
    shape = {"c_high": 16, "c_low": 8, "aspp": 16, "rates": 2, "low": 8, "dec": 16, "convs": 1, "k": 3}
    assert n_params(model.aspp) + n_params(model.decoder) == head_params(**shape, separable=False)


def test_config_round_trip_rebuilds_identical_model() -> None:
    config = tiny_config(separable=True, bn_momentum=0.01, aspp_rates=[1, 2, 3])
    rebuilt_config = DeepLabConfig.from_json(config.to_json())
    assert rebuilt_config == config
    assert DeepLabConfig.from_yaml(config.to_yaml()) == config
    torch.manual_seed(0)
    original = build_deeplab(config)
    torch.manual_seed(1)
    rebuilt = build_deeplab(rebuilt_config)
    expected = {key: tuple(value.shape) for key, value in original.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()} == expected
    rebuilt.load_state_dict(original.state_dict())  # strict
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(original.eval()(images), rebuilt.eval()(images))


def test_unknown_backbone_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"backbone: .*unknown timm model 'resnet1088'.*did you mean"):
        DeepLabConfig.parse({"backbone": "resnet1088", "num_classes": 2})
    # A weight tag is part of a valid name.
    assert DeepLabConfig.parse({"backbone": "resnet101.tv_in1k", "num_classes": 2}).backbone == "resnet101.tv_in1k"


def test_bad_backbone_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="output_stride: timm model 'vit_tiny_patch16_224' does not take"):
        build_deeplab(DeepLabConfig(backbone="vit_tiny_patch16_224", num_classes=2))
    with pytest.raises(ConfigError, match="output_stride: timm model 'vgg11' failed its own check"):
        build_deeplab(DeepLabConfig(backbone="vgg11", num_classes=2))
    with pytest.raises(ConfigError, match=r"backbone_kwargs: .*output_stride set by DeepLabConfig itself"):
        tiny_config(backbone_kwargs={"output_stride": 32})
    with pytest.raises(ConfigError, match="backbone_kwargs: timm model 'resnet18' rejected them"):
        build_deeplab(tiny_config(backbone_kwargs={"no_such_option": 1}))
    with pytest.raises(ConfigError, match="output_stride"):
        DeepLabConfig.parse({"backbone": "resnet18", "num_classes": 2, "output_stride": 32})
    with pytest.raises(ConfigError, match="num_classes"):
        DeepLabConfig.parse({"backbone": "resnet18", "num_classes": 0})


def test_forward_rejects_bad_input() -> None:
    model = build_deeplab(tiny_config())
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="batch of at least 2"):
        model.train()(torch.rand(1, 3, 32, 32))
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_bn_momentum_backbone_and_head() -> None:
    model = build_deeplab(tiny_config(bn_momentum=0.01, head_bn_momentum=0.2))
    backbone_bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    head_bn = [m for m in model.head_modules() if isinstance(m, nn.BatchNorm2d)]
    assert backbone_bn
    assert head_bn
    assert {m.momentum for m in backbone_bn} == {0.01}
    assert {m.momentum for m in head_bn} == {0.2}
    # PyTorch convention: one training step moves the running mean by momentum * (batch mean - running mean).
    bn = backbone_bn[0]
    before = bn.running_mean.clone()
    model.train()(torch.rand(2, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before)
    assert (bn.running_mean - before).abs().max() < 0.05  # 0.01 x batch means of O(1)


def test_gradient_reaches_every_backbone_parameter() -> None:
    torch.manual_seed(0)
    model = build_deeplab(tiny_config()).train()
    logits = model(torch.rand(2, 3, 32, 32))
    F.cross_entropy(logits, torch.randint(0, 3, (2, 32, 32))).backward()
    for name, param in model.backbone.named_parameters():
        assert param.grad is not None, name
    stem = model.backbone.conv1.weight.grad
    assert stem is not None
    assert stem.abs().sum() > 0


def test_tiny_model_overfits_two_images() -> None:
    torch.manual_seed(0)
    model = build_deeplab(tiny_config(aspp_rates=[1, 2, 3])).train()
    images = torch.rand(2, 3, 32, 32)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, :, 16:] = 1  # left/right halves
    labels[1, 16:] = 2  # top/bottom halves
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.9  # near log(3) = 1.10 at initialisation
    assert losses[-1] < 0.1 * losses[0]


def test_parameter_groups_split_backbone_and_head() -> None:
    model = build_deeplab(tiny_config())
    groups = parameter_groups(model, 0.1, base_lr=5e-4)
    assert [group["lr_multiplier"] for group in groups] == [0.1, 1.0]
    assert [group["lr"] for group in groups] == pytest.approx([5e-5, 5e-4])
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone_ids
    head_ids = {id(p) for p in model.aspp.parameters()} | {id(p) for p in model.decoder.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head_ids
    optimizer = torch.optim.Adam(groups)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([5e-5, 5e-4])
    assert "lr" not in parameter_groups(model)[0]
    for param in model.backbone.parameters():
        param.requires_grad_(False)
    assert [group["lr_multiplier"] for group in parameter_groups(model)] == [1.0]
    with pytest.raises(ValueError, match="backbone_lr_mult must be >= 0, got -1"):
        parameter_groups(model, -1)
    with pytest.raises(TypeError, match="DeepLabV3Plus"):
        parameter_groups(nn.Linear(2, 2), 0.1)  # type: ignore[arg-type]


def test_synthetic_preset_is_small() -> None:
    config = deeplab_preset("synthetic-64", num_classes=21)
    assert config.output_stride == 8
    assert config.separable
    assert not config.pretrained
    model = build_deeplab(config)
    total = n_params(model)
    assert total < 2_000_000
    assert 2 * total < 4 * 1024**2  # fp16 bytes: a few MB at most
    head = head_params(
        c_high=192, c_low=24, aspp=64, rates=3, low=24, dec=64, convs=2, k=21, separable=True
    )  # layer4 192, layer1 24 channels
    assert n_params(model.aspp) + n_params(model.decoder) == head
    with torch.no_grad():
        low, high = model.eval().forward_features(torch.rand(1, 3, 64, 64))
    assert low.shape[-2:] == (16, 16)
    assert high.shape[-2:] == (8, 8)


def test_reco_plus_preset_matches_the_official_model() -> None:
    config = deeplab_preset("reco-plus-r101", num_classes=27, pretrained=False)
    assert config.backbone == "resnet101.tv_in1k"
    assert DEEPLAB_PRESETS["reco-plus-r101"]["pretrained"] is True
    assert config.output_stride == 8
    assert config.separable
    assert config.bn_momentum == 0.01
    assert config.resolved_aspp_rates == (12, 24, 36)
    assert (config.aspp_channels, config.low_level_channels, config.decoder_channels) == (256, 48, 256)
    model = build_deeplab(config)
    head = head_params(c_high=2048, c_low=256, aspp=256, rates=3, low=48, dec=256, convs=2, k=27, separable=True)
    assert n_params(model.aspp) + n_params(model.decoder) == head
    # The official ReCo+ state_dicts are ~183 MB of fp32 (reference notes); ours is the same network.
    assert math.isclose(4 * n_params(model) / 1e6, 183, rel_tol=0.01)
    with pytest.raises(ConfigError, match="unknown DeepLab preset 'r50'"):
        deeplab_preset("r50", 2)
    with pytest.raises(ConfigError, match="aspp_channels"):
        deeplab_preset("synthetic-64", 2, aspp_channels=0)


def test_model_is_an_nn_module() -> None:
    model = build_deeplab(tiny_config())
    assert isinstance(model, DeepLabV3Plus)
    assert isinstance(model, nn.Module)
    assert model.config == tiny_config()
    with pytest.raises(TypeError, match="DeepLabConfig"):
        build_deeplab({"backbone": "resnet18"})  # type: ignore[arg-type]
