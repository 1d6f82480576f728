"""ReCLIP++ on a tiny random open_clip ViT: the reference prompt against open_clip's own encode_text, the bias logit
map and the decoder by hand, rectification variants, frozen CLIP under training, the segmenter's class-set check and
permutation, test-time class pruning (against hand values and a naive loop), the student's inherited frozen head, and
save/load."""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from safetensors.torch import load_file
from torch import Tensor, nn

from seg_core import (
    IMAGENET_MEAN_STD,
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ConfigError,
    ProtocolPreset,
    Segmenter,
    SlidingWindow,
)
from seg_models.clip import ClipModel, load_clip, register_model_config
from seg_models.deeplab import DeepLabConfig
from seg_models.reclip import (
    RECLIP_FILE,
    ReCLIPConfig,
    ReCLIPRectifier,
    ReCLIPSegmenter,
    ReCLIPStudent,
    ReferencePrompt,
    load_reclip,
    load_reclip_student,
    prune_classes,
    read_reclip_info,
    save_reclip,
    save_reclip_student,
)

CLIP_NAME = "seg-test-reclip-tiny"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LONG_NAME = "very long striped tropical sea creature"  # 6 BPE tokens: the official prompt would lose its EOT
NAMES = ("dog", LONG_NAME, "sky")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config(CLIP_NAME, TINY_CLIP_CONFIG))


def _config(**updates: Any) -> ReCLIPConfig:
    return ReCLIPConfig(class_names=NAMES, n_ctx=4, **updates)


def _rectifier(clip: ClipModel, config: ReCLIPConfig | None = None, seed: int = 1) -> ReCLIPRectifier:
    config = config if config is not None else _config()
    generator = torch.Generator().manual_seed(123)
    query = torch.randn(len(config.class_names), 16, generator=generator)
    torch.manual_seed(seed)
    return ReCLIPRectifier(clip, query, config)


def _images(batch: int = 2, height: int = 32, width: int = 32, seed: int = 5) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _token_embedding(clip: ClipModel) -> Tensor:
    return cast(nn.Embedding, clip.model.token_embedding).weight.detach()


def _patch_positional_embedding(clip: ClipModel) -> Tensor:
    positional: Tensor = cast(VisionTransformer, clip.visual).positional_embedding.detach()
    return positional[1:]  # no class token


def _decoder_norm(module: nn.Sequential | None) -> nn.BatchNorm2d:
    assert module is not None
    return cast(nn.BatchNorm2d, module[1])


def _running_mean(module: nn.Sequential | None) -> Tensor:
    running_mean = _decoder_norm(module).running_mean
    assert running_mean is not None
    return running_mean


def _token_row(clip: ClipModel, text: str) -> Tensor:
    """Token ids of ``text`` without SOS/EOT/padding."""
    ids = clip.tokenize([text])[0]
    end = int(ids.argmax())
    return ids[1:end]


# ---------------------------------------------------------------------------------------------------------------
# The reference prompt
# ---------------------------------------------------------------------------------------------------------------


