"""DeepLabv3+ on any timm CNN backbone: atrous spatial pyramid pooling and a light decoder.

Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", ECCV 2018 (DeepLabv3+). Its encoder head is DeepLabv3's ASPP (Chen, Papandreou, Schroff & Adam,
"Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587, Sec. 3.3): on the deepest
backbone feature, a 1x1 conv, three 3x3 atrous convs at rates (6, 12, 18) for output stride 16 (doubled at output
stride 8) and image-level pooling, concatenated and projected by a 1x1 conv. The decoder (DeepLabv3+ Sec. 3.1 and
Table 1-2) projects the stride-4 backbone feature to 48 channels, concatenates it with the bilinearly upsampled
ASPP output, refines with two 3x3 convs of 256 channels and classifies; the logits are upsampled bilinearly to the
input size. "Atrous separable convolution" (Sec. 3.2) swaps each 3x3 conv of the head for a depthwise 3x3 followed
by a pointwise 1x1.

ReCo+ (Shin, Albanie & Xie, "ReCo: Retrieve and Co-segment for Zero-shot Transfer", NeurIPS 2022, Sec. 3.3 and
Appendix B.4) trains this network with an ImageNet ResNet-101 at output stride 8 on ReCo's pseudo-labels; the
official code (VainF/DeepLabV3Plus-Pytorch, used by NoelShin/reco networks/reco_plus.py) makes the head convs
separable and sets the backbone's batch-norm momentum to 0.01. That is :func:`deeplab_preset` ``"reco-plus-r101"``.
ZUTIS and the ReCLIP++ student reuse the same module.

Divergences from the official ReCo+ code, both choices of this module's defaults and both configurable:
``decoder_convs=2`` (the DeepLabv3+ paper's two 3x3 convs; VainF's head has one) and the backbone comes from timm
(``resnet101.tv_in1k`` holds the same torchvision ImageNet weights VainF loads).

Batch-norm momentum uses PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch``, so the
official 0.01 is a slow average (TensorFlow/Keras would write it as 0.99).

Contents, in order: blocks (separable conv, ASPP, decoder); the model; parameter groups; the config and presets;
the builder.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any, Literal, cast

import timm
import torch
import torch.nn.functional as F
from pydantic import Field, JsonValue, PositiveInt, field_validator
from timm.models import FeatureInfo
from torch import Tensor, nn

from seg_core import ConfigError, SegModel

__all__ = [
    "ASPP",
    "DEEPLAB_PRESETS",
    "DeepLabConfig",
    "DeepLabDecoder",
    "DeepLabV3Plus",
    "SeparableConv2d",
    "build_deeplab",
    "deeplab_preset",
    "parameter_groups",
]

# ---------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------


class SeparableConv2d(nn.Module):
    """Atrous depthwise-separable convolution (DeepLabv3+ Sec. 3.2): depthwise ``k x k``, then pointwise 1x1.

    Spatial size is kept (padding ``dilation * (kernel_size - 1) // 2``, stride 1). No bias: a batch norm follows.
    Parameters: ``in_channels * kernel_size**2 + in_channels * out_channels`` instead of
    ``in_channels * out_channels * kernel_size**2`` for a dense conv.

    Args:
        in_channels: Input channels ``C``.
        out_channels: Output channels ``D``.
        kernel_size: Odd spatial kernel size of the depthwise conv.
        dilation: Atrous rate of the depthwise conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, D, H, W]``."""
        out: Tensor = self.pointwise(self.depthwise(x))
        return out


def _conv3x3(in_channels: int, out_channels: int, dilation: int, separable: bool) -> nn.Module:
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3, dilation=dilation)
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3 Sec. 3.3) with image-level features.

    Branches, each conv -> BN -> ReLU with ``channels`` outputs: a 1x1 conv; one 3x3 conv per atrous rate; global
    average pooling -> 1x1 conv, broadcast back to the feature size (what bilinear upsampling of a 1x1 map gives).
    The ``(2 + len(rates)) * channels`` concatenation is projected by 1x1 conv -> BN -> ReLU -> dropout.

    Args:
        in_channels: Channels ``C`` of the deepest backbone feature.
        channels: Channels ``A`` of every branch and of the output.
        rates: Atrous rates of the 3x3 branches.
        separable: Depthwise-separable 3x3 convs.
        dropout: Dropout probability after the projection (0.1 in DeepLabv3+'s released models).
    """

    def __init__(
        self, in_channels: int, channels: int, rates: tuple[int, ...], *, separable: bool, dropout: float
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(nn.Conv2d(in_channels, channels, 1, bias=False), channels)]
        branches += [_conv_bn_relu(_conv3x3(in_channels, channels, rate, separable), channels) for rate in rates]
        self.branches = nn.ModuleList(branches)
        self.pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            nn.Conv2d((len(branches) + 1) * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, h, w] -> [B, A, h, w]``."""
        outputs = [branch(x) for branch in self.branches]
        outputs.append(self.pooling(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        out: Tensor = self.project(torch.cat(outputs, dim=1))
        return out


class DeepLabDecoder(nn.Module):
    """DeepLabv3+ decoder: fuse the stride-4 feature with the upsampled ASPP output and classify.

    ``low -> 1x1 conv (low_level_channels) -> BN -> ReLU``; the ASPP output is upsampled bilinearly
    (``align_corners=False``) to the low-level size and concatenated after it (the official order, so a state_dict
    converter maps one to one); ``num_convs`` 3x3 conv -> BN -> ReLU of ``channels``; a 1x1 classifier with bias.

    Args:
        low_in_channels: Channels of the stride-4 backbone feature.
        aspp_channels: Channels ``A`` of the ASPP output.
        num_classes: Output classes ``K``.
        low_level_channels: Projection width of the low-level feature (48 in the paper).
        channels: Width of the 3x3 convs (256 in the paper).
        num_convs: Number of 3x3 convs (2 in the paper, 1 in the official ReCo+ code).
        separable: Depthwise-separable 3x3 convs.
    """

    def __init__(
        self,
        low_in_channels: int,
        aspp_channels: int,
        num_classes: int,
        *,
        low_level_channels: int,
        channels: int,
        num_convs: int,
        separable: bool,
    ) -> None:
        super().__init__()
        self.low_proj = _conv_bn_relu(nn.Conv2d(low_in_channels, low_level_channels, 1, bias=False), low_level_channels)
        convs: list[nn.Module] = []
        width = low_level_channels + aspp_channels
        for _ in range(num_convs):
            convs.append(_conv_bn_relu(_conv3x3(width, channels, 1, separable), channels))
            width = channels
        self.convs = nn.Sequential(*convs)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: Tensor, aspp: Tensor) -> Tensor:
        """``low [B, C_low, H/4, W/4]``, ``aspp [B, A, H/s, W/s]`` -> logits ``[B, K, H/4, W/4]``."""
        low = self.low_proj(low)
        aspp = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out: Tensor = self.classifier(self.convs(torch.cat([low, aspp], dim=1)))
        return out


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

_OWN_TIMM_KWARGS = ("features_only", "pretrained", "output_stride", "in_chans", "out_indices", "num_classes")


def _create_backbone(config: DeepLabConfig) -> nn.Module:
    """``timm.create_model(..., features_only=True)`` with errors that name the config field at fault."""
    extra: dict[str, Any] = dict(config.backbone_kwargs)
    try:
        backbone: nn.Module = timm.create_model(
            config.backbone,
            pretrained=config.pretrained,
            features_only=True,
            output_stride=config.output_stride,
            in_chans=config.in_chans,
            **extra,
        )
    except TypeError as error:
        if "output_stride" in str(error):
            raise ConfigError(
                f"output_stride: timm model {config.backbone!r} does not take output_stride (got "
                f"{config.output_stride}); DeepLab needs a CNN that can replace strides by dilation, e.g. resnet*, "
                "mobilenetv3_*, efficientnet_*, regnet*, convnext*"
            ) from None
        raise ConfigError(f"backbone_kwargs: timm model {config.backbone!r} rejected them: {error}") from None
    except AssertionError as error:  # vgg, dla, hrnet... accept output_stride but assert it is 32
        raise ConfigError(
            f"output_stride: timm model {config.backbone!r} failed its own check with output_stride="
            f"{config.output_stride} and backbone_kwargs={config.backbone_kwargs} (models that only support stride "
            f"32 do this; pick one with dilation support){': ' + str(error) if str(error) else ''}"
        ) from None
    except RuntimeError as error:  # timm: "features_only not implemented for ..." and similar
        raise ConfigError(f"backbone: timm cannot build {config.backbone!r} with features_only=True: {error}") from None
    return backbone


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ (see the module docstring): timm ``features_only`` backbone, :class:`ASPP`, :class:`DeepLabDecoder`.

    Build it with :func:`build_deeplab`. ``config`` is kept so a checkpoint can be rebuilt from it.

    Args:
        config: Everything that defines the network.

    Attributes:
        config: As given.
        backbone: The timm feature extractor (``timm.create_model(..., features_only=True)``).
        aspp: The ASPP head on the deepest feature.
        decoder: Low-level fusion and the classifier.
        low_level_index: Index of the stride-4 level in the backbone's feature list.
        low_level_channels_in, high_level_channels: Channels of the two backbone features used.

    Raises:
        ConfigError: The backbone cannot be built, ignores ``output_stride`` or has no stride-4 feature.
    """

    def __init__(self, config: DeepLabConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _create_backbone(config)
        info = cast(FeatureInfo, self.backbone.feature_info)
        reductions: list[int] = list(info.reduction())
        channels: list[int] = list(info.channels())
        if reductions[-1] != config.output_stride:
            raise ConfigError(
                f"output_stride: timm model {config.backbone!r} ignored output_stride={config.output_stride} (its "
                f"feature strides are {reductions}); pick a backbone that supports dilation"
            )
        stride4 = [index for index, reduction in enumerate(reductions) if reduction == 4]
        if not stride4:
            raise ConfigError(
                f"backbone: timm model {config.backbone!r} has no stride-4 feature for the decoder (feature strides "
                f"{reductions})"
            )
        # The deepest stride-4 level is the most semantic one at that resolution (ResNet: layer1, not the stem).
        self.low_level_index = stride4[-1]
        self.low_level_channels_in = channels[self.low_level_index]
        self.high_level_channels = channels[-1]
        self.aspp = ASPP(
            self.high_level_channels,
            config.aspp_channels,
            config.resolved_aspp_rates,
            separable=config.separable,
            dropout=config.aspp_dropout,
        )
        self.decoder = DeepLabDecoder(
            self.low_level_channels_in,
            config.aspp_channels,
            config.num_classes,
            low_level_channels=config.low_level_channels,
            channels=config.decoder_channels,
            num_convs=config.decoder_convs,
            separable=config.separable,
        )
        self._init_head()
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = config.bn_momentum
        for module in self.head_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = config.head_bn_momentum

    def head_modules(self) -> Iterator[nn.Module]:
        """Every module of the freshly initialised head (ASPP and decoder), not the backbone."""
        yield from self.aspp.modules()
        yield from self.decoder.modules()

    def _init_head(self) -> None:
        # He-normal (fan-in) conv weights as the official code; BN starts as identity. The backbone keeps timm's
        # own initialisation (or its pretrained weights).
        for module in self.head_modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The two backbone features the head reads.

        Args:
            images: ``[B, in_chans, H, W]`` normalised images, any ``H, W``.

        Returns:
            ``low [B, low_level_channels_in, ~H/4, ~W/4]`` and
            ``high [B, high_level_channels, ~H/s, ~W/s]`` with ``s = output_stride`` (sizes round up the way the
            backbone's strided convs do).
        """
        features: list[Tensor] = self.backbone(images)
        return features[self.low_level_index], features[-1]

    def forward(self, images: Tensor) -> Tensor:
        """Per-pixel class logits at the input resolution.

        Args:
            images: ``[B, in_chans, H, W]`` normalised images (any ``H, W``; no need to be multiples of 32). In
                training mode ``B >= 2``: the image-pooling branch batch-normalises one value per image.

        Returns:
            ``[B, num_classes, H, W]`` logits (bilinear upsampling, ``align_corners=False``).
        """
        if images.ndim != 4 or images.shape[1] != self.config.in_chans:
            raise ValueError(
                f"images must be [B, {self.config.in_chans}, H, W] (config.in_chans), got {tuple(images.shape)}"
            )
        if self.training and images.shape[0] < 2:
            raise ValueError(
                f"images: training needs a batch of at least 2 (got {images.shape[0]}); batch norm in the ASPP "
                "image-pooling branch sees one value per image. Use a larger batch or call model.eval()"
            )
        low, high = self.forward_features(images)
        logits = self.decoder(low, self.aspp(high))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------------------------


def parameter_groups(
    model: DeepLabV3Plus, backbone_lr_mult: float = 0.1, *, base_lr: float | None = None
) -> list[dict[str, Any]]:
    """Optimizer param groups with the backbone at ``backbone_lr_mult`` times the head's learning rate.

    ReCo+ trains the pretrained backbone at 0.1x the learning rate of the fresh head. Each group carries
    ``lr_multiplier`` (what ``seg_train.build_optimizer`` reads); with ``base_lr`` it also carries ``lr`` so a plain
    ``torch.optim`` optimizer can take the groups directly. Parameters with ``requires_grad=False`` are left out.

    Args:
        model: A :class:`DeepLabV3Plus`.
        backbone_lr_mult: Learning-rate multiplier of the backbone (>= 0; 0 freezes it in effect).
        base_lr: The head's learning rate, to set ``lr`` in each group; ``None`` leaves ``lr`` to the optimizer.

    Returns:
        ``[{"params": backbone, "lr_multiplier": backbone_lr_mult}, {"params": head, "lr_multiplier": 1.0}]``
        (plus ``"lr"`` with ``base_lr``), each group non-empty or omitted.
    """
    if not isinstance(model, DeepLabV3Plus):
        raise TypeError(f"model must be a DeepLabV3Plus (unwrap DDP first), got {type(model).__name__}")
    if backbone_lr_mult < 0:
        raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    if base_lr is not None and base_lr <= 0:
        raise ValueError(f"base_lr must be > 0 or None, got {base_lr}")
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups: list[dict[str, Any]] = []
    for params, multiplier in ((backbone, float(backbone_lr_mult)), (head, 1.0)):
        if not params:
            continue
        group: dict[str, Any] = {"params": params, "lr_multiplier": multiplier}
        if base_lr is not None:
            group["lr"] = base_lr * multiplier
        groups.append(group)
    return groups


# ---------------------------------------------------------------------------------------------------------------
# Config and presets
# ---------------------------------------------------------------------------------------------------------------

_SOURCE_PREFIXES = ("hf-hub:", "local-dir:")


@cache
def _timm_model_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


class DeepLabConfig(SegModel):
    """Everything needed to rebuild a :class:`DeepLabV3Plus` (saved beside its weights).

    Attributes:
        backbone: A timm model name, optionally with a weight tag (``resnet101``, ``resnet101.tv_in1k``,
            ``mobilenetv3_small_050``), or an ``hf-hub:``/``local-dir:`` source timm resolves.
        num_classes: Output classes ``K``.
        pretrained: Load timm's pretrained backbone weights (downloads unless cached).
        output_stride: Stride of the deepest feature, 8 or 16; the backbone's last strides become dilations.
        in_chans: Input channels (timm adapts a pretrained stem).
        aspp_channels: Width ``A`` of every ASPP branch and of its output (256 in the paper).
        aspp_rates: Atrous rates of the 3x3 ASPP branches; ``None``: (6, 12, 18) at output stride 16, doubled at 8.
            Rates larger than the deepest feature map make a 3x3 atrous conv see only its centre tap (DeepLabv3
            Sec. 3.3), so tiny inputs want smaller rates.
        aspp_dropout: Dropout after the ASPP projection.
        low_level_channels: Projection width of the stride-4 feature (48 in the paper).
        decoder_channels: Width of the decoder's 3x3 convs (256 in the paper).
        decoder_convs: Number of decoder 3x3 convs (2 in the paper, 1 in the official ReCo+ code).
        separable: Depthwise-separable 3x3 convs in ASPP and decoder (the official ReCo+ model).
        bn_momentum: Momentum of the backbone's batch norms, PyTorch convention
            (``running = (1 - m) * running + m * batch``); 0.01 in ReCo+, 0.1 is PyTorch's default.
        head_bn_momentum: Momentum of the head's batch norms (the official code leaves them at 0.1).
        backbone_kwargs: Further ``timm.create_model`` keyword arguments, e.g. narrower ResNet widths
            ``{"channels": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}``. The keys this config sets itself
            (``pretrained``, ``output_stride``, ``in_chans``, ``features_only``, ``out_indices``,
            ``num_classes``) are not allowed here.
    """

    backbone: str = Field(min_length=1)
    num_classes: PositiveInt
    pretrained: bool = False
    output_stride: Literal[8, 16] = 16
    in_chans: PositiveInt = 3
    aspp_channels: PositiveInt = 256
    aspp_rates: tuple[PositiveInt, ...] | None = Field(default=None, min_length=1)
    aspp_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    low_level_channels: PositiveInt = 48
    decoder_channels: PositiveInt = 256
    decoder_convs: PositiveInt = 2
    separable: bool = False
    bn_momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    head_bn_momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    backbone_kwargs: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name.startswith(_SOURCE_PREFIXES) or timm.is_model(name):
            return name
        close = difflib.get_close_matches(name.split(".", maxsplit=1)[0], _timm_model_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}{hint}")

    @field_validator("backbone_kwargs")
    @classmethod
    def _no_owned_kwargs(cls, kwargs: dict[str, JsonValue]) -> dict[str, JsonValue]:
        owned = sorted(set(kwargs) & set(_OWN_TIMM_KWARGS))
        if owned:
            raise ValueError(f"{', '.join(owned)} set by DeepLabConfig itself; use its own fields instead")
        return kwargs

    @property
    def resolved_aspp_rates(self) -> tuple[int, ...]:
        """The ASPP rates used: ``aspp_rates`` or (6, 12, 18) scaled by ``16 / output_stride``."""
        if self.aspp_rates is not None:
            return self.aspp_rates
        return tuple(rate * 16 // self.output_stride for rate in (6, 12, 18))


DEEPLAB_PRESETS: Mapping[str, Mapping[str, JsonValue]] = {
    # ReCo+ (Appendix B.4 and the official code): ResNet-101 with torchvision's ImageNet weights, OS 8, separable
    # head convs, backbone BN momentum 0.01. 256-wide ASPP/decoder, 48-channel low-level projection.
    "reco-plus-r101": {
        "backbone": "resnet101.tv_in1k",
        "pretrained": True,
        "output_stride": 8,
        "separable": True,
        "bn_momentum": 0.01,
    },
    # 64-px synthetic world, trained from scratch on 2 CPU cores: a ResNet-18-style backbone with one basic block
    # per stage and widths 24/48/96/192 (timm kwargs), OS 8 (8x8 deepest map at 64 px), 64-wide separable head.
    # ASPP rates: DeepLabv3's (6, 12, 18) on its 33x33 OS-16 map at 513 px, scaled to the 8x8 map and rounded.
    # 810,829 parameters with 21 classes (709,616 in the backbone; 1.6 MB in fp16); one Adam step on a batch of 8
    # at 64 px took ~40 ms on 2 idle cores (~140 ms on one thread of a busy shared machine).
    "synthetic-64": {
        "backbone": "resnet18",
        "pretrained": False,
        "output_stride": 8,
        "aspp_channels": 64,
        "aspp_rates": [1, 3, 4],
        "low_level_channels": 24,
        "decoder_channels": 64,
        "separable": True,
        "bn_momentum": 0.01,
        "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [24, 48, 96, 192]},
    },
}
"""Named DeepLab configs without ``num_classes`` (see :func:`deeplab_preset`)."""


def deeplab_preset(name: str, num_classes: int, **overrides: Any) -> DeepLabConfig:
    """A :data:`DEEPLAB_PRESETS` entry with ``num_classes`` and any field overridden, validated.

    ``deeplab_preset("reco-plus-r101", 27, pretrained=False)`` is the ReCo+ network without a weight download.

    Raises:
        ConfigError: Unknown preset name, or an override that does not validate (the message names the field).
    """
    if name not in DEEPLAB_PRESETS:
        raise ConfigError(f"unknown DeepLab preset {name!r}; choose one of {', '.join(DEEPLAB_PRESETS)}")
    return DeepLabConfig.parse({**DEEPLAB_PRESETS[name], "num_classes": num_classes, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------------------


def build_deeplab(config: DeepLabConfig) -> DeepLabV3Plus:
    """Build the network ``config`` describes (random head; backbone random or timm-pretrained).

    Raises:
        ConfigError: The backbone cannot be built as a stride-``output_stride`` feature extractor.
    """
    if not isinstance(config, DeepLabConfig):
        raise TypeError(f"config must be a DeepLabConfig (DeepLabConfig.parse a mapping), got {type(config).__name__}")
    return DeepLabV3Plus(config)
