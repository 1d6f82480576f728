"""ReCo language guidance and context elimination: hand-computed weights and constructed archives with a distractor."""

from __future__ import annotations

import math

import pytest
import torch

from seg_core import ConfigError, CoSegmenter
from seg_coseg.context import (
    CoSegConfig,
    ReferenceCoSegmenter,
    _resize_saliency,
    context_weights,
    reference_embeddings,
    saliency_weights,
)
from seg_coseg.seeds import reference_embedding, seed_pixels

K = 4  # archive images in the constructed examples
SKY, TARGET = 0, 1  # feature axes of the shared distractor and of the concept


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _distractor_archive() -> tuple[torch.Tensor, torch.Tensor]:
    """K images on a 3x3 grid: 6 "sky" pixels (axis 0, nearly identical across images: cos 0.99) and 3 "target"
    pixels (axis 1 plus an image-specific axis: cos 0.8 across images), the target at a different place per image.

    Returns ``[K, D, 3, 3]`` features and the ``[K, 3, 3]`` bool mask of the target pixels.
    """
    dim = 2 + 2 * K
    features = torch.zeros(K, dim, 9)
    target = torch.zeros(K, 9, dtype=torch.bool)
    for i in range(K):
        where = [(2 * i + j) % 9 for j in range(3)]
        target[i, where] = True
        for p in range(9):
            if target[i, p]:
                features[i, TARGET, p], features[i, 2 + K + i, p] = 1.0, 0.5
            else:
                features[i, SKY, p], features[i, 2 + i, p] = 1.0, 0.1
    return features.reshape(K, dim, 3, 3), target.reshape(K, 3, 3)


def _seeds_on(target: torch.Tensor, indices: torch.Tensor) -> list[bool]:
    return [bool(target[i].flatten()[int(indices[i])]) for i in range(K)]


def test_saliency_weights_by_hand() -> None:
    # Pixels (3, 4) -> (0.6, 0.8) and (0, -2) -> (0, -1); text (0, 5) -> (0, 1): cosines 0.8 and -1.
    dense = torch.tensor([[3.0, 0.0], [4.0, -2.0]]).reshape(1, 2, 1, 2)
    text = torch.tensor([0.0, 5.0])
    expected = torch.tensor([_sigmoid(8.0), _sigmoid(-10.0)]).reshape(1, 1, 2)
    torch.testing.assert_close(saliency_weights(dense, text), expected)
    plain = torch.tensor([_sigmoid(0.8), _sigmoid(-1.0)]).reshape(1, 1, 2)
    torch.testing.assert_close(saliency_weights(dense, text, temperature=1.0), plain)


def test_context_weights_by_hand() -> None:
    # Pixel a = (0.6, 0.8), b = (0, -1); references (2, 0) -> (1, 0) and (0, 1).
    features = torch.tensor([[3.0, 0.0], [4.0, -2.0]]).reshape(1, 2, 1, 2)
    references = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    a = (1 - _sigmoid(0.6)) * (1 - _sigmoid(0.8))
    b = (1 - _sigmoid(0.0)) * (1 - _sigmoid(-1.0))
    torch.testing.assert_close(context_weights(features, references), torch.tensor([a, b]).reshape(1, 1, 2))
    torch.testing.assert_close(context_weights(features, torch.zeros(0, 2)), torch.ones(1, 1, 2))


def test_weight_functions_name_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"text_embedding has 3 channels.*E=2"):
        saliency_weights(torch.randn(1, 2, 2, 2), torch.randn(3))
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got 0"):
        saliency_weights(torch.randn(1, 2, 2, 2), torch.randn(2), temperature=0.0)
    with pytest.raises(ValueError, match=r"dense_features must be \[K, E, h, w\]"):
        saliency_weights(torch.randn(2, 2, 2), torch.randn(2))
    with pytest.raises(ValueError, match=r"context_references are .* D=3 but features"):
        context_weights(torch.randn(1, 2, 2, 2), torch.randn(1, 3))
    with pytest.raises(TypeError, match=r"context_references must be a torch\.Tensor"):
        context_weights(torch.randn(1, 2, 2, 2), [[1.0, 0.0]])  # type: ignore[arg-type]


