"""GroupViT on the tiny CPU config (random weights): shapes, assignments, the official inference rule, the
segmenter, config errors and the save/load round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seg_core import (
    BackgroundClass,
    BackgroundThreshold,
    ConceptSet,
    ConfigError,
    ProtocolPreset,
    Segmenter,
    SlidingWindow,
)
from seg_models.groupvit import (
    GROUPVIT_GCC_YFCC_CONFIG,
    GROUPVIT_TINY_CONFIG,
    AssignAttention,
    GroupViT,
    GroupViTConfig,
    GroupViTSegmenter,
    GroupViTVisionConfig,
    assign_groups,
    group_class_scores,
    load_groupvit,
    pixel_class_scores,
    pixel_group_map,
    save_groupvit,
    threshold_background,
)

EOT = 49407  # CLIP BPE end-of-text id
SOT = 49406


@pytest.fixture(scope="module")
def model() -> GroupViT:
    torch.manual_seed(0)
    return GroupViT(GROUPVIT_TINY_CONFIG).eval()


def _images(height: int = 64, width: int = 64, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --- the model ------------------------------------------------------------------------------------------------


def test_shapes_at_the_training_size(model: GroupViT) -> None:
    images = _images()
    with torch.no_grad():
        vision = model.vision_features(images)
        image_emb, text_emb, scale = model(images, model.tokenize(["a photo of a cow.", "sky", "grass"]))
    assert vision.grid == (8, 8)
    assert vision.tokens.shape == (2, 4, 64)  # 64 patches -> 8 -> 4 segments
    assert [tuple(a.shape) for a in vision.assignments()] == [(2, 64, 8), (2, 8, 4)]
    stage0, stage1, stage2 = vision.stages
    assert stage0.input_tokens.shape == (2, 64, 64)
    assert stage0.group_tokens is not None
    assert stage0.group_tokens.shape == (2, 8, 64)
    assert stage0.centres is not None
    assert stage0.centres.shape == (2, 8, 64)
    assert stage1.input_tokens.shape == (2, 8, 64)
    assert stage1.centres is not None
    assert stage1.centres.shape == (2, 4, 64)
    assert stage2.centres is None
    assert stage2.group_tokens is None
    assert stage2.tokens.shape == (2, 4, 64)
    assert image_emb.shape == (2, 64)
    assert text_emb.shape == (3, 64)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text_emb.norm(dim=-1), torch.ones(3))
    assert float(scale) == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.pixel_group_map(images).shape == (2, 4, 64, 64)
    assert model.embed_dim == 64


def test_other_sizes_interpolate_the_positional_embedding(model: GroupViT) -> None:
    visual = model.visual
    assert visual.position_embedding((8, 8)) is visual.pos_embed  # the trained grid: no interpolation
    table = visual.pos_embed.detach().reshape(8, 8, 64)
    resized = F.interpolate(table.permute(2, 0, 1)[None], size=(6, 10), mode="bicubic", align_corners=False)[0]
    expected = resized.permute(1, 2, 0).reshape(1, 60, 64)
    torch.testing.assert_close(visual.position_embedding((6, 10)), expected)
    with torch.no_grad():
        vision = model.vision_features(_images(48, 80))
        assert vision.grid == (6, 10)
        assert [tuple(a.shape) for a in vision.assignments()] == [(2, 60, 8), (2, 8, 4)]
        assert model.encode_image(_images(48, 80)).shape == (2, 64)
        assert model.pixel_group_map(_images(48, 80)).shape == (2, 4, 48, 80)


def test_soft_assignments_sum_to_one_and_hard_ones_are_one_hot(model: GroupViT) -> None:
    with torch.no_grad():
        soft = model.group_assignments(_images(), hard=False)
        hard = model.group_assignments(_images(), hard=True)
    for soft_stage, hard_stage in zip(soft, hard, strict=True):
        torch.testing.assert_close(soft_stage.sum(dim=-1), torch.ones(soft_stage.shape[:2]))
        assert bool((soft_stage > 0).all())
        assert set(hard_stage.unique().round(decimals=5).tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(hard_stage.sum(dim=-1), torch.ones(hard_stage.shape[:2]))
        # In eval mode the hard assignment is the argmax of the soft one (no noise).
        assert torch.equal(hard_stage.argmax(dim=-1), soft_stage.argmax(dim=-1))
    # The product of the stages' soft assignments is still a distribution over the final groups for every pixel.
    maps = pixel_group_map(soft, (8, 8), None)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, 8, 8))


def test_assign_attention_matches_a_naive_computation() -> None:
    torch.manual_seed(3)
    attention = AssignAttention(6, hard=False, gumbel=False, assign_eps=1.0).eval()
    groups, tokens = torch.randn(1, 2, 6), torch.randn(1, 5, 6)
    with torch.no_grad():
        out, soft, used = attention(groups, tokens)
        q = groups[0] @ attention.q_proj.weight.T + attention.q_proj.bias
        k = tokens[0] @ attention.k_proj.weight.T + attention.k_proj.bias
        v = tokens[0] @ attention.v_proj.weight.T + attention.v_proj.bias
    expected_out = torch.zeros(2, 6)
    expected_soft = torch.zeros(2, 5)
    for n in range(5):  # softmax over the two groups, token by token
        logits = [float(q[g] @ k[n]) / math.sqrt(6) for g in range(2)]
        total = sum(math.exp(value) for value in logits)
        for g in range(2):
            expected_soft[g, n] = math.exp(logits[g]) / total
    for g in range(2):  # each group's weights divided by (their sum over tokens + 1)
        weights = expected_soft[g] / (expected_soft[g].sum() + 1.0)
        expected_out[g] = (weights[:, None] * v).sum(dim=0)
    expected_out = expected_out @ attention.out_proj.weight.detach().T + attention.out_proj.bias.detach()
    torch.testing.assert_close(soft[0], expected_soft)
    torch.testing.assert_close(used[0], expected_soft)
    torch.testing.assert_close(out[0], expected_out)


def test_straight_through_passes_the_softmax_gradient() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.4]], requires_grad=True)  # [G=2, N=3]
    weights = torch.tensor([[1.0, 2.0, -3.0], [0.5, -1.0, 4.0]])
    hard = assign_groups(logits, hard=True, dim=0)
    assert torch.equal(hard.detach(), torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]))
    (hard * weights).sum().backward()
    assert logits.grad is not None
    hard_grad = logits.grad.clone()
    logits.grad = None
    (assign_groups(logits, hard=False, dim=0) * weights).sum().backward()
    assert logits.grad is not None
    assert bool((hard_grad != 0).any())
    torch.testing.assert_close(hard_grad, logits.grad)


def test_training_gradients_reach_the_assignment_logits() -> None:
    torch.manual_seed(0)
    net = GroupViT(GROUPVIT_TINY_CONFIG).train()
    image_emb, text_emb, scale = net(_images(), net.tokenize(["cow", "sky"]))
    (scale * image_emb @ text_emb.T).logsumexp(dim=-1).sum().backward()
    for stage in net.visual.stage_list()[:2]:
        assert stage.grouping is not None
        for projection in (stage.grouping.assign.q_proj, stage.grouping.assign.k_proj):
            assert projection.weight.grad is not None
            assert float(projection.weight.grad.abs().sum()) > 0


def test_gumbel_noise_only_in_training() -> None:
    torch.manual_seed(0)
    attention = AssignAttention(4, hard=True, gumbel=True)
    with torch.no_grad():
        attention.q_proj.weight.mul_(0.01)  # near-uniform logits: the noise decides
    groups, tokens = torch.randn(1, 4, 4), torch.randn(1, 64, 4)
    attention.eval()
    _, soft, first = attention(groups, tokens)
    _, _, second = attention(groups, tokens)
    assert torch.equal(first, second)
    assert torch.equal(first.argmax(dim=1), soft.argmax(dim=1))
    attention.train()
    torch.manual_seed(1)
    _, _, noisy_a = attention(groups, tokens)
    _, _, noisy_b = attention(groups, tokens)
    assert not torch.equal(noisy_a.argmax(dim=1), noisy_b.argmax(dim=1))
    attention.gumbel = False  # hard without Gumbel is deterministic in training too
    _, _, plain = attention(groups, tokens)
    assert torch.equal(plain, first)


def test_gumbel_max_samples_follow_the_softmax() -> None:
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(2, 1).expand(2, 4000)  # probabilities 0.25 / 0.75
    sample = assign_groups(logits, hard=True, gumbel=True, dim=0, generator=torch.Generator().manual_seed(0))
    assert float(sample[1].mean()) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="tau"):
        assign_groups(logits, hard=True, gumbel=True, tau=0.0)


def test_grouping_hook_sees_stage_inputs_and_adds_to_the_grouping_input(model: GroupViT) -> None:
    images = _images()
    seen: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []

    def record(index: int, stage_input: torch.Tensor, grouping_input: torch.Tensor) -> torch.Tensor | None:
        seen.append((index, tuple(stage_input.shape), tuple(grouping_input.shape)))
        return torch.zeros_like(grouping_input)

    with torch.no_grad():
        plain = model.vision_features(images)
        hooked = model.vision_features(images, hook=record)
        shifted = model.vision_features(images, hook=lambda i, s, g: torch.ones_like(g) if i == 0 else None)
    assert seen == [(0, (2, 64, 64), (2, 64, 64)), (1, (2, 8, 64), (2, 8, 64))]
    torch.testing.assert_close(hooked.tokens, plain.tokens)
    assert not torch.allclose(shifted.tokens, plain.tokens)
    torch.testing.assert_close(shifted.stages[0].input_tokens, plain.stages[0].input_tokens)


def test_tokenizer_and_text_pooling(model: GroupViT) -> None:
    ids = model.tokenize(["a photo of a cow.", "sky"])
    assert ids.shape == (2, 32)
    assert ids[:, 0].tolist() == [SOT, SOT]
    assert int(ids[1].argmax()) == 2
    assert int(ids[1, 2]) == EOT
    with torch.no_grad():
        full = model.encode_text(ids)
        truncated = model.encode_text(ids[:, :10])  # the causal mask makes padding after EOT irrelevant
        from_strings = model.encode_text(["a photo of a cow.", "sky"])
    torch.testing.assert_close(full, truncated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full, from_strings)
    with pytest.raises(TypeError, match="sequence of strings"):
        model.tokenize("sky")
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, 33, dtype=torch.long))
    small_text = {"vocab_size": 100, "context_length": 8, "width": 8, "layers": 1, "heads": 1}
    small = GroupViT(GROUPVIT_TINY_CONFIG.model_copy(update={"text": GroupViTConfig().text.model_validate(small_text)}))
    with pytest.raises(ValueError, match="vocab_size"):
        small.tokenize(["sky"])


# --- the official inference rule -------------------------------------------------------------------------------


def _naive_softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) if v != -math.inf else 0.0 for v in values]
    return [e / sum(exps) for e in exps]


def test_top5_restriction_on_a_hand_built_example() -> None:
    # Seven classes along the axes of R^7; the image is most similar to classes 0-4, so 5 and 6 are dropped.
    text = torch.eye(7)
    image = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0]])
    group_vectors = [[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]
    groups = torch.tensor([group_vectors])
    scale = 2.0
    scores = group_class_scores(groups, image, text, scale)
    assert scores.shape == (1, 2, 7)
    for g, vector in enumerate(group_vectors):
        norm = math.sqrt(sum(v * v for v in vector))
        logits = [scale * v / norm for v in vector]  # cos with an axis = that coordinate / norm
        unrestricted = _naive_softmax(logits)
        restricted = _naive_softmax([value if k < 5 else -math.inf for k, value in enumerate(logits)])
        expected = [r * u for r, u in zip(restricted, unrestricted, strict=True)]
        torch.testing.assert_close(scores[0, g], torch.tensor(expected))
    # Group 0 points mostly at class 6, which the image-level top-5 excludes: it gets no score there.
    assert float(scores[0, 0, 6]) == 0.0
    assert int(scores[0, 0].argmax()) == 1
    # With top_k covering every class, the restricted softmax equals the unrestricted one: scores = softmax².
    full = group_class_scores(groups, image, text, scale, top_k=10)
    torch.testing.assert_close(full, (scale * F.normalize(groups, dim=-1) @ text.T).softmax(dim=-1) ** 2)


def test_pixels_take_their_argmax_group_scores() -> None:
    group_map = torch.zeros(1, 2, 2, 3)
    group_map[0, 0] = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.45, 0.7]])
    group_map[0, 1] = 1 - group_map[0, 0]
    group_scores = torch.tensor([[[0.7, 0.2], [0.1, 0.4]]])  # group 0 -> class 0, group 1 -> class 1
    scores = pixel_class_scores(group_map, group_scores)
    winner = [[0, 0, 1], [1, 1, 0]]
    for y in range(2):
        for x in range(3):
            torch.testing.assert_close(scores[0, :, y, x], group_scores[0, winner[y][x]])


def test_background_threshold_rule() -> None:
    pixel_scores = torch.tensor([[[[0.9, 0.5]], [[0.05, 0.3]]]])  # [1, K=2, 1, 2]: pixel maxima 0.9 and 0.5
    group_scores = torch.tensor([[[0.9, 0.05], [0.5, 0.3]]])  # the image's max group score is 0.9
    # threshold 0.95 > max affinity 0.9: the limit is 0.9, pixel 0 (0.9) stays, pixel 1 (0.5) is background
    assert threshold_background(pixel_scores, group_scores, 0.95).tolist() == [[[[0.0, 1.0]]]]
    # threshold 0.4 < 0.9: only scores below 0.4 are background
    assert threshold_background(pixel_scores, group_scores, 0.4).tolist() == [[[[0.0, 0.0]]]]
    assert threshold_background(pixel_scores, group_scores, 0.6).tolist() == [[[[0.0, 1.0]]]]


# --- the segmenter ---------------------------------------------------------------------------------------------


def _pixels(height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(5))


def test_segmenter_protocol_labels_and_official_scores(model: GroupViT) -> None:
    segmenter = GroupViTSegmenter(model)
    assert isinstance(segmenter, Segmenter)
    images = _pixels()
    concepts = ConceptSet.from_names("cow, grass, sky")
    output = segmenter.segment(images, concepts)
    assert output.logits.shape == (2, 3, 64, 64)
    assert output.label_names == ("cow", "grass", "sky")
    # Recompute the official scores from the parts: soft map, argmax group, top-5 rule on the single prompt.
    with torch.no_grad():
        normalized = (images - torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).reshape(1, 3, 1, 1)
        image_emb, group_emb, vision = model.encode_image_and_groups(normalized)
        text = model.encode_text([f"a photo of a {name}." for name in ("cow", "grass", "sky")])
        group_scores = group_class_scores(group_emb, image_emb, text, model.clamped_logit_scale())
        expected = pixel_class_scores(pixel_group_map(vision.assignments(), (8, 8), (64, 64)), group_scores)
    torch.testing.assert_close(output.logits, expected.clamp_min(1e-8).log(), atol=1e-5, rtol=1e-5)

    thresholded = segmenter.segment(images, ConceptSet.from_names("cow, sky", background=BackgroundThreshold()))
    assert thresholded.label_names == ("background", "cow", "sky")
    assert set(thresholded.logits[:, 0].exp().round(decimals=4).unique().tolist()) <= {0.0, 1.0}
    never = segmenter.segment(images, ConceptSet.from_names("cow, sky", background=BackgroundThreshold(threshold=0)))
    assert bool((never.labels != 0).all())
    with_class = segmenter.segment(
        images, ConceptSet.from_names("cow, sky", background=BackgroundClass(names=("background", "wall")))
    )
    assert with_class.logits.shape == (2, 3, 64, 64)
    assert with_class.label_names == ("background", "cow", "sky")


def test_segmenter_sliding_windows_other_sizes_and_refusals(model: GroupViT) -> None:
    preset = ProtocolPreset(name="g", mode="slide", window=SlidingWindow(crop=64, stride=32))
    output = GroupViTSegmenter(model, preset).segment(_pixels(70, 100), ConceptSet.from_names("cow, sky"))
    assert output.logits.shape == (2, 2, 70, 100)
    # Whole-image inference at a size that is not a multiple of the patch (padded, then cut).
    whole = GroupViTSegmenter(model).segment(_pixels(50, 61), ConceptSet.from_names("cow, sky"))
    assert whole.logits.shape == (2, 2, 50, 61)
    assert bool(torch.isfinite(whole.logits).all())
    segmenter = GroupViTSegmenter(model)
    with pytest.raises(ValueError, match="score"):
        segmenter.segment(_pixels(), ConceptSet.from_names("cow", background=BackgroundThreshold(score="similarity")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmenter.segment(_pixels() * 255, ConceptSet.from_names("cow"))
    with pytest.raises(ValueError, match="top_k"):
        GroupViTSegmenter(model, top_k=0)
    model.train()  # segmenting a model in training runs it in eval mode and hands it back in training mode
    try:
        again = GroupViTSegmenter(model).segment(_pixels(50, 61), ConceptSet.from_names("cow, sky"))
        assert model.training
    finally:
        model.eval()
    torch.testing.assert_close(again.logits, whole.logits)


# --- configs and files -----------------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"vision\.embed_dm: unknown field"):
        GroupViTConfig.parse({"vision": {"embed_dm": 64}})
    with pytest.raises(ConfigError, match="num_output_groups"):
        GroupViTVisionConfig.parse({"depths": [2, 2], "num_group_tokens": [8, 0], "num_output_groups": [8, 4]})
    with pytest.raises(ConfigError, match="num_group_tokens"):
        GroupViTVisionConfig.parse({"depths": [2, 2], "num_group_tokens": [8, 4], "num_output_groups": [8]})
    with pytest.raises(ConfigError, match="num_heads"):
        GroupViTVisionConfig.parse({"embed_dim": 64, "num_heads": 6})
    with pytest.raises(ConfigError, match="patch_size"):
        GroupViTVisionConfig.parse({"image_size": 60, "patch_size": 16})
    with pytest.raises(ConfigError, match=r"text\.heads"):
        GroupViTConfig.parse({"text": {"heads": 0}})


def test_official_config_values() -> None:
    vision = GROUPVIT_GCC_YFCC_CONFIG.vision
    assert (vision.image_size, vision.patch_size, vision.embed_dim, vision.num_heads) == (224, 16, 384, 6)
    assert (vision.depths, vision.num_group_tokens, vision.num_output_groups) == ((6, 3, 3), (64, 8, 0), (64, 8))
    text = GROUPVIT_GCC_YFCC_CONFIG.text
    assert (text.layers, text.width, text.context_length, text.vocab_size) == (12, 256, 77, 49408)
    assert (GROUPVIT_GCC_YFCC_CONFIG.projection_dim, GROUPVIT_GCC_YFCC_CONFIG.projection_hidden_dim) == (256, 4096)
    assert GroupViTConfig.from_json(GROUPVIT_TINY_CONFIG.to_json()) == GROUPVIT_TINY_CONFIG


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = GroupViT(GROUPVIT_TINY_CONFIG).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the buffers must travel too
        model.image_projector.bn.running_mean.normal_()
        model.image_projector.bn.running_var.uniform_(0.5, 1.5)
    folder = save_groupvit(model, tmp_path / "groupvit")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_groupvit(folder)
    assert loaded.config == model.config
    assert not loaded.training
    images, ids = _images(), model.tokenize(["cow", "sky"])
    with torch.no_grad():
        for before, after in zip(model(images, ids), loaded(images, ids), strict=True):
            assert torch.equal(before, after)
        assert torch.equal(model.pixel_group_map(images), loaded.pixel_group_map(images))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="save_groupvit"):
        load_groupvit(folder)
    with pytest.raises(FileNotFoundError, match="hf-hub"):
        load_groupvit(tmp_path / "missing")
