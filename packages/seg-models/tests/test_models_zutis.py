"""ZUTIS on a tiny open_clip ViT: shapes and norms, tokens against open_clip's own, the official feature norm by
hand, stop-gradient, the sine encoding by hand, mask NMS and instance prediction on hand-made inputs, the segmenter
(padding, background policies, caching) and save/load."""

from __future__ import annotations

import copy
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from safetensors.torch import load_file, save_file

from seg_core import (
    IMAGENET_MEAN_STD,
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ConfigError,
    NoBackground,
    ProtocolPreset,
    Segmenter,
    SlidingWindow,
)
from seg_models.clip import ClipModel, load_clip, register_model_config
from seg_models.inference import normalize_images, pad_to_multiple
from seg_models.zutis import (
    ZUTIS,
    ZUTIS_FILE,
    ZUTISConfig,
    ZUTISSegmenter,
    load_zutis,
    mask_nms,
    predict_instances,
    read_zutis_info,
    save_zutis,
    semantic_logits,
    sine_positional_encoding,
)

TINY = ZUTISConfig(num_queries=6, decoder_layers=3, decoder_heads=2, decoder_dim=16, decoder_ffn=32, ffn_hidden=16)

TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _visual(output_tokens: bool = False) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32,
        patch_size=8,
        width=32,
        layers=2,
        heads=2,
        mlp_ratio=2.0,
        output_dim=16,
        output_tokens=output_tokens,
    )


def _model(**updates: object) -> ZUTIS:
    visual = _visual()
    torch.manual_seed(1)
    return ZUTIS(visual, TINY.model_copy(update=updates))


def _text_encoder(calls: list[tuple[str, ...]] | None = None, dim: int = 16) -> object:
    def encode(names: Sequence[str]) -> torch.Tensor:
        if calls is not None:
            calls.append(tuple(names))
        rows = [torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(name.encode()))) for name in names]
        return torch.stack(rows)

    return encode


def _encoder(calls: list[tuple[str, ...]] | None = None) -> ZUTISSegmenter:
    model = _model()
    return ZUTISSegmenter(model, _text_encoder(calls), normalization=IMAGENET_MEAN_STD)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------------


def test_forward_shapes_unit_norm_and_layers() -> None:
    model = _model().eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, 32, 48))
    assert output.embeddings.shape == (2, 16, 8, 12)  # (32 / 8) * 2, (48 / 8) * 2; D = proj width 16
    torch.testing.assert_close(output.embeddings.norm(dim=1), torch.ones(2, 8, 12))
    assert len(output.layer_mask_logits) == 3
    assert all(logits.shape == (2, 6, 8, 12) for logits in output.layer_mask_logits)
    assert output.mask_logits is output.layer_mask_logits[-1]
    assert not torch.equal(output.layer_mask_logits[0], output.layer_mask_logits[-1])
    assert model.width == 32
    assert model.embed_dim == 16
    assert model.patch_size == (8, 8)
    with pytest.raises(ValueError, match="pad_to_multiple"):
        model(torch.randn(1, 3, 30, 32))


def test_tokens_are_open_clips_own_ln_post_patch_tokens() -> None:
    visual = _visual(output_tokens=True).eval()
    model = ZUTIS(visual, TINY.model_copy(update={"upsample": 1})).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, reference = visual(images)  # [B, 16, 32] after ln_post, no proj
        tokens = model.tokens(images)
    torch.testing.assert_close(tokens.flatten(2).transpose(1, 2), reference, atol=1e-5, rtol=1e-5)
    upsampled = ZUTIS(visual, TINY).tokens(images).detach()
    expected = F.interpolate(tokens, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled, expected, atol=1e-5, rtol=1e-5)