def test_language_guidance_moves_the_seed_off_the_shared_distractor() -> None:
    features, target = _distractor_archive()
    # Unguided: the sky is more consistent across images (support (1 + 3·0.99)/4 = 0.993 vs (1 + 3·0.8)/4 = 0.85).
    unguided = seed_pixels(features)
    assert _seeds_on(target, unguided.indices) == [False] * K
    # Saliency 0.9 on the target, 0.1 on the sky: sky support drops to ~0.099, target to (0.9 + 3·0.72)/4 = 0.765.
    saliency = torch.where(target, 0.9, 0.1)
    guided = seed_pixels(features, saliency)
    assert _seeds_on(target, guided.indices) == [True] * K
    config = CoSegConfig(context_elimination=False)
    embedding = reference_embeddings({"kite": features}, saliency={"kite": saliency}, config=config)["kite"]
    assert float(embedding[TARGET]) > 0.95
    assert abs(float(embedding[SKY])) < 1e-6


def test_context_elimination_removes_the_shared_distractor() -> None:
    features, _ = _distractor_archive()
    sky_archive = torch.zeros(3, features.shape[1], 2, 2)
    sky_archive[:, SKY] = 1.0  # every pixel is pure sky: the sky reference embedding is the sky axis
    plain = reference_embeddings(
        {"kite": features}, saliency=None, config=CoSegConfig(language_guided=False, context_elimination=False)
    )["kite"]
    assert float(plain[SKY]) > 0.95
    # Sky pixels get 1 - sigmoid(0.995) = 0.27, target pixels 1 - sigmoid(0) = 0.5: support 0.27·0.99 vs 0.5·0.85.
    config = CoSegConfig(language_guided=False, context_concepts=("sky",))
    eliminated = reference_embeddings(
        {"kite": features}, saliency=None, config=config, context_features={"sky": sky_archive}
    )
    assert float(eliminated["kite"][TARGET]) > 0.95
    assert abs(float(eliminated["kite"][SKY])) < 1e-6
    assert list(eliminated) == ["kite"]


def test_both_gates_multiply() -> None:
    features, target = _distractor_archive()
    sky_archive = torch.zeros(2, features.shape[1], 1, 1)
    sky_archive[:, SKY] = 1.0
    # Saliency at another grid size (1x1 per image: constant maps) is resized to the 3x3 feature grid.
    saliency = {"kite": torch.full((K, 1, 1), 0.5), "sky": torch.ones(2, 1, 1)}
    config = CoSegConfig(context_concepts=("sky",))
    got = reference_embeddings(
        {"kite": features}, saliency=saliency, config=config, context_features={"sky": sky_archive}
    )
    weights = 0.5 * context_weights(features, torch.eye(features.shape[1])[SKY : SKY + 1])
    torch.testing.assert_close(got["kite"], reference_embedding(features, weights))
    assert _seeds_on(target, seed_pixels(features, weights).indices) == [True] * K


def test_a_context_concept_reuses_its_context_embedding() -> None:
    features, target = _distractor_archive()
    sky_archive = features.clone()  # "sky" as a target concept too, with the distractor archive as its archive
    # Sky support ~0.5·0.99 beats the target's 0.4·0.85, but with the sky's own context weights (0.27 on sky, 0.5
    # on the target) the target would win: 0.135·0.99 < 0.2·0.85.
    saliency = {"sky": torch.where(target, 0.4, 0.5), "kite": torch.where(target, 0.9, 0.1)}
    config = CoSegConfig(context_concepts=("sky",))
    got = reference_embeddings({"sky": sky_archive, "kite": features}, saliency=saliency, config=config)
    # Sky: language-guided only, never eliminated by itself (which would push it onto the target pixels).
    torch.testing.assert_close(got["sky"], reference_embedding(sky_archive, saliency["sky"]), rtol=0, atol=0)
    self_eliminated = reference_embedding(sky_archive, saliency["sky"] * context_weights(sky_archive, got["sky"][None]))
    assert not torch.allclose(got["sky"], self_eliminated)
    assert list(got) == ["sky", "kite"]
    with pytest.raises(ValueError, match="'sky' has an archive in both"):
        reference_embeddings(
            {"sky": sky_archive, "kite": features},
            saliency=saliency,
            config=config,
            context_features={"sky": sky_archive.clone()},
        )


