"""The world's distributions over a few hundred images: priors, captions, areas, and the shift split."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pytest

from seg_eval.world import (
    CLASSES,
    STUFF_NAMES,
    THING_NAMES,
    AppearanceConfig,
    SplitName,
    WorldConfig,
    WorldSample,
    class_by_name,
    render,
)

NUM_IMAGES = 400
_CLASS_WORDS = {c.name for c in CLASSES} | {c.plural for c in CLASSES}


@cache
def _samples(config: WorldConfig, split: SplitName = "val", count: int = NUM_IMAGES) -> tuple[WorldSample, ...]:
    return tuple(render(config, split, index) for index in range(count))


def _thing_fraction(sample: WorldSample) -> float:
    return sum(instance.area for instance in sample.instances) / sample.semantic.size


def test_every_cow_stands_on_grass_when_the_prior_is_certain() -> None:
    config = WorldConfig(appearance=AppearanceConfig(p_typical=1.0))
    grass = class_by_name("grass").id
    cows = 0
    on_grass_pixels = []
    for sample in _samples(config):
        assert sample.stuff_map is not None
        for instance in sample.instances:
            if instance.name != "cow":
                continue
            cows += 1
            assert instance.context_id == grass
            assert instance.typical
            on_grass_pixels.append(np.mean(sample.stuff_map[sample.instance_map == instance.number] == grass))
    assert cows >= 30
    # The pixels behind a cow are mostly grass (a cow near a horizon may overlap the next region a little).
    assert np.mean(np.array(on_grass_pixels) >= 0.5) >= 0.9


def test_no_thing_sits_on_its_typical_stuff_when_the_prior_is_zero() -> None:
    config = WorldConfig(appearance=AppearanceConfig(p_typical=0.0))
    assert not any(instance.typical for sample in _samples(config, count=150) for instance in sample.instances)


def test_typical_fraction_follows_p_typical() -> None:
    instances = [instance for sample in _samples(WorldConfig()) for instance in sample.instances]
    assert len(instances) > 500
    assert np.mean([instance.typical for instance in instances]) == pytest.approx(0.7, abs=0.06)


def test_context_confound_shows_in_pixels() -> None:
    """With the default prior, sky pixels co-occur with planes and kites far more than with cows."""
    sky = class_by_name("sky").id
    with_sky: dict[str, int] = dict.fromkeys(THING_NAMES, 0)
    total: dict[str, int] = dict.fromkeys(THING_NAMES, 0)
    for sample in _samples(WorldConfig()):
        has_sky = sky in sample.labels
        for name in {instance.name for instance in sample.instances}:
            total[name] += 1
            with_sky[name] += has_sky
    rate = {name: with_sky[name] / max(total[name], 1) for name in THING_NAMES}
    assert rate["plane"] > rate["cow"] + 0.3


def test_noisy_caption_fraction_follows_p_noise() -> None:
    samples = _samples(WorldConfig())
    assert np.mean([sample.noisy for sample in samples]) == pytest.approx(0.1, abs=0.045)
    heavy = _samples(WorldConfig(p_noise=0.5), count=200)
    assert np.mean([sample.noisy for sample in heavy]) == pytest.approx(0.5, abs=0.11)
    kinds = {sample.caption_kind for sample in heavy}
    assert kinds == {"clean", "junk", "mismatch"}


def test_captions_name_what_is_visible_and_noise_does_not() -> None:
    stuff_ids = {class_by_name(name).id for name in STUFF_NAMES}
    counted = 0
    names_stuff = []
    for sample in _samples(WorldConfig()):
        present_things = {instance.class_id for instance in sample.instances}
        mentioned_things = set(sample.mentioned) - stuff_ids
        mentioned_stuff = set(sample.mentioned) & stuff_ids
        if sample.caption_kind == "clean":
            assert mentioned_things == present_things, sample.caption
            assert mentioned_stuff <= set(sample.labels), sample.caption
            for class_id in sample.mentioned:
                assert CLASSES[class_id].name in sample.caption or CLASSES[class_id].plural in sample.caption
            names_stuff.append(bool(mentioned_stuff))
            counted += bool(re.search(r"\b(two|three|some)\b", sample.caption))
        elif sample.caption_kind == "mismatch":
            assert mentioned_things, sample.caption
            assert not mentioned_things & present_things, sample.caption
        else:
            assert not sample.mentioned
            assert not set(re.findall(r"[a-z]+", sample.caption.lower())) & _CLASS_WORDS, sample.caption
    assert counted > 20, "several instances of a class are counted"
    assert np.mean(names_stuff) == pytest.approx(0.6, abs=0.07)


def test_things_cover_the_configured_area_with_one_to_three_instances() -> None:
    samples = _samples(WorldConfig())
    fractions = np.array([_thing_fraction(sample) for sample in samples])
    assert fractions.min() >= 0.15
    assert fractions.max() <= 0.5
    counts = np.bincount([len(sample.instances) for sample in samples], minlength=4)
    assert counts[0] == 0
    assert counts[1:].min() > 50
    assert len(counts) == 4
    stuff_counts = {len(np.unique(sample.stuff_map)) for sample in samples if sample.stuff_map is not None}
    assert stuff_counts == {1, 2, 3}


def test_every_class_appears() -> None:
    present = set()
    for sample in _samples(WorldConfig()):
        present |= set(sample.labels)
    assert present == {c.id for c in CLASSES}


def test_shift_split_differs_as_configured() -> None:
    config = WorldConfig()
    test, shift = _samples(config, "test", 200), _samples(config, "shift", 200)
    shift_fractions = np.array([_thing_fraction(sample) for sample in shift])
    low, high = config.shift.thing_area
    assert shift_fractions.min() >= low
    assert shift_fractions.max() <= high
    assert shift_fractions.mean() < np.mean([_thing_fraction(sample) for sample in test]) - 0.1
    assert np.mean([s.image.mean() for s in shift]) < 0.85 * np.mean([s.image.mean() for s in test])
    # Only the split's appearance changes: the class distribution stays.
    shift_things = {i.name for s in shift for i in s.instances}
    assert shift_things == set(THING_NAMES)


def test_texture_scale_raises_texture_frequency() -> None:
    def roughness(texture_scale: float) -> float:
        appearance = AppearanceConfig(texture_scale=texture_scale, pixel_noise=0.0)
        config = WorldConfig(appearance=appearance)
        values = []
        for index in range(60):
            sample = render(config, "val", index)
            image = sample.image.astype(np.float32)
            stuff = (sample.instance_map == 0)[:, 1:] & (sample.instance_map == 0)[:, :-1]
            values.append(np.abs(image[:, 1:] - image[:, :-1]).sum(axis=-1)[stuff].mean())
        return float(np.mean(values))

    assert roughness(2.0) > 1.2 * roughness(1.0)


def test_junk_templates_name_no_class() -> None:
    from seg_eval.world.captions import _JUNK

    for template in _JUNK:
        words = set(re.findall(r"[a-z]+", template.lower()))
        assert not words & _CLASS_WORDS, template
