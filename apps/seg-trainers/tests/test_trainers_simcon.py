"""The (MV-)SimCon recipe on a tiny GroupViT and PGSeg: each objective trains and writes a loadable folder, views are
a pure function of the batch index, the threshold follows the step schedule, resume is exact, typos are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seg_core import ConfigError, ScheduleConfig, TrainConfig
from seg_eval.world import WorldConfig
from seg_models.groupvit import GROUPVIT_TINY_CONFIG, load_groupvit
from seg_models.pgseg import PGSEG_TINY_CONFIG, load_pgseg
from seg_trainers.simcon import SimConLossSettings, SimConRecipe, WorldViewBatches, train_simcon


def _recipe(
    steps: int, kind: str = "mv-simcon", *, pgseg: bool = False, checkpoint_every: int | None = None
) -> SimConRecipe:
    return SimConRecipe(
        world=WorldConfig(seed=11),
        model=PGSEG_TINY_CONFIG if pgseg else GROUPVIT_TINY_CONFIG,
        batch_size=8,
        workers=0,
        loss=SimConLossSettings(kind=kind, threshold=0.9),  # type: ignore[arg-type]
        train=TrainConfig(
            max_steps=steps,
            lr=2e-3,
            schedule=ScheduleConfig(kind="constant", warmup_steps=1),
            log_every=1,
            progress=False,
            tensorboard=False,
            checkpoint_every=checkpoint_every,
        ),
    )


@pytest.mark.parametrize("kind", ["infonce", "simcon", "mv-simcon"])
def test_each_objective_trains_and_exports_a_groupvit(tmp_path: Path, kind: str) -> None:
    run = train_simcon(_recipe(3, kind), tmp_path / kind)
    assert run.result.final_step == 3
    history = run.result.history
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in history)
    assert ("view_loss" in history[-1]) == (kind == "mv-simcon")
    model = load_groupvit(run.model_dir)
    assert model.config == GROUPVIT_TINY_CONFIG
    assert not any(key.startswith("predictor") for key in model.state_dict())


def test_mv_simcon_with_pgseg_adds_the_pg_losses(tmp_path: Path) -> None:
    recipe = _recipe(2, pgseg=True)
    recipe = recipe.model_copy(update={"pg": recipe.pg.model_copy(update={"start": 0.0})})
    run = train_simcon(recipe, tmp_path / "pg")
    assert "pg_image_0" in run.result.history[-1]
    assert load_pgseg(run.model_dir).pg_config == PGSEG_TINY_CONFIG


def test_views_are_a_pure_function_of_the_batch_index() -> None:
    from seg_models.groupvit import groupvit_tokenizer

    recipe = _recipe(1)
    make = lambda: WorldViewBatches(  # noqa: E731
        recipe.world,
        4,
        groupvit_tokenizer(32),
        recipe.groupvit_config().normalization,
        views=recipe.views,
        seed=0,
    )
    a, b = make()[3], make()[3]
    torch.testing.assert_close(a["view1"], b["view1"])
    torch.testing.assert_close(a["view2"], b["view2"])
    assert not torch.allclose(a["view1"], a["view2"])  # two different views of the same images
    assert a["view1"].shape == (4, 3, 64, 64)


def test_threshold_follows_the_step_schedule() -> None:
    settings = SimConLossSettings()
    assert settings.threshold_at(0, 30) == pytest.approx(0.95)
    assert settings.threshold_at(2, 30) == pytest.approx(0.90)
    assert settings.threshold_at(15, 30) == pytest.approx(0.85)


def test_resume_is_exact(tmp_path: Path) -> None:
    straight = train_simcon(_recipe(4), tmp_path / "straight")
    train_simcon(_recipe(2, checkpoint_every=2), tmp_path / "split")
    resumed = train_simcon(_recipe(4, checkpoint_every=2), tmp_path / "split", resume=True)
    assert [r["loss"] for r in straight.result.history[2:]] == pytest.approx(
        [r["loss"] for r in resumed.result.history]
    )


def test_recipe_typo_is_named(tmp_path: Path) -> None:
    config = tmp_path / "simcon.yaml"
    config.write_text("method: simcon\nloss:\n  kind: mv-simcon\n  treshold: 0.9\n")
    with pytest.raises(ConfigError, match="treshold"):
        SimConRecipe.load(config)


def test_fine_tunes_a_trained_groupvit_on_the_batches_after_its_own(tmp_path: Path) -> None:
    from seg_models.groupvit import groupvit_tokenizer
    from seg_trainers.groupvit import initial_grouping_model

    base = train_simcon(_recipe(2, "infonce"), tmp_path / "base")
    recipe = _recipe(1, "simcon").model_copy(update={"init_from": str(base.model_dir), "data_offset": 2})
    start = initial_grouping_model(recipe.model, recipe.train.seed, recipe.init_from)
    trained = load_groupvit(base.model_dir).state_dict()
    for name in ("visual.patch_embed.weight", "text.token_embedding.weight", "logit_scale"):
        torch.testing.assert_close(start.state_dict()[name], trained[name].float())
    fresh = initial_grouping_model(recipe.model, recipe.train.seed, None)
    assert not torch.allclose(fresh.state_dict()["visual.patch_embed.weight"], trained["visual.patch_embed.weight"])

    def batches(offset: int) -> WorldViewBatches:
        normalization = recipe.groupvit_config().normalization
        tokenizer = groupvit_tokenizer(recipe.groupvit_config().text.context_length)
        return WorldViewBatches(recipe.world, 8, tokenizer, normalization, views=recipe.views, seed=0, offset=offset)

    shifted, plain = batches(2)[0], batches(0)[2]
    assert int(shifted["batch_index"]) == 0  # the step of this run: the λ schedule counts from here
    torch.testing.assert_close(shifted["tokens"], plain["tokens"])  # the same pairs as the base's batch 2
    assert not torch.equal(shifted["tokens"], batches(0)[0]["tokens"])
    run = train_simcon(recipe, tmp_path / "tuned")
    assert run.result.final_step == 1