def test_official_feature_norm_equals_a_hand_computation() -> None:
    model = _model().eval()
    images = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        tokens = model.tokens(images)
        embeddings = model(images).embeddings
        l2_only = ZUTIS(model.visual, TINY.model_copy(update={"feature_norm": "l2"}))(images).embeddings
    projected = torch.einsum("bchw,cd->bdhw", tokens, model.visual.proj.detach())
    expected = []
    for image in projected:  # [D, h, w]: one mean and variance over everything, eps 1e-5, no affine
        mean = image.sum() / image.numel()
        variance = ((image - mean) ** 2).sum() / image.numel()
        normed = (image - mean) / math.sqrt(float(variance) + 1e-5)
        expected.append(normed / normed.pow(2).sum(dim=0, keepdim=True).sqrt())
    torch.testing.assert_close(embeddings, torch.stack(expected), atol=1e-5, rtol=1e-4)
    plain = projected / projected.pow(2).sum(dim=1, keepdim=True).sqrt()
    torch.testing.assert_close(l2_only, plain, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(embeddings, plain, atol=1e-3)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_keeps_the_mask_loss_off_the_encoder(stop_gradient: bool) -> None:
    model = _model(stop_gradient=stop_gradient).train()
    output = model(torch.randn(2, 3, 16, 16))
    loss = sum(logits.sigmoid().square().mean() for logits in output.layer_mask_logits)
    assert isinstance(loss, torch.Tensor)
    torch.autograd.backward(loss)
    visual_grads = [p.grad for p in model.visual.parameters()]
    visual_moved = any(g is not None and bool(g.abs().sum() > 0) for g in visual_grads)
    assert visual_moved is (not stop_gradient)
    ffn1_grads = [p.grad for p in model.ffn1.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in ffn1_grads)
    # The semantic embeddings do reach the encoder either way.
    model.zero_grad()
    model(torch.randn(1, 3, 16, 16)).embeddings[:, 0].sum().backward()
    assert model.visual.conv1.weight.grad is not None
    assert bool(model.visual.conv1.weight.grad.abs().sum() > 0)


def test_refuses_towers_without_a_patch_path_and_bad_configs() -> None:
    resnet = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64, width=8)
    with pytest.raises(TypeError, match="VisionTransformer"):
        ZUTIS(resnet, TINY)
    no_proj = _visual()
    no_proj.proj = None
    with pytest.raises(TypeError, match="proj"):
        ZUTIS(no_proj, TINY)
    with pytest.raises(ConfigError, match="decoder_dim"):
        ZUTISConfig.parse({"decoder_dim": 30, "decoder_heads": 4})
    with pytest.raises(ConfigError, match="num_queries must be a positive integer, got 0"):
        ZUTISConfig.parse({"num_queries": 0})
    with pytest.raises(ConfigError, match="mask_threshold"):
        ZUTISConfig.parse({"mask_threshold": 1.5})
    with pytest.raises(ConfigError, match="logit_scale"):
        ZUTISConfig.parse({"logit_scale": 0})
    assert ZUTISConfig().num_queries == 100
    assert ZUTISConfig().nms_iou == 0.3