def test_reference_prompt_with_word_context_is_open_clips_encode_text(clip: ClipModel) -> None:
    context = "a photo of a"
    prompt = ReferencePrompt(clip, NAMES, n_ctx=4)
    words = _token_row(clip, context)
    assert len(words) == 4
    with torch.no_grad():
        prompt.ctx.copy_(_token_embedding(clip)[words])
        expected = clip.encode_text([f"{context} {name}" for name in NAMES])
        features = prompt.text_features(clip)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    # The long name's feature is read at its own EOT: position SOS + 4 context + 6 name tokens.
    assert prompt.eot_index.tolist() == [6, 11, 6]
    # The phrase initialisation gives the same context vectors.
    phrase = ReferencePrompt(clip, NAMES, n_ctx=4, ctx_init=context)
    torch.testing.assert_close(phrase.ctx.detach(), prompt.ctx.detach(), atol=0, rtol=0)
    # Normalisation: per class (paper) or by the global Frobenius norm (official).
    with torch.no_grad():
        per_class = prompt(clip)
        prompt.reference_norm = "global"
        global_norm = prompt(clip)
    torch.testing.assert_close(per_class, expected / expected.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(global_norm, expected / expected.norm(), atol=1e-5, rtol=1e-5)
    assert set(dict(prompt.state_dict())) == {"ctx"}


def test_reference_prompt_truncates_long_names_keeping_the_eot(clip: ClipModel) -> None:
    word = _token_row(clip, "x")
    assert len(word) == 1
    with pytest.warns(UserWarning, match="truncated"):
        prompt = ReferencePrompt(clip, ("dog", LONG_NAME), n_ctx=12, ctx_init="x")
    assert prompt.truncated == (LONG_NAME,)
    assert prompt.eot_index.tolist() == [14, 15]  # room for 2 name tokens in 16: SOS + 12 + 2 + EOT
    # The same sequence built by hand and run through open_clip's own encode_text.
    sos, eot = 49406, 49407
    name = _token_row(clip, LONG_NAME)[:2]
    ids = torch.cat([torch.tensor([sos]), word.repeat(12), name, torch.tensor([eot])]).reshape(1, 16)
    with torch.no_grad():
        expected = cast(Callable[[Tensor], Tensor], clip.model.encode_text)(ids)
        features = prompt.text_features(clip)
    torch.testing.assert_close(features[1:], expected, atol=1e-5, rtol=1e-5)


def test_reference_prompt_initialisation_and_limits(clip: ClipModel) -> None:
    embedding = _token_embedding(clip)
    official = ReferencePrompt(clip, NAMES, n_ctx=3, ctx_init=0)
    torch.testing.assert_close(official.ctx.detach(), embedding[0].repeat(3, 1), atol=0, rtol=0)
    torch.manual_seed(0)
    random = ReferencePrompt(clip, NAMES, n_ctx=8)
    assert random.ctx.shape == (8, 32)
    assert 0.015 < float(random.ctx.detach().std()) < 0.025
    with pytest.raises(ValueError, match="n_ctx=4"):
        ReferencePrompt(clip, NAMES, n_ctx=4, ctx_init="a photo of")
    with pytest.raises(ValueError, match="n_ctx <= 13"):
        ReferencePrompt(clip, NAMES, n_ctx=14)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ReferencePrompt(clip, NAMES, n_ctx=2, ctx_init=10**6)


def test_config_validation_names_the_field() -> None:
    assert _config().decoder_kernel == 5
    assert ReCLIPConfig.parse({"class_names": ["a"], "ctx_init": 0}).ctx_init == 0
    assert ReCLIPConfig.parse({"class_names": ["a"], "ctx_init": "X"}).ctx_init == "X"
    with pytest.raises(ConfigError, match=r"unique.*'cow'"):
        ReCLIPConfig.parse({"class_names": ["cow", "sky", "cow"]})
    with pytest.raises(ConfigError, match="class_names is empty"):
        ReCLIPConfig.parse({"class_names": []})
    with pytest.raises(ConfigError, match="decoder_kernel must be a positive odd integer"):
        ReCLIPConfig.parse({"class_names": ["a"], "decoder_kernel": 4})
    with pytest.raises(ConfigError, match="gumbel_tau must be > 0"):
        ReCLIPConfig.parse({"class_names": ["a"], "gumbel_tau": 0})
    with pytest.raises(ConfigError, match="n_ctx must be a positive integer, got 0"):
        ReCLIPConfig.parse({"class_names": ["a"], "n_ctx": 0})
    with pytest.raises(ConfigError, match="bias"):
        ReCLIPConfig.parse({"class_names": ["a"], "bias": "multiply"})
    with pytest.raises(ConfigError, match="n_context: unknown field"):
        ReCLIPConfig.parse({"class_names": ["a"], "n_context": 3})


# ---------------------------------------------------------------------------------------------------------------
# The rectifier
# ---------------------------------------------------------------------------------------------------------------


def test_rectifier_maps_by_hand_and_shapes(clip: ClipModel) -> None:
    rectifier = _rectifier(clip).eval()
    images = _images(height=32, width=40)
    with torch.no_grad():
        output = rectifier(images)
        reference = rectifier.reference_features()
    assert output.features.shape == (2, 16, 4, 5)
    assert output.query_logits.shape == output.rectified_logits.shape == output.logits.shape == (2, 3, 4, 5)
    assert output.bias_logits.shape == (1, 3, 4, 5)
    torch.testing.assert_close(output.features.norm(dim=1), torch.ones(2, 4, 5))
    # Z is the MaskCLIP dense feature, M_q its cosine with W_q.
    dense = F.normalize(clip.dense_features(images), dim=1)
    torch.testing.assert_close(output.features, dense, atol=1e-6, rtol=1e-5)
    query = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(123)), dim=-1)
    expected_query = (dense[:, None] * query[None, :, :, None, None]).sum(dim=2)
    torch.testing.assert_close(output.query_logits, expected_query, atol=1e-6, rtol=1e-5)
    assert torch.equal(output.rectified_logits, output.query_logits - output.bias_logits)
    torch.testing.assert_close(output.reference_features, reference)
    # The decoder: conv 5x5 over concat[Z, M], then BatchNorm with its running statistics (eval).
    assert rectifier.decoder is not None
    conv, norm = cast(nn.Conv2d, rectifier.decoder[0]), _decoder_norm(rectifier.decoder)
    assert conv.kernel_size == (5, 5)
    assert norm.running_var is not None
    stacked = torch.cat([output.features, output.rectified_logits], dim=1)
    convolved = F.conv2d(stacked, conv.weight, conv.bias, padding=2)
    expected = (convolved - _running_mean(rectifier.decoder)[None, :, None, None]) / torch.sqrt(
        norm.running_var[None, :, None, None] + norm.eps
    ) * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
    torch.testing.assert_close(output.logits, expected.detach(), atol=1e-5, rtol=1e-5)


