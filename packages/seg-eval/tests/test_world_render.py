"""render(): determinism, shapes, and the consistency of every kind of ground truth."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from seg_core import ConfigError
from seg_eval.world import (
    IGNORE_LABEL,
    NUM_CLASSES,
    STUFF_NAMES,
    WorldConfig,
    WorldSample,
    class_by_name,
    render,
)
from seg_eval.world.noise import noise_bank
from seg_eval.world.sample import mask_bbox
from seg_eval.world.textures import stuff_fields
from seg_eval.world.things import sprite

FIRST_THING_ID = len(STUFF_NAMES)


def _digest(sample: WorldSample) -> str:
    digest = hashlib.sha256()
    for array in (sample.image, sample.semantic, sample.instance_map):
        digest.update(array.tobytes())
    digest.update(sample.caption.encode())
    return digest.hexdigest()


def test_same_config_same_bytes_even_with_cold_caches() -> None:
    config = WorldConfig(seed=3)
    before = [_digest(render(config, "pairs", index)) for index in range(6)]
    for cache in (noise_bank, stuff_fields, sprite):
        cache.cache_clear()
    after = [_digest(render(config, "pairs", index)) for index in reversed(range(6))]
    assert before == after[::-1]


def test_seed_split_and_index_each_change_the_image() -> None:
    base = render(WorldConfig(seed=0), "val", 0)
    assert not np.array_equal(base.image, render(WorldConfig(seed=1), "val", 0).image)
    assert not np.array_equal(base.image, render(WorldConfig(seed=0), "test", 0).image)
    assert not np.array_equal(base.image, render(WorldConfig(seed=0), "val", 1).image)


def test_generator_output_is_pinned() -> None:
    """If this fails the world changed: bump GENERATOR_VERSION (seg_eval/world/io.py) and update the digest."""
    sample = render(WorldConfig(), "val", 0)
    labels = hashlib.sha256(sample.semantic.tobytes() + sample.instance_map.tobytes()).hexdigest()[:16]
    assert (sample.caption, [i.name for i in sample.instances], labels) == PINNED_VAL_0


PINNED_VAL_0 = (
    "look at a fish and an umbrella in the sand, with water in the background!",
    ["umbrella", "fish"],
    "3ecbb608d427f0d0",
)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_and_dtypes(size: int) -> None:
    sample = render(WorldConfig(size=size), "test", 5)
    assert sample.image.shape == (size, size, 3)
    assert sample.image.dtype == np.uint8
    assert sample.semantic.shape == (size, size)
    assert sample.semantic.dtype == np.uint8
    assert sample.instance_map.shape == (size, size)
    assert sample.instance_map.dtype == np.uint8
    assert sample.stuff_map is not None
    assert sample.stuff_map.shape == (size, size)
    assert sample.image.flags.c_contiguous
    assert int(sample.semantic.max()) < NUM_CLASSES


def _check_consistency(sample: WorldSample) -> None:
    semantic, instance_map = sample.semantic, sample.instance_map
    void = semantic == IGNORE_LABEL
    assert np.array_equal(void, instance_map == IGNORE_LABEL)
    thing_pixels = (semantic >= FIRST_THING_ID) & ~void
    assert np.array_equal(thing_pixels, (instance_map > 0) & ~void), "thing pixels are exactly instance pixels"
    assert sample.stuff_map is not None
    stuff_pixels = ~thing_pixels & ~void
    assert np.array_equal(semantic[stuff_pixels], sample.stuff_map[stuff_pixels])
    for number, instance in enumerate(sample.instances, start=1):
        assert instance.number == number
        own = instance_map == number
        assert np.all(semantic[own] == instance.class_id), "each instance's pixels carry its class"
        assert instance.area == int(own.sum())
        assert instance.bbox == mask_bbox(own)
        assert instance.context_id is not None
        assert instance.context_id < FIRST_THING_ID
    counts = np.bincount(semantic[~void], minlength=NUM_CLASSES)
    assert sample.labels == {c: int(n) for c, n in enumerate(counts) if n}


def test_instances_semantic_and_labels_agree() -> None:
    config = WorldConfig()
    for index in range(60):
        sample = render(config, "val", index)
        _check_consistency(sample)
        # Instances hidden below the minimum visible area are dropped, not kept as slivers.
        assert all(i.area >= config.min_visible_area * config.size**2 for i in sample.instances)


def test_void_border_is_a_band_around_things() -> None:
    config = WorldConfig(void_border=1)
    for index in range(20):
        sample = render(config, "val", index)
        _check_consistency(sample)
        void = sample.semantic == IGNORE_LABEL
        assert void.any() == bool(sample.instances)
        # No labelled thing pixel touches a labelled pixel of anything else: the band separates them.
        labels = sample.instance_map.astype(np.int16)
        for first, second in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
            both_labelled = (first != IGNORE_LABEL) & (second != IGNORE_LABEL)
            assert not np.any(both_labelled & (first != second))
    plain = render(WorldConfig(), "val", 0)
    assert not (plain.semantic == IGNORE_LABEL).any()


def test_typical_flag_matches_the_class_table() -> None:
    for index in range(30):
        for instance in render(WorldConfig(), "val", index).instances:
            typical_stuff = class_by_name(instance.name).typical_stuff
            assert typical_stuff is not None
            assert instance.typical == (instance.context_id == class_by_name(typical_stuff).id)


def test_held_out_classes_never_appear_in_training_splits() -> None:
    config = WorldConfig(held_out=("fish", "kite"), p_noise=0.5)
    held = {class_by_name("fish").id, class_by_name("kite").id}
    seen_in_val = set()
    for index in range(150):
        for split in ("pairs", "index"):
            sample = render(config, split, index)
            assert not held & set(np.unique(sample.semantic).tolist())
            assert not held & set(sample.mentioned), sample.caption
            assert "fish" not in sample.caption
            assert "kite" not in sample.caption
        seen_in_val |= held & set(np.unique(render(config, "val", index).semantic).tolist())
    assert seen_in_val == held


def test_bad_split_and_index_are_errors() -> None:
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        render(WorldConfig(), "train", 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="index must be >= 0"):
        render(WorldConfig(), "val", -1)


def test_hidden_instances_are_dropped_not_kept_as_slivers() -> None:
    crowded = WorldConfig(min_things=3, max_things=3)
    kept = [len(render(crowded, "val", index).instances) for index in range(120)]
    assert 3 in kept
    assert min(kept) < 3, "some of three overlapping things end up too hidden to keep"
    keep_all = WorldConfig(min_things=3, max_things=3, min_visible=0.0, min_visible_area=0.0)
    assert all(len(render(keep_all, "val", index).instances) == 3 for index in range(120))