def test_sine_encoding_matches_the_formula_entry_by_entry() -> None:
    height, width, dim = 3, 4, 6
    encoding = sine_positional_encoding(height, width, dim)
    assert encoding.shape == (dim, height, width)
    features = dim // 2
    for channel in range(dim):
        axis, index = divmod(channel, features)
        frequency = 10000 ** (2 * (index // 2) / features)
        for row in range(height):
            for col in range(width):
                coordinate = (row + 1) / (height + 1e-6) if axis == 0 else (col + 1) / (width + 1e-6)
                angle = coordinate * 2 * math.pi / frequency
                value = math.sin(angle) if index % 2 == 0 else math.cos(angle)
                assert abs(float(encoding[channel, row, col]) - value) < 1e-5


def test_semantic_logits_are_scaled_cosines() -> None:
    embeddings = torch.tensor([[3.0, 0.0], [4.0, 1.0]]).reshape(1, 2, 1, 2)  # locations (3, 4) and (0, 1)
    text = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    logits = semantic_logits(embeddings, text, 2.0)
    torch.testing.assert_close(logits[0, :, 0, 0], torch.tensor([2 * 0.8, 2 * 0.6]))
    torch.testing.assert_close(logits[0, :, 0, 1], torch.tensor([2.0, 0.0]))
    with pytest.raises(ValueError, match="text must be"):
        semantic_logits(embeddings, torch.ones(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# NMS and instance prediction
# ---------------------------------------------------------------------------------------------------------------


def _three_masks() -> torch.Tensor:
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[0, 0:4, 0:4] = True  # 16 px
    masks[1, 0:4, 1:5] = True  # 16 px, overlap 12 with mask 0: IoU 12 / 20 = 0.6
    masks[2, 0:4, 1:5] = True  # same pixels as mask 1, another class
    return masks


def test_mask_nms_per_class_and_class_agnostic() -> None:
    masks = _three_masks()
    labels = torch.tensor([1, 1, 2])
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert mask_nms(masks, scores, labels, 0.3).tolist() == [1, 2]  # mask 0 loses to mask 1 (same class, IoU 0.6)
    assert mask_nms(masks, scores, None, 0.3).tolist() == [1]  # class-agnostic: mask 2 (IoU 1) goes too
    assert mask_nms(masks, scores, labels, 0.6).tolist() == [1, 2, 0]  # IoU 0.6 is not above 0.6
    assert mask_nms(masks, torch.tensor([0.9, 0.5, 0.7]), labels, 0.3).tolist() == [0, 2]
    empty = torch.zeros(2, 6, 6, dtype=torch.bool)
    assert mask_nms(empty, torch.tensor([0.1, 0.2]), None, 0.0).tolist() == [1, 0]  # empty masks never overlap
    assert mask_nms(empty[:0], torch.zeros(0), None, 0.3).tolist() == []
    with pytest.raises(ValueError, match="bool"):
        mask_nms(masks.float(), scores, labels, 0.3)


def _hand_made() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 4×4 grid: left half embeds e1, right half e2 except pixel (3, 3) = e3; five mask queries."""
    embeddings = torch.zeros(3, 4, 4)
    embeddings[0, :, :2] = 1.0
    embeddings[1, :, 2:] = 1.0
    embeddings[1, 3, 3] = 0.0
    embeddings[2, 3, 3] = 1.0
    logits = torch.full((5, 4, 4), -5.0)
    logits[0, :, :2] = 2.0  # left half -> e1 -> "cow"
    logits[1, :, 2:] = 1.0  # right half without (3, 3) -> e2 -> "sky"
    logits[1, 3, 3] = -5.0
    logits[2, 3, 3] = 3.0  # the e3 pixel -> background
    # query 3 stays empty
    logits[4, :, :2] = 1.5  # a weaker duplicate of query 0
    text = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])  # background, cow, sky
    return embeddings, logits, text


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_predict_instances_labels_scores_and_masks_by_hand() -> None:
    embeddings, logits, text = _hand_made()
    config = ZUTISConfig(nms=False)
    result = predict_instances(embeddings, logits, text, config, out_size=(8, 8))
    # cow (query 0): mean prob sigmoid(2), class prob sigmoid(5 * cos(e1, cow) = 5); the duplicate sigmoid(1.5);
    # sky (query 1): mean prob sigmoid(1), class prob sigmoid(5 * cos(e2, sky) = 5 * 0.8) = sigmoid(4).
    expected = [_sigmoid(2) * _sigmoid(5), _sigmoid(1.5) * _sigmoid(5), _sigmoid(1) * _sigmoid(4)]
    torch.testing.assert_close(result.scores, torch.tensor(expected))
    assert result.labels.tolist() == [1, 1, 2]
    assert result.labels.dtype == torch.long
    assert result.masks.dtype == torch.bool
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[:, :4] = True  # bilinear ×2 of a +2 / -5 step stays exactly the left half
    assert torch.equal(result.masks[0], left)
    assert result.masks.shape == (3, 8, 8)
    # With NMS the weaker duplicate (IoU 24 / 32 with the cow mask) goes.
    with_nms = predict_instances(embeddings, logits, text, ZUTISConfig(), out_size=(8, 8))
    assert with_nms.labels.tolist() == [1, 2]
    torch.testing.assert_close(with_nms.scores, torch.tensor([expected[0], expected[2]]))
    # The score floor drops sky (0.718) but keeps the cow (0.875).
    floor = predict_instances(embeddings, logits, text, ZUTISConfig(score_floor=0.8), out_size=(8, 8))
    assert floor.labels.tolist() == [1]
    assert len(predict_instances(embeddings, logits, text, ZUTISConfig(nms=False, max_instances=2), out_size=(4, 4)))


def test_predict_instances_background_and_row_labels() -> None:
    embeddings, logits, text = _hand_made()
    config = ZUTISConfig(nms=False)
    keep_all = predict_instances(embeddings, logits, text, config, background_label=None, out_size=(4, 4))
    assert sorted(keep_all.labels.tolist()) == [0, 1, 1, 2]  # the background mask stays; the empty one never does
    background_score = _sigmoid(3) * _sigmoid(5)
    assert keep_all.scores.max().item() == pytest.approx(background_score)
    merged = predict_instances(embeddings, logits, text, config, out_size=(4, 4), row_labels=[0, 1, 1])
    assert merged.labels.tolist() == [1, 1, 1]  # "sky" read as a synonym row of label 1
    top = predict_instances(embeddings, logits, text, ZUTISConfig(nms=False, max_instances=2), out_size=(4, 4))
    assert len(top) == 2
    assert top.labels.tolist() == [1, 1]


def test_predict_instances_cuts_padding_before_resizing() -> None:
    embeddings, logits, text = _hand_made()
    # The grid covers an 8×8 input of which the top-left 8×6 is the image, shown at 16×12.
    result = predict_instances(
        embeddings, logits, text, ZUTISConfig(nms=False), out_size=(16, 12), input_size=(8, 8), valid_size=(8, 6)
    )
    assert result.masks.shape == (3, 16, 12)
    # Input columns (after ×2): logits 2, 2, 2, 0.25, -3.25, ... Cut to 6 and resized to 12, output column c reads
    # input position (c + 0.5) / 2 - 0.5: column 6 -> 2.75 (0.25 · 2 + 0.75 · 0.25 > 0), column 7 -> 3.25
    # (0.75 · 0.25 + 0.25 · -3.25 < 0). Resizing all 8 columns to 12 without the cut would keep 5 columns.
    expected = torch.zeros(16, 12, dtype=torch.bool)
    expected[:, :7] = True
    assert torch.equal(result.masks[0], expected)


# ---------------------------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------------------------


def _pixels(height: int = 30, width: int = 37, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(3))


def test_segmenter_matches_a_manual_pass_at_a_non_multiple_size() -> None:
    calls: list[tuple[str, ...]] = []
    segmenter = _encoder(calls)
    assert isinstance(segmenter, Segmenter)
    concepts = ConceptSet.from_names("cow, sky", background=BackgroundClass(names=("background", "stuff")))
    images = _pixels()
    output = segmenter.segment(images, concepts)
    assert output.label_names == ("background", "cow", "sky")
    assert output.logits.shape == (2, 3, 30, 37)
    assert output.instances is not None
    assert len(output.instances) == 2
    assert calls == [("background", "stuff", "cow", "sky")]  # bare names, no template, one batch

    model = segmenter.model
    with torch.no_grad():
        padded = pad_to_multiple(normalize_images(images, IMAGENET_MEAN_STD.mean, IMAGENET_MEAN_STD.std), (8, 8))
        assert padded.shape[-2:] == (32, 40)
        forward = model(padded)
        rows = F.normalize(_text_encoder()(["background", "stuff", "cow", "sky"]), dim=-1)  # type: ignore[operator]
        cosines = semantic_logits(forward.embeddings, rows)
        per_label = torch.cat([cosines[:, :2].amax(dim=1, keepdim=True), cosines[:, 2:]], dim=1)
        expected = F.interpolate(per_label, size=(32, 40), mode="bilinear", align_corners=False)[..., :30, :37]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)
    for index, instances in enumerate(output.instances):
        assert instances.masks.shape[1:] == (30, 37)
        assert len(instances) >= 1  # the comparison below is not vacuous
        reference = predict_instances(
            forward.embeddings[index],
            forward.mask_logits[index],
            rows,
            model.config,
            out_size=(30, 37),
            input_size=(32, 40),
            valid_size=(30, 37),
            row_labels=[0, 0, 1, 2],
        )
        assert torch.equal(instances.masks, reference.masks)
        assert torch.equal(instances.labels, reference.labels)
        assert set(instances.labels.tolist()) <= {1, 2}

    segmenter.segment(images, concepts)
    assert len(calls) == 1  # text cached per names


def test_segmenter_background_policies_scale_and_presets() -> None:
    segmenter = _encoder()
    images = _pixels(batch=1)
    plain = segmenter.segment(images, ConceptSet.from_names("cow, sky", background=NoBackground()))
    assert plain.label_names == ("cow", "sky")
    assert plain.logits.shape == (1, 2, 30, 37)
    assert plain.instances is not None
    with pytest.raises(ConfigError, match="kind: class"):
        segmenter.segment(images, ConceptSet.from_names("cow", background=BackgroundThreshold()))
    scaled = ZUTISSegmenter(
        segmenter.model,
        segmenter.text_encoder,
        ProtocolPreset(name="s", logit_scale=10.0, normalization=IMAGENET_MEAN_STD),
        normalization=IMAGENET_MEAN_STD,
    )
    concepts = ConceptSet.from_names("cow, sky", background=NoBackground())
    torch.testing.assert_close(scaled.segment(images, concepts).logits, plain.logits * 10, atol=1e-4, rtol=1e-4)
    slide = ProtocolPreset(name="s", mode="slide", window=SlidingWindow(crop=16, stride=8))
    with pytest.raises(ConfigError, match="mode: whole"):
        ZUTISSegmenter(segmenter.model, segmenter.text_encoder, slide, normalization=IMAGENET_MEAN_STD)
    with pytest.raises(ValueError, match="decoder_dim"):
        ZUTISSegmenter(
            segmenter.model,
            segmenter.text_encoder,
            normalization=IMAGENET_MEAN_STD,
            config=TINY.model_copy(update={"decoder_dim": 32}),
        )
    no_nms = ZUTISSegmenter(
        segmenter.model,
        segmenter.text_encoder,
        normalization=IMAGENET_MEAN_STD,
        config=TINY.model_copy(update={"nms": False, "score_floor": 0.0}),
    )
    assert no_nms.config.nms is False


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config("seg-test-zutis-tiny", TINY_CLIP_CONFIG))


def test_save_load_round_trip_and_wrong_folders(tiny_clip: ClipModel, tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = ZUTIS(copy.deepcopy(tiny_clip.visual), TINY).eval()
    folder = save_zutis(
        model,
        tmp_path / "model",
        clip="seg-test-zutis-tiny",
        label_names=("background", "cow", "sky"),
        normalization=IMAGENET_MEAN_STD,
        image_size=(32, 32),
        extra={"saliency_iou": 0.5},
    )
    info = read_zutis_info(folder)
    assert info["method"] == "zutis"
    assert info["clip"] == "seg-test-zutis-tiny"
    assert info["saliency_iou"] == 0.5
    assert info["label_names"] == ["background", "cow", "sky"]
    assert info["image_size"] == [32, 32]
    assert ZUTISConfig.parse(info["config"]) == TINY
    assert all(value.dtype == torch.float16 for value in load_file(folder / "model.safetensors").values())

    original = ZUTISSegmenter(model, tiny_clip.encode_text, normalization=IMAGENET_MEAN_STD)
    loaded = load_zutis(folder, tiny_clip)
    assert loaded.preset.normalization == IMAGENET_MEAN_STD
    concepts = ConceptSet.from_names("cow, sky", background=BackgroundClass())
    images = _pixels(24, 32, batch=1)
    torch.testing.assert_close(
        loaded.segment(images, concepts).logits, original.segment(images, concepts).logits, atol=5e-3, rtol=0
    )

    with pytest.raises(ValueError, match="redefine"):
        save_zutis(
            model, tmp_path / "x", clip="c", normalization=IMAGENET_MEAN_STD, image_size=(1, 1), extra={"clip": 1}
        )
    with pytest.raises(FileNotFoundError):
        read_zutis_info(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="seg train zutis"):
        load_zutis(tmp_path / "empty", tiny_clip)
    other = tmp_path / "other"
    other.mkdir()
    (other / ZUTIS_FILE).write_text(json.dumps({"method": "pgseg"}))
    with pytest.raises(ConfigError, match="seg train zutis"):
        read_zutis_info(other)

    state = load_file(folder / "model.safetensors")
    state.pop("ffn2.layers.0.weight")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"missing \['ffn2.layers.0.weight'\]"):
        load_zutis(folder, tiny_clip)
    described = json.loads((folder / ZUTIS_FILE).read_text())
    described["visual"]["width"] = 64
    (folder / ZUTIS_FILE).write_text(json.dumps(described))
    with pytest.raises(ConfigError, match="load the CLIP named"):
        load_zutis(folder, tiny_clip)