def test_bias_logits_equal_a_hand_interpolation_and_projection(clip: ClipModel) -> None:
    rectifier = _rectifier(clip).eval()
    with torch.no_grad():
        output = rectifier(_images(1, height=48, width=40))
        reference = rectifier.reference_features()
    positional = _patch_positional_embedding(clip)  # [16, 32]
    grid = positional.T.reshape(1, 32, 4, 4)
    resized = F.interpolate(grid, size=(6, 5), mode="bicubic", align_corners=False)[0]  # [32, 6, 5]
    weight = rectifier.pe_proj.weight.detach()[:, :, 0, 0]  # [16, 32]
    assert rectifier.pe_proj.bias is not None
    projected = torch.einsum("dw,whx->dhx", weight, resized) + rectifier.pe_proj.bias.detach()[:, None, None]
    bias = torch.einsum("dhx,cd->chx", projected, reference)
    torch.testing.assert_close(output.positional_features[0], projected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.bias_logits[0], bias, atol=1e-5, rtol=1e-5)
    # At the trained grid no interpolation happens; "l2" normalises W_p per location.
    l2 = _rectifier(clip, _config(pe_norm="l2")).eval()
    with torch.no_grad():
        native = l2(_images(1)).positional_features
    assert native.shape == (1, 16, 4, 4)
    torch.testing.assert_close(native.norm(dim=1), torch.ones(1, 4, 4))


@pytest.mark.parametrize("bias", ["add", "none"])
def test_bias_variants_and_decoder_off(clip: ClipModel, bias: str) -> None:
    rectifier = _rectifier(clip, _config(bias=bias, decoder=False)).eval()
    assert rectifier.decoder is None
    with torch.no_grad():
        output = rectifier(_images())
    expected = output.query_logits + output.bias_logits if bias == "add" else output.query_logits
    assert torch.equal(output.rectified_logits, expected)
    assert not torch.equal(output.bias_logits, torch.zeros_like(output.bias_logits))
    assert output.logits is output.rectified_logits
    assert len(rectifier.trainable_parameters()) == 3  # ctx, pe_proj weight and bias


def test_training_moves_only_the_trainable_parts(clip: ClipModel) -> None:
    rectifier = _rectifier(clip).train()
    clip_before = {key: value.clone() for key, value in clip.state_dict().items()}
    assert not clip.training
    assert not any(module.training for module in clip.modules())
    trainable = rectifier.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in rectifier.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in clip.parameters())
    names = {name for name, p in rectifier.named_parameters() if p.requires_grad}
    assert names == {
        "reference_prompt.ctx",
        "pe_proj.weight",
        "pe_proj.bias",
        "decoder.0.weight",
        "decoder.0.bias",
        "decoder.1.weight",
        "decoder.1.bias",
    }
    own_before = {key: value.clone() for key, value in rectifier.own_state_dict().items()}
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=5e-4)
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    for step in range(3):
        output = rectifier(_images(seed=step))
        loss = F.cross_entropy(output.logits * 10, labels) + output.bias_logits.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not clip.training
    for key, value in clip.state_dict().items():
        assert torch.equal(value, clip_before[key]), key
    after = rectifier.own_state_dict()
    for key in ("reference_prompt.ctx", "pe_proj.weight", "decoder.0.weight", "decoder.1.running_mean"):
        assert not torch.equal(after[key], own_before[key]), key
    assert torch.equal(after["query_embeddings"], own_before["query_embeddings"])


