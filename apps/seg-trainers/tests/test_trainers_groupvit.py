"""GroupViT and PGSeg recipes on a tiny model: the loss falls, the PG losses switch on at their start step with the
paper's weights, model folders load back, an interrupted PGSeg run resumes to the same weights and prototypes, and
recipe typos are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from seg_core import ConfigError, ScheduleConfig, TrainConfig
from seg_eval.world import WorldConfig
from seg_losses import pg_loss
from seg_models.groupvit import GROUPVIT_TINY_CONFIG, load_groupvit
from seg_models.pgseg import PGSEG_TINY_CONFIG, PGSeg, em_prototypes, init_prototypes, load_pgseg, momentum_update
from seg_trainers.groupvit import (
    GroupViTRecipe,
    PGLossSettings,
    PGSegRecipe,
    build_model,
    pgseg_loss_terms,
    pgseg_step,
    train_groupvit,
)


def _train(steps: int, *, checkpoint_every: int | None = None) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        lr=2e-3,
        weight_decay=0.05,
        schedule=ScheduleConfig(kind="constant", warmup_steps=1),
        log_every=1,
        progress=False,
        tensorboard=False,
        checkpoint_every=checkpoint_every,
    )


def _groupvit(steps: int) -> GroupViTRecipe:
    return GroupViTRecipe(
        world=WorldConfig(seed=11), model=GROUPVIT_TINY_CONFIG, batch_size=16, workers=0, train=_train(steps)
    )


def _pgseg(steps: int, start: float = 0.5, **train: int) -> PGSegRecipe:
    return PGSegRecipe(
        world=WorldConfig(seed=11),
        model=PGSEG_TINY_CONFIG,
        batch_size=8,
        workers=0,
        train=_train(steps, **train),
        pg=PGLossSettings(start=start),
    )


def test_groupvit_loss_falls_and_the_folder_loads_back(tmp_path: Path) -> None:
    run = train_groupvit(_groupvit(steps=20), tmp_path / "run")
    losses = [record["loss"] for record in run.result.history]
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    model = load_groupvit(run.model_dir)
    assert model.config == GROUPVIT_TINY_CONFIG
    assert (run.model_dir / "training.json").is_file()
    assert model.encode_text(["a photo of a cow."]).shape == (1, GROUPVIT_TINY_CONFIG.projection_dim)


def _batch(recipe: PGSegRecipe, model: PGSeg, index: int) -> dict[str, torch.Tensor]:
    from seg_models.groupvit import groupvit_tokenizer
    from seg_trainers.clip import WorldPairBatches

    tokenizer = groupvit_tokenizer(recipe.groupvit_config().text.context_length)
    pairs = WorldPairBatches(recipe.world, recipe.batch_size, tokenizer, recipe.groupvit_config().normalization)
    return pairs[index] | {"batch_index": torch.tensor(index)}


def test_pg_losses_switch_on_at_the_start_step_with_the_paper_weights() -> None:
    recipe = _pgseg(steps=4)
    model = build_model(recipe)
    assert isinstance(model, PGSeg)
    model.eval()  # no Gumbel noise, frozen BatchNorm statistics and prototypes: two forwards agree
    step = pgseg_step(recipe.pg, start_step=3)
    before = step(model, _batch(recipe, model, 2))
    after = step(model, _batch(recipe, model, 3))
    assert before.metrics is not None
    assert after.metrics is not None
    assert float(before.loss.detach()) == pytest.approx(before.metrics["info_nce"], abs=1e-5)
    image = sum(value for name, value in after.metrics.items() if name.startswith("pg_image_"))
    text = sum(value for name, value in after.metrics.items() if name.startswith("pg_text_"))
    assert image > 0
    assert text > 0
    expected = after.metrics["info_nce"] + 0.1 * image + 0.01 * text
    assert float(after.loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_pg_loss_terms_cover_each_enabled_unit() -> None:
    recipe = _pgseg(steps=1)
    model = build_model(recipe.model_copy(update={"model": PGSEG_TINY_CONFIG.model_copy(update={"text_npr": False})}))
    assert isinstance(model, PGSeg)
    batch = _batch(recipe, model, 0)
    terms = pgseg_loss_terms(model.training_forward(batch["images"], batch["tokens"]), recipe.pg)
    assert sorted(terms) == ["kept_image_0", "kept_image_1", "pg_image_0", "pg_image_1"]
    terms["pg_image_0"].backward()
    assert model.visual.stage_list()[0].group_tokens is not None
    assert model.visual.stage_list()[0].group_tokens.grad is not None


def test_pgseg_resumes_to_the_same_weights_and_prototypes(tmp_path: Path) -> None:
    # start=0: the PG losses are on from the first step whatever max_steps is (the interrupted run is emulated by a
    # shorter one, and the start step is a fraction of max_steps).
    straight = train_groupvit(_pgseg(steps=4, start=0.0), tmp_path / "straight")
    train_groupvit(_pgseg(steps=2, start=0.0, checkpoint_every=2), tmp_path / "split")
    resumed = train_groupvit(_pgseg(steps=4, start=0.0, checkpoint_every=2), tmp_path / "split", resume=True)
    a, b = load_pgseg(straight.model_dir), load_pgseg(resumed.model_dir)
    for name in ("image_prototypes_0", "text_prototypes_1", "visual.patch_embed.weight"):
        torch.testing.assert_close(a.state_dict()[name], b.state_dict()[name])


def test_recipe_typos_and_wrong_methods_are_named(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("method: pgseg\npg:\n  image_wieght: 0.2\n")
    with pytest.raises(ConfigError, match="image_wieght"):
        PGSegRecipe.load(typo)
    other = tmp_path / "reco.yaml"
    other.write_text("method: reco\n")
    with pytest.raises(ConfigError, match="method"):
        GroupViTRecipe.load(other)


def test_npr_step_end_to_end() -> None:
    generator = torch.Generator().manual_seed(6)
    buffer = init_prototypes(4, 8, generator=generator)
    tokens = torch.randn(2, 16, 8, generator=generator, requires_grad=True)
    groups = torch.randn(2, 4, 8, generator=generator, requires_grad=True)
    em = em_prototypes(tokens, buffer)
    result = pg_loss(groups, em.prototypes, reject_threshold=0.1, rejection="minmax")
    reformed = tokens + em.reconstruct()  # I-NPR: S = S + V'; the gradient reaches the tokens directly only
    torch.autograd.backward(result.loss + reformed.square().mean())
    assert groups.grad is not None
    assert torch.isfinite(groups.grad).all()
    assert tokens.grad is not None
    assert torch.allclose(tokens.grad, 2 * reformed.detach() / reformed.numel())
    momentum_update(buffer, em.prototypes)
    assert torch.allclose(buffer.norm(dim=-1), torch.ones(4))


def test_pgseg_starts_from_a_trained_groupvit_and_sees_new_batches(tmp_path: Path) -> None:
    base = train_groupvit(_groupvit(steps=2).model_copy(update={"batch_size": 4}), tmp_path / "base")
    recipe = _pgseg(steps=1).model_copy(update={"init_from": str(base.model_dir), "data_offset": 2})
    model = build_model(recipe)
    trained = load_groupvit(base.model_dir).state_dict()
    for name in ("visual.patch_embed.weight", "text.token_embedding.weight", "logit_scale"):
        torch.testing.assert_close(model.state_dict()[name], trained[name].float())
    from seg_trainers.groupvit import _IndexedBatches

    pairs = _IndexedBatches(_batch_source(recipe), offset=2)
    torch.testing.assert_close(pairs[0]["images"], _batch_source(recipe)[2]["images"])
    other = _groupvit(steps=1).model_copy(
        update={
            "init_from": str(base.model_dir),
            "model": GROUPVIT_TINY_CONFIG.model_copy(update={"projection_dim": 32}),
        }
    )
    with pytest.raises(ConfigError, match="init_from"):
        build_model(other)


def _batch_source(recipe: GroupViTRecipe) -> Any:
    from seg_models.groupvit import groupvit_tokenizer
    from seg_trainers.clip import WorldPairBatches

    tokenizer = groupvit_tokenizer(recipe.groupvit_config().text.context_length)
    return WorldPairBatches(recipe.world, recipe.batch_size, tokenizer, recipe.groupvit_config().normalization)