def test_saliency_is_resized_bilinearly() -> None:
    # 1x2 -> 1x4 with align_corners=False samples at x = -0.25, 0.25, 0.75, 1.25 (edges clamp).
    maps = torch.tensor([[[0.2, 1.0]]])
    resized = _resize_saliency("kite", maps, torch.zeros(1, 3, 1, 4))
    torch.testing.assert_close(resized, torch.tensor([[[0.2, 0.4, 0.8, 1.0]]]))


def test_missing_inputs_are_named() -> None:
    features, _ = _distractor_archive()
    with pytest.raises(ValueError, match="language_guided is on but saliency is None"):
        reference_embeddings({"kite": features}, saliency=None, config=CoSegConfig(context_elimination=False))
    with pytest.raises(ValueError, match="saliency has no maps for 'kite'"):
        reference_embeddings({"kite": features}, saliency={}, config=CoSegConfig(context_elimination=False))
    with pytest.raises(ValueError, match="needs an archive for context concept 'tree'"):
        reference_embeddings({"kite": features}, saliency=None, config=CoSegConfig(language_guided=False))
    with pytest.raises(ValueError, match="saliency\\['kite'\\] has 2 maps but the archive of 'kite' has K=4"):
        reference_embeddings(
            {"kite": features}, saliency={"kite": torch.ones(2, 3, 3)}, config=CoSegConfig(context_elimination=False)
        )
    with pytest.raises(ValueError, match="saliency\\['kite'\\] must hold finite values >= 0"):
        reference_embeddings(
            {"kite": features}, saliency={"kite": -torch.ones(K, 3, 3)}, config=CoSegConfig(context_elimination=False)
        )


def test_config_defaults_and_errors() -> None:
    config = CoSegConfig()
    assert config.context_concepts == ("tree", "sky", "building", "road", "person")
    assert (config.language_guided, config.context_elimination, config.include_self) == (True, True, True)
    assert config.saliency_temperature == 10.0
    assert config.block_size is None
    assert CoSegConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="saliency_temperature"):
        CoSegConfig.parse({"saliency_temperature": 0})
    with pytest.raises(ConfigError, match="block_size"):
        CoSegConfig.parse({"block_size": 0})
    with pytest.raises(ConfigError, match="without surrounding spaces, got \\[' sky'\\]"):
        CoSegConfig.parse({"context_concepts": [" sky"]})
    with pytest.raises(ConfigError, match="repeated: sky"):
        CoSegConfig.parse({"context_concepts": ["sky", "tree", "sky"]})
    with pytest.raises(ConfigError, match="context_concepts is empty"):
        CoSegConfig.parse({"context_concepts": []})
    with pytest.raises(ConfigError, match="unknown field"):
        CoSegConfig.parse({"temperature": 10})
    assert CoSegConfig.parse({"context_concepts": [], "context_elimination": False}).context_concepts == ()
    with pytest.raises(ValueError, match="saliency_temperature must be a positive finite number, got inf"):
        CoSegConfig(saliency_temperature=float("inf"))


def test_reference_cosegmenter_is_a_cosegmenter() -> None:
    segmenter = ReferenceCoSegmenter(block_size=1)
    assert isinstance(segmenter, CoSegmenter)
    # Seeds (0.6, 0.8) and (0.8, 0.6) (see test_coseg_seeds): the embedding is (1, 1)/sqrt(2).
    features = torch.tensor([[[1.0, 0.6], [0.0, 0.8]], [[0.8, 0.0], [0.6, 1.0]]]).reshape(2, 2, 1, 2)
    torch.testing.assert_close(segmenter.reference_embedding(features), torch.full((2,), 1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        ReferenceCoSegmenter(block_size=-1)