def test_refuses_a_resnet_clip_and_wrong_query_shapes(clip: ClipModel) -> None:
    model = copy.deepcopy(clip.model)
    model.visual = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64, width=8)
    resnet_clip = ClipModel(model, clip.tokenizer, name="tiny-rn")
    with pytest.raises(ValueError, match=r"needs a ViT CLIP.*ModifiedResNet"):
        ReCLIPRectifier(resnet_clip, torch.randn(3, 16), _config())
    with pytest.raises(ValueError, match=r"query_embeddings must be \[C, D\] = \[3, 16\]"):
        ReCLIPRectifier(clip, torch.randn(2, 16), _config())


# ---------------------------------------------------------------------------------------------------------------
# The segmenter
# ---------------------------------------------------------------------------------------------------------------


def _pixels(batch: int = 1, height: int = 32, width: int = 32) -> Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def test_segmenter_logits_and_permuted_class_order(clip: ClipModel) -> None:
    rectifier = _rectifier(clip)
    segmenter = ReCLIPSegmenter(rectifier)
    assert isinstance(segmenter, Segmenter)
    assert segmenter.preset.normalization == clip.normalization
    pixels = _pixels(height=30, width=36)  # padded to 32 x 40 internally
    output = segmenter.segment(pixels, ConceptSet(names=NAMES))
    assert output.label_names == NAMES
    assert output.logits.shape == (1, 3, 30, 36)
    normalization = clip.normalization
    mean = torch.tensor(normalization.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(normalization.std).reshape(1, 3, 1, 1)
    padded = F.pad((pixels - mean) / std, (0, 4, 0, 2))
    with torch.no_grad():
        logits = rectifier(padded).logits
    expected = F.interpolate(logits, size=(32, 40), mode="bilinear", align_corners=False)[..., :30, :36]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)

    permuted = segmenter.segment(pixels, ConceptSet(names=("sky", "dog", LONG_NAME)))
    assert permuted.label_names == ("sky", "dog", LONG_NAME)
    torch.testing.assert_close(permuted.logits, output.logits[:, [2, 0, 1]], atol=0, rtol=0)


def test_segmenter_refuses_other_class_sets(clip: ClipModel) -> None:
    segmenter = ReCLIPSegmenter(_rectifier(clip))
    with pytest.raises(ValueError, match=r"cannot segment \['cat'\].*Trained classes: dog, very long"):
        segmenter.segment(_pixels(), ConceptSet(names=("dog", LONG_NAME, "cat")))
    with pytest.raises(ValueError, match=r"needs \['sky'\] too"):
        segmenter.segment(_pixels(), ConceptSet(names=("dog", LONG_NAME)))
    with pytest.raises(ConfigError, match="none of the background names"):
        segmenter.segment(_pixels(), ConceptSet(names=NAMES, background=BackgroundClass()))


def test_segmenter_background_policies(clip: ClipModel) -> None:
    with_background = _rectifier(clip, ReCLIPConfig(class_names=("background", "cow", "sky"), n_ctx=4))
    segmenter = ReCLIPSegmenter(with_background)
    pixels = _pixels()
    trained = segmenter.segment(pixels, ConceptSet(names=("background", "cow", "sky")))
    output = segmenter.segment(pixels, ConceptSet(names=("sky", "cow"), background=BackgroundClass()))
    assert output.label_names == ("background", "sky", "cow")
    torch.testing.assert_close(output.logits, trained.logits[:, [0, 2, 1]], atol=0, rtol=0)

    plain = ReCLIPSegmenter(_rectifier(clip))
    scores = plain.segment(pixels, ConceptSet(names=NAMES)).logits
    thresholded = plain.segment(pixels, ConceptSet(names=NAMES, background=BackgroundThreshold(threshold=0.5)))
    assert thresholded.label_names == ("background", *NAMES)
    assert thresholded.label_map is not None
    probabilities = scores.softmax(dim=1)
    expected = torch.where(probabilities.amax(dim=1) < 0.5, 0, probabilities.argmax(dim=1) + 1)
    assert torch.equal(thresholded.label_map, expected)


