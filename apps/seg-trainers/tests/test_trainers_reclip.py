"""The ReCLIP++ recipe on a tiny random ViT CLIP and a few world images: both stages end to end into loadable
folders, a frozen CLIP, hypotheses against a naive re-computation, exact resume, the cached hypotheses, the
whole-image ablation and the recipe's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from seg_core import IMAGENET_MEAN_STD, ConceptSet, ConfigError, NoBackground, ScheduleConfig, TrainConfig
from seg_eval.world import WorldConfig, render
from seg_eval.world.classes import CLASSES, class_by_name
from seg_models.clip import ClipModel, load_clip, register_model_config
from seg_models.deeplab import deeplab_preset
from seg_models.inference import normalize_images
from seg_models.reclip import (
    ReCLIPRectifier,
    ReCLIPSegmenter,
    ReCLIPStudent,
    load_reclip,
    load_reclip_student,
    read_reclip_info,
)
from seg_trainers import reclip as reclip_module
from seg_trainers.reclip import (
    HYPOTHESES_FILE,
    HypothesisSet,
    ReCLIPRecipe,
    TrainingBatches,
    distill_step,
    hypothesis_stats,
    query_embeddings,
    rectify_step,
    render_images,
    train_reclip,
)

CLIP_NAME = "seg-test-reclip-trainer-tiny"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
NAMES = ("cow", "grass", "sky", "water")
TEMPLATES = ("a photo of a {}.",)
TINY_DEEPLAB = {
    "aspp_channels": 8,
    "low_level_channels": 8,
    "decoder_channels": 8,
    "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]},
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(register_model_config(CLIP_NAME, TINY_CLIP_CONFIG))


def _train(steps: int, *, checkpoint_every: int | None = None) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        lr=0.05,
        schedule=ScheduleConfig(kind="constant"),
        log_every=1,
        progress=False,
        tensorboard=False,
        checkpoint_every=checkpoint_every,
    )


def _recipe(**updates: Any) -> ReCLIPRecipe:
    fields: dict[str, Any] = {
        "world": WorldConfig(seed=3),
        "num_images": 6,
        "class_names": NAMES,
        "templates": TEMPLATES,
        "model": {"n_ctx": 4},
        "rectify_train": _train(2),
        "rectify_batch_size": 3,
        "distill_train": _train(2),
        "distill_batch_size": 2,
        "deeplab_overrides": TINY_DEEPLAB,
        "embed_batch_size": 4,
    }
    return ReCLIPRecipe(**(fields | updates))


def _naive_crop_hypotheses(clip: ClipModel, recipe: ReCLIPRecipe) -> torch.Tensor:
    """Every 32-px window at stride 16 of each 64-px image (nine), encoded alone; the set of top-1 classes."""
    text = F.normalize(query_embeddings(clip, NAMES, TEMPLATES), dim=-1)
    norm = clip.normalization
    rows = []
    for index in range(recipe.num_images):
        image = torch.from_numpy(render(recipe.world, recipe.split, index).image.copy()).permute(2, 0, 1)
        pixels = normalize_images(image[None].float() / 255.0, norm.mean, norm.std)
        found = torch.zeros(len(NAMES), dtype=torch.bool)
        for top in (0, 16, 32):
            for left in (0, 16, 32):
                with torch.no_grad():
                    embedding = clip.encode_image(pixels[:, :, top : top + 32, left : left + 32])
                found[int((F.normalize(embedding, dim=-1) @ text.t()).argmax())] = True
        rows.append(found)
    return torch.stack(rows)


def _trainable(rectifier: ReCLIPRectifier) -> dict[str, torch.Tensor]:
    return {
        key: value.detach().clone() for key, value in rectifier.own_state_dict().items() if "num_batches" not in key
    }


def test_both_stages_end_to_end_with_a_frozen_clip(tmp_path: Path) -> None:
    clip = _clip()
    before = {key: value.clone() for key, value in clip.state_dict().items()}
    recipe = _recipe()
    torch.manual_seed(recipe.rectify_train.seed)
    initial = _trainable(ReCLIPRectifier.from_clip(clip, recipe.reclip_config(), templates=TEMPLATES))

    run = train_reclip(recipe, clip, tmp_path, clip_source="random")

    # CLIP is bit-identical; what the rectifier adds did change.
    after = clip.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(before[key], after[key]) for key in before)
    rectifier = load_reclip(run.rectifier_dir, clip)
    trained = _trainable(rectifier)
    assert torch.equal(trained["query_embeddings"], initial["query_embeddings"].half().float())
    for key in ("reference_prompt.ctx", "pe_proj.weight", "decoder.0.weight"):
        assert not torch.allclose(trained[key], initial[key], atol=1e-3), key

    # Hypotheses: the recipe's equal a naive crop-by-crop computation; the diagnostic matches a count by hand.
    cached = HypothesisSet.load(tmp_path / HYPOTHESES_FILE)
    assert torch.equal(cached.labels, _naive_crop_hypotheses(clip, recipe))
    present = torch.tensor(
        [
            [
                class_by_name(name).id in set(render(recipe.world, recipe.split, i).semantic.flatten().tolist())
                for name in NAMES
            ]
            for i in range(recipe.num_images)
        ]
    )
    hits = int((cached.labels & present).sum())
    assert run.hypotheses["precision"] == pytest.approx(hits / int(cached.labels.sum()))
    assert run.hypotheses["recall"] == pytest.approx(hits / int(present.sum()))
    assert json.loads((tmp_path / "hypotheses.json").read_text())["stats"]["num_images"] == 6

    # Both folders load and segment with the trained class list (any order).
    assert run.model_dir == tmp_path / "model"
    assert run.rectify is not None
    assert run.rectify.final_step == 2
    assert run.distill is not None
    assert [r["step"] for r in run.distill.history] == [1, 2]
    assert {"mask", "feat", "text"} <= set(run.distill.last_record)
    assert set(run.seconds) == {"render", "hypotheses", "rectify", "pseudo-label", "distill"}
    for folder, kind in ((run.rectifier_dir, "rectifier"), (run.model_dir, "student")):
        info = read_reclip_info(folder)
        assert info["kind"] == kind
        assert info["config"]["class_names"] == list(NAMES)
        training = json.loads((folder / "training.json").read_text())
        assert training["method"] == "reclip"
        assert training["steps"] == 2
    images = torch.stack([torch.from_numpy(render(recipe.world, "val", i).image.copy()) for i in range(2)])
    images = images.permute(0, 3, 1, 2).float() / 255.0
    concepts = ConceptSet(names=tuple(reversed(NAMES)), background=NoBackground())
    student = load_reclip_student(run.model_dir)
    for model in (rectifier, student):
        output = ReCLIPSegmenter(model).segment(images, concepts)
        assert output.logits.shape == (2, 4, 64, 64)
    assert student.normalization == clip.normalization  # student_normalization None: the CLIP's

    # The pseudo-labels are the exported rectifier's argmax at the image size.
    with torch.no_grad():
        pixels, _ = render_images(recipe.world, recipe.split, recipe.num_images, NAMES)
        norm = clip.normalization
        expected = ReCLIPSegmenter(rectifier).logit_maps(normalize_images(pixels.float() / 255.0, norm.mean, norm.std))
    with np.load(tmp_path / "pseudo_labels.npz") as data:
        labels = torch.from_numpy(data["labels"])
    assert torch.equal(labels.long(), expected.argmax(dim=1))


def test_rectification_resumes_exactly_and_reuses_its_hypotheses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = _clip()
    straight = train_reclip(
        _recipe(rectify_train=_train(4)), clip, tmp_path / "straight", clip_source="random", stages=("rectify",)
    )
    first = train_reclip(
        _recipe(rectify_train=_train(2, checkpoint_every=2)),
        clip,
        tmp_path / "split",
        clip_source="random",
        stages=("rectify",),
    )
    assert first.model_dir is None  # distillation is on but was not run

    def recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached hypotheses must be reused")

    monkeypatch.setattr(reclip_module, "multi_label_hypotheses", recompute)
    resumed = train_reclip(
        _recipe(rectify_train=_train(4, checkpoint_every=2)),
        clip,
        tmp_path / "split",
        clip_source="random",
        stages=("rectify",),
        resume=True,
    )
    assert straight.rectify is not None
    assert resumed.rectify is not None
    assert [r["step"] for r in resumed.rectify.history] == [3, 4]
    assert [r["loss"] for r in straight.rectify.history[2:]] == pytest.approx(
        [r["loss"] for r in resumed.rectify.history], rel=1e-6, abs=1e-7
    )
    a = load_reclip(straight.rectifier_dir, clip).own_state_dict()
    b = load_reclip(resumed.rectifier_dir, clip).own_state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)

    # A recipe that changes what the hypotheses depend on is refused, naming the field.
    with pytest.raises(ConfigError, match="crop_ratio"):
        train_reclip(_recipe(crop_ratio=0.25), clip, tmp_path / "split", clip_source="random", stages=("rectify",))


def test_whole_image_hypotheses_without_distillation(tmp_path: Path) -> None:
    clip = _clip()
    recipe = _recipe(hypotheses="whole-image", whole_image_top_k=2, distill=False)
    run = train_reclip(recipe, clip, tmp_path, clip_source="random")
    cached = HypothesisSet.load(tmp_path / HYPOTHESES_FILE)
    assert cached.labels.sum(dim=1).tolist() == [2] * 6
    # The two best classes of each whole image, computed here.
    norm = clip.normalization
    pixels, _ = render_images(recipe.world, recipe.split, 6, NAMES)
    with torch.no_grad():
        embedding = clip.encode_image(normalize_images(pixels.float() / 255.0, norm.mean, norm.std))
    scores = F.normalize(embedding, dim=-1) @ F.normalize(query_embeddings(clip, NAMES, TEMPLATES), dim=-1).t()
    expected = torch.zeros_like(cached.labels).scatter_(1, scores.topk(2, dim=1).indices, True)
    assert torch.equal(cached.labels, expected)
    # Without distillation the model folder is the rectifier.
    assert run.model_dir == tmp_path / "model"
    assert run.distill is None
    assert read_reclip_info(run.model_dir)["kind"] == "rectifier"
    assert not (tmp_path / "distill").exists()
    with pytest.raises(ConfigError, match="distill"):
        train_reclip(recipe, clip, tmp_path, clip_source="random", stages=("distill",))


def test_training_batches_are_a_function_of_their_index() -> None:
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    hypotheses = torch.rand(5, 4) > 0.5
    labels = torch.full((5, 16, 16), 3, dtype=torch.uint8)
    augment = ReCLIPRecipe().augment.model_copy(update={"crop_size": 16})
    batches = TrainingBatches(images, hypotheses, augment, batch_size=3, seed=7, labels=labels)
    first, again, other = batches.batch(2), batches.batch(2), batches.batch(3)
    assert set(first) == {"pixels", "hypotheses", "noise_seed", "labels"}
    assert first["pixels"].shape == (3, 3, 16, 16)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["pixels"], other["pixels"])
    assert int(first["noise_seed"]) != int(other["noise_seed"])
    assert set(torch.unique(first["labels"]).tolist()) <= {3, 255}
    assert float(first["pixels"].min()) >= 0.0
    assert float(first["pixels"].max()) <= 1.0
    # Each row's hypotheses are its source image's: the picks are reproducible from the batch's generator.
    generator = torch.Generator().manual_seed(7 * 1_000_003 + 2)
    picks = torch.randint(5, (3,), generator=generator)
    assert torch.equal(first["hypotheses"], hypotheses[picks])
    assert next(iter(batches(3)))["noise_seed"] == other["noise_seed"]


def _naive_eq7(
    features: torch.Tensor, logits: torch.Tensor, text: torch.Tensor, hypotheses: torch.Tensor, *, seed: int, tau: float
) -> torch.Tensor:
    """Eq. 5 (hard Gumbel argmax, forward value) and Eq. 7 (masked average, cosine, CE / tau), image by image."""
    uniform = torch.rand(logits.shape, generator=torch.Generator().manual_seed(seed))
    noisy = logits + -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
    masks = F.one_hot(noisy.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).float()
    text_unit = text / text.norm(dim=-1, keepdim=True)
    per_image = []
    for b in range(logits.shape[0]):
        terms = []
        for k in hypotheses[b].nonzero().flatten().tolist():
            area = masks[b, k].sum()
            pooled = (masks[b, k] * features[b]).sum(dim=(1, 2)) / area if area > 0 else features.new_zeros(16)
            norm = pooled.norm()
            pooled = pooled / norm if norm > 0 else pooled
            terms.append(-torch.log_softmax(pooled @ text_unit.t() / tau, dim=0)[k])
        if terms:
            per_image.append(torch.stack(terms).mean())
    return torch.stack(per_image).mean()


def test_steps_compute_eqs_5_to_10_as_written() -> None:
    """The two step functions against a naive implementation of the equations on the same batch."""
    clip = _clip()
    recipe = _recipe(model={"n_ctx": 4, "logit_scale": 20.0})
    config = recipe.reclip_config()
    torch.manual_seed(1)
    teacher = ReCLIPRectifier.from_clip(clip, config, templates=TEMPLATES).eval()
    text = query_embeddings(clip, NAMES, TEMPLATES)
    pixels, _ = render_images(recipe.world, recipe.split, 4, NAMES)
    hypotheses = torch.tensor([[True, True, False, False], [False, True, True, True]] * 2)
    labels = torch.randint(0, 4, (4, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    batch = TrainingBatches(pixels, hypotheses, recipe.augment, batch_size=2, seed=0, labels=labels).batch(0)
    seed = int(batch["noise_seed"])
    norm = clip.normalization
    clip_images = (batch["pixels"] - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)

    rectified = rectify_step(text, config, norm, tau=0.05)(teacher, batch)
    with torch.no_grad():
        output = teacher(clip_images)
        expected = _naive_eq7(output.features, output.logits * 20.0, text, batch["hypotheses"], seed=seed, tau=0.05)
    torch.testing.assert_close(rectified.loss.detach(), expected, atol=1e-5, rtol=1e-5)

    deeplab = deeplab_preset("synthetic-64", 16, **TINY_DEEPLAB)
    student = ReCLIPStudent.from_rectifier(teacher, deeplab, normalization=IMAGENET_MEAN_STD).eval()
    distilled = distill_step(teacher, text, IMAGENET_MEAN_STD, tau=0.05, alpha=0.3, beta=0.7)(student, batch)
    mean, std = IMAGENET_MEAN_STD.mean, IMAGENET_MEAN_STD.std
    student_images = (batch["pixels"] - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = student(student_images)
        teacher_features = teacher.dense_features(clip_images)

        def up(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)

        mask = F.cross_entropy(up(out.logits), batch["labels"], ignore_index=255)
        feat = (up(teacher_features) - up(out.features)).abs().mean()
        text_loss = _naive_eq7(out.features, out.logits * 20.0, text, batch["hypotheses"], seed=seed, tau=0.05)
    torch.testing.assert_close(distilled.loss.detach(), mask + 0.3 * feat + 0.7 * text_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(distilled.metrics["feat"], feat, atol=1e-6, rtol=1e-5)


def test_hypothesis_stats_by_hand() -> None:
    labels = torch.tensor([[True, True, False], [False, False, True]])
    present = torch.tensor([[True, False, False], [False, True, True]])
    stats = hypothesis_stats(labels, present, ("a", "b", "c"))
    assert stats["precision"] == pytest.approx(2 / 3)
    assert stats["recall"] == pytest.approx(2 / 3)
    assert stats["f1"] == pytest.approx(2 / 3)
    assert stats["exact"] == 0.0
    assert stats["hypotheses_per_image"] == pytest.approx(1.5)
    assert stats["images_without_hypotheses"] == 0
    assert stats["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "images": 1, "predicted": 1}
    assert stats["per_class"]["a"]["precision"] == 1.0
    empty = hypothesis_stats(torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool), "abc")
    assert empty["precision"] is None
    assert empty["images_without_hypotheses"] == 1


def test_recipe_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="rectify_batchsize"):
        ReCLIPRecipe.parse({"method": "reclip", "rectify_batchsize": 3})
    with pytest.raises(ConfigError, match=r"model\.n_ctxx"):
        ReCLIPRecipe.parse({"method": "reclip", "model": {"n_ctxx": 4}})
    with pytest.raises(ConfigError, match="decoder_kernel"):
        ReCLIPRecipe.parse({"method": "reclip", "model": {"decoder_kernel": 4}})
    with pytest.raises(ConfigError, match="class_names"):
        ReCLIPRecipe.parse({"method": "reclip", "model": {"class_names": ["cow"]}})
    with pytest.raises(ConfigError, match="unicorn"):
        ReCLIPRecipe.parse({"method": "reclip", "class_names": ["cow", "unicorn"]})
    with pytest.raises(ValidationError, match="unicorn"):
        ReCLIPRecipe(class_names=("cow", "unicorn"))
    with pytest.raises(ConfigError, match="whole_image_top_k"):
        ReCLIPRecipe.parse({"hypotheses": "whole-image", "whole_image_top_k": None})
    with pytest.raises(ValueError, match="stages"):
        train_reclip(ReCLIPRecipe(), _clip(), "unused", clip_source="random", stages=("rectfy",))  # type: ignore[arg-type]
    recipe = ReCLIPRecipe.parse({"method": "reclip", "model": {"n_ctx": 8}})
    assert recipe.resolved_class_names() == tuple(c.name for c in CLASSES)
    assert len(recipe.resolved_class_names()) == 21
    assert recipe.reclip_config().n_ctx == 8
    assert recipe.reclip_config().logit_scale == 1.0  # the recipe's default survives other overrides
    assert ReCLIPRecipe(model={"logit_scale": 100.0}).reclip_config().logit_scale == 100.0
    assert recipe.reclip_config().class_names == recipe.resolved_class_names()