# ---------------------------------------------------------------------------------------------------------------
# Test-time class pruning (official TEST.PD)
# ---------------------------------------------------------------------------------------------------------------


def _naive_prune(logits: Tensor, threshold: float, scale: float) -> Tensor:
    """Element by element with math.exp: [B, C, H, W] -> the same with pruned classes at -100."""
    batch, classes, height, width = logits.shape
    values = logits.tolist()
    out = copy.deepcopy(values)
    for b in range(batch):
        best = [0.0] * classes
        for y in range(height):
            for x in range(width):
                column = [scale * values[b][c][y][x] for c in range(classes)]
                top = max(column)
                exps = [math.exp(v - top) for v in column]
                for c in range(classes):
                    best[c] = max(best[c], exps[c] / sum(exps))
        for c in range(classes):
            if best[c] < threshold:
                out[b][c] = [[-100.0] * width for _ in range(height)]
    return torch.tensor(out, dtype=logits.dtype)


def test_prune_classes_hand_values() -> None:
    # Two pixels; class 2 at -10 (pixel 0) or class 1 at -10 (pixel 1) takes no mass at scale 10, so the other two
    # are a two-class softmax: sigmoid(10 * 0.001) = 0.5025 and sigmoid(-0.01) = 0.4975.
    logits = torch.tensor([[[0.0, 0.0]], [[-0.001, -10.0]], [[-10.0, 0.001]]])  # [C=3, H=1, W=2]
    pruned = prune_classes(logits, 0.5)
    # class 0: max(0.5025, 0.4975) kept; class 1: 0.4975 (just below) pruned; class 2: 0.5025 (just above) kept
    expected = torch.tensor([[[0.0, 0.0]], [[-100.0, -100.0]], [[-10.0, 0.001]]])
    assert torch.equal(pruned, expected)
    assert torch.equal(logits[1], torch.tensor([[-0.001, -10.0]]))  # the input is not modified
    # at scale 100 (ReCLIP v1) class 1's best probability is sigmoid(-0.1) = 0.475: still pruned at 0.48, kept at 0.47
    assert torch.equal(prune_classes(logits, 0.48, scale=100.0)[1], torch.full((1, 2), -100.0))
    assert torch.equal(prune_classes(logits, 0.47, scale=100.0), logits)
    # a class exactly at the threshold is kept (strict <): two equal logits give exactly 0.5
    assert torch.equal(prune_classes(torch.zeros(2, 2, 2), 0.5), torch.zeros(2, 2, 2))
    # threshold 1.0 (the official VOC setting) keeps a class only where its float32 probability is exactly 1
    saturated = torch.tensor([[[0.0]], [[-10.0]]])  # softmax(10 x) = (1 / (1 + e^-100), ...) = (1.0, 3.7e-44)
    assert torch.equal(prune_classes(saturated, 1.0), torch.tensor([[[0.0]], [[-100.0]]]))
    assert torch.equal(prune_classes(torch.tensor([[[0.0]], [[-1.0]]]), 1.0), torch.full((2, 1, 1), -100.0))


def test_prune_classes_against_a_naive_loop_and_per_image() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 5, generator=generator) * 0.3
    best = torch.softmax(10 * logits, dim=1).flatten(2).amax(dim=2)
    ordered = sorted(best.flatten().tolist())
    # thresholds between consecutive best probabilities (away from float rounding), below all and above all: 0 to 8
    # classes pruned over the two images
    middles = [(a + b) / 2 for a, b in itertools.pairwise(ordered)]
    assert min(b - a for a, b in itertools.pairwise(ordered)) > 1e-4
    counts = []
    for threshold in (ordered[0] / 2, *middles, (ordered[-1] + 1) / 2):
        pruned = prune_classes(logits, threshold)
        torch.testing.assert_close(pruned, _naive_prune(logits, threshold, 10.0), atol=0, rtol=0)
        counts.append(int((pruned[:, :, 0, 0] == -100).sum()))
    assert counts == list(range(9))
    # a threshold between the two images' best probabilities of class 0 prunes it in one image only
    low, high = sorted(best[:, 0].tolist())
    assert low < high
    middle = (low + high) / 2
    pruned = prune_classes(logits, middle)
    pruned_images = [bool((pruned[b, 0] == -100).all()) for b in range(2)]
    assert sorted(pruned_images) == [False, True]
    # batched equals image by image; a [C, H, W] tensor is one image
    for b in range(2):
        assert torch.equal(pruned[b], prune_classes(logits[b], middle))
    # float16 input: float16 output, probabilities computed in float32
    half = prune_classes(logits.half(), middle)
    assert half.dtype == torch.float16
    assert torch.equal(half == -100, prune_classes(logits.half().float(), middle) == -100)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, float("nan"), float("inf"), True])
def test_prune_classes_refuses_bad_thresholds(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"threshold must be a probability in \(0, 1\]"):
        prune_classes(torch.zeros(2, 1, 1), threshold)


def test_prune_classes_refuses_bad_scales_and_shapes() -> None:
    for scale in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="scale must be a positive finite number"):
            prune_classes(torch.zeros(2, 1, 1), 0.5, scale=scale)
    for shape in ((2, 3), (1, 1, 2, 3, 3), (0, 2, 2), (2, 0, 3)):
        with pytest.raises(ValueError, match=r"logits must be \[B, C, H, W\] or \[C, H, W\]"):
            prune_classes(torch.zeros(shape), 0.5)


def _grid_logits(rectifier: ReCLIPRectifier, pixels: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    rectifier.eval()
    normalization = rectifier.normalization
    mean = torch.tensor(normalization.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(normalization.std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        logits: Tensor = rectifier(F.pad((pixels - mean) / std, pad)).logits
    return logits


def test_segmenter_class_pruning_on_the_grid_before_upsampling(clip: ClipModel) -> None:
    rectifier = _rectifier(clip)
    pixels = _pixels(batch=2, height=30, width=36)  # padded to 32 x 40: a 4 x 5 grid
    grid = _grid_logits(rectifier, pixels, (0, 4, 0, 2))
    off = ReCLIPSegmenter(rectifier).segment(pixels, ConceptSet(names=NAMES)).logits
    unpruned = ReCLIPSegmenter(rectifier, class_pruning=None).segment(pixels, ConceptSet(names=NAMES)).logits
    assert torch.equal(unpruned, off)  # pruning off is the old output
    upsampled = F.interpolate(grid, size=(32, 40), mode="bilinear", align_corners=False)[..., :30, :36]
    torch.testing.assert_close(off, upsampled, atol=1e-5, rtol=1e-5)

    best = torch.softmax(10 * grid, dim=1).flatten(2).amax(dim=2)  # [2, 3]
    threshold = float(best[0].min() + best[0].max()) / 2  # image 0: at least one class pruned, one kept
    segmenter = ReCLIPSegmenter(rectifier, class_pruning=threshold)
    output = segmenter.segment(pixels, ConceptSet(names=NAMES)).logits
    naive = _naive_prune(grid, threshold, 10.0)
    assert 0 < int((naive[0, :, 0, 0] == -100).sum()) < 3
    expected = F.interpolate(naive, size=(32, 40), mode="bilinear", align_corners=False)[..., :30, :36]
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(output, off)
    # the permuted class order prunes the same classes
    permuted = segmenter.segment(pixels, ConceptSet(names=("sky", "dog", LONG_NAME))).logits
    torch.testing.assert_close(permuted, output[:, [2, 0, 1]], atol=0, rtol=0)

    segmenter.class_pruning = None  # the property turns it off again
    assert torch.equal(segmenter.segment(pixels, ConceptSet(names=NAMES)).logits, off)


def test_segmenter_class_pruning_after_stitching_under_sliding_windows(clip: ClipModel) -> None:
    rectifier = _rectifier(clip)
    pixels = _pixels(batch=1, height=32, width=48)
    preset = ProtocolPreset(
        name="slide", mode="slide", window=SlidingWindow(crop=32, stride=16), normalization=clip.normalization
    )
    off = ReCLIPSegmenter(rectifier, preset).segment(pixels, ConceptSet(names=NAMES)).logits
    best = torch.softmax(10 * off, dim=1).flatten(2).amax(dim=2)[0]
    threshold = float(best.min() + best.max()) / 2
    output = ReCLIPSegmenter(rectifier, preset, class_pruning=threshold).segment(pixels, ConceptSet(names=NAMES))
    expected = _naive_prune(off, threshold, 10.0)
    assert 0 < int((expected[0, :, 0, 0] == -100).sum()) < 3
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


def test_segmenter_refuses_bad_class_pruning(clip: ClipModel) -> None:
    rectifier = _rectifier(clip)
    for value in (0.0, 1.01, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"class_pruning must be a probability in \(0, 1\]"):
            ReCLIPSegmenter(rectifier, class_pruning=value)
    segmenter = ReCLIPSegmenter(rectifier)
    with pytest.raises(ValueError, match=r"class_pruning must be a probability .* got 2"):
        segmenter.class_pruning = 2
    assert segmenter.class_pruning is None
    with pytest.raises(ValueError, match="class_pruning_scale must be a positive finite number"):
        ReCLIPSegmenter(rectifier, class_pruning=0.5, class_pruning_scale=0.0)


# ---------------------------------------------------------------------------------------------------------------
# The student
# ---------------------------------------------------------------------------------------------------------------


def _deeplab_config() -> DeepLabConfig:
    return DeepLabConfig.parse(
        {
            "backbone": "resnet18",
            "num_classes": 8,
            "output_stride": 8,
            "aspp_channels": 8,
            "aspp_rates": [1, 2, 3],
            "low_level_channels": 8,
            "decoder_channels": 8,
            "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]},
        }
    )


def _trained_rectifier(clip: ClipModel) -> ReCLIPRectifier:
    """A rectifier whose decoder BatchNorm statistics are not the identity."""
    rectifier = _rectifier(clip).train()
    with torch.no_grad():
        rectifier(_images(seed=11))
    return rectifier.eval()


def test_student_inherits_the_frozen_head(clip: ClipModel) -> None:
    teacher = _trained_rectifier(clip)
    torch.manual_seed(3)
    student = ReCLIPStudent.from_rectifier(teacher, _deeplab_config(), normalization=IMAGENET_MEAN_STD)
    with torch.no_grad():
        reference = teacher.reference_features()
    assert torch.equal(student.query_embeddings, teacher.query_embeddings)
    assert torch.equal(student.reference_features, reference)
    assert torch.equal(student.positional_embedding, _patch_positional_embedding(clip))
    assert student.decoder is not None
    assert teacher.decoder is not None
    for inherited, original in ((student.pe_proj, teacher.pe_proj), (student.decoder, teacher.decoder)):
        for (key, value), (_, source) in zip(
            inherited.state_dict().items(), original.state_dict().items(), strict=True
        ):
            assert torch.equal(value, source), key
        assert not any(p.requires_grad for p in inherited.parameters())
    trainable = {id(p) for p in student.trainable_parameters()}
    assert trainable == {id(p) for p in student.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in (*student.deeplab.parameters(), *student.proj.parameters())}

    student.train()
    assert not student.decoder.training
    running_mean = _running_mean(student.decoder).clone()
    output = student(_images(2, 32, 32))
    assert output.features.shape == (2, 16, 8, 8)
    assert output.logits.shape == output.query_logits.shape == (2, 3, 8, 8)
    assert output.bias_logits.shape == (1, 3, 8, 8)
    torch.testing.assert_close(output.features.norm(dim=1), torch.ones(2, 8, 8))
    assert torch.equal(output.rectified_logits, output.query_logits - output.bias_logits)
    assert torch.equal(_running_mean(student.decoder), running_mean)
    output.logits.square().mean().backward()
    assert all(p.grad is not None for p in student.proj.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in student.deeplab.backbone.parameters())
    assert all(p.grad is None for p in (*student.pe_proj.parameters(), *student.decoder.parameters()))
    with pytest.raises(ValueError, match="batch of at least 2"):
        student(_images(1))


def test_student_bias_is_the_teachers_on_the_same_grid(clip: ClipModel) -> None:
    teacher = _trained_rectifier(clip)
    student = ReCLIPStudent.from_rectifier(teacher, _deeplab_config()).eval()
    with torch.no_grad():
        teacher_bias = teacher(_images(1, 32, 32)).bias_logits  # ViT grid 4 x 4
        student_bias = student(_images(1, 16, 16)).bias_logits  # stride-4 grid 4 x 4
    torch.testing.assert_close(student_bias, teacher_bias, atol=1e-6, rtol=1e-5)
    segmenter = ReCLIPSegmenter(student)
    assert segmenter.preset.normalization == clip.normalization
    assert segmenter.segment(_pixels(1, 20, 28), ConceptSet(names=NAMES)).logits.shape == (1, 3, 20, 28)


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------


def test_rectifier_save_load_round_trip(clip: ClipModel, tmp_path: Path) -> None:
    rectifier = _trained_rectifier(clip)
    images = _images(1, 32, 40)
    with torch.no_grad():
        expected = rectifier(images).logits
    exact = save_reclip(rectifier, tmp_path / "fp32", fp16=False, extra={"epochs": 3})
    info = read_reclip_info(exact)
    assert info["method"] == "reclip"
    assert info["kind"] == "rectifier"
    assert info["clip"] == CLIP_NAME
    assert info["clip_pretrained"] is None
    assert info["query_embeddings_shape"] == [3, 16]
    assert info["epochs"] == 3
    assert ReCLIPConfig.parse(info["config"]) == rectifier.config
    stored = load_file(exact / "model.safetensors")
    assert not any(key.startswith("clip.") for key in stored)
    assert "query_embeddings" in stored
    assert "reference_prompt.ctx" in stored

    loaded = load_reclip(exact, clip)
    for key, value in rectifier.own_state_dict().items():
        assert torch.equal(loaded.own_state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, expected)

    half = save_reclip(rectifier, tmp_path / "fp16")
    half_tensors = load_file(half / "model.safetensors").values()
    assert all(value.dtype == torch.float16 for value in half_tensors if value.is_floating_point())
    with torch.no_grad():
        torch.testing.assert_close(load_reclip(half, clip)(images).logits, expected, atol=5e-2, rtol=1e-2)

    # Without a CLIP the one named in reclip.json is loaded (here: the registered random architecture).
    fresh = load_reclip(exact)
    assert fresh.clip is not clip
    assert fresh.clip.name == CLIP_NAME
    assert torch.equal(fresh.reference_prompt.ctx, rectifier.reference_prompt.ctx)


def test_student_save_load_round_trip(clip: ClipModel, tmp_path: Path) -> None:
    torch.manual_seed(4)
    student = ReCLIPStudent.from_rectifier(_trained_rectifier(clip), _deeplab_config()).eval()
    images = _images(1, 32, 32)
    with torch.no_grad():
        expected = student(images).logits
    folder = save_reclip_student(student, tmp_path / "student", fp16=False)
    assert read_reclip_info(folder)["kind"] == "student"
    loaded = load_reclip_student(folder)
    with torch.no_grad():
        assert torch.equal(loaded(images).logits, expected)
    half = load_reclip_student(save_reclip_student(student, tmp_path / "half"))
    with torch.no_grad():
        torch.testing.assert_close(half(images).logits, expected, atol=5e-2, rtol=1e-2)
    assert half.decoder is not None
    assert not any(p.requires_grad for p in half.decoder.parameters())
    with pytest.raises(ConfigError, match="load_reclip_student"):
        load_reclip(folder, clip)
    with pytest.raises(ConfigError, match=r"'rectifier' folder.*load_reclip"):
        load_reclip_student(save_reclip(_rectifier(clip), tmp_path / "rect"))


def test_loading_another_methods_folder_fails_clearly(clip: ClipModel, tmp_path: Path) -> None:
    zutis = tmp_path / "zutis"
    zutis.mkdir()
    (zutis / "zutis.json").write_text(json.dumps({"method": "zutis"}))
    with pytest.raises(ConfigError, match=rf"no {RECLIP_FILE}.*zutis.json"):
        load_reclip(zutis, clip)
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    (impostor / RECLIP_FILE).write_text(json.dumps({"method": "zutis"}))
    with pytest.raises(ConfigError, match="not 'reclip'"):
        load_reclip_student(impostor)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_reclip(tmp_path / "missing", clip)
    folder = save_reclip(_rectifier(clip), tmp_path / "model")
    info = json.loads((folder / RECLIP_FILE).read_text())
    info["clip_summary"]["embed_dim"] = 512
    (folder / RECLIP_FILE).write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="was trained on a CLIP"):
        load_reclip(folder, clip)
