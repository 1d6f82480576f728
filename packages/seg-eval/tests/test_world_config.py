"""WorldConfig validation and round trips, and the class table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg_core import ConfigError
from seg_eval.world import (
    CLASSES,
    IGNORE_LABEL,
    STUFF_NAMES,
    THING_NAMES,
    AppearanceConfig,
    WorldConfig,
    class_by_id,
    class_by_name,
    label_lookup,
    render,
    unseen_class_names,
)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_round_trips_through_files_and_renders_the_same(tmp_path: Path, suffix: str) -> None:
    config = WorldConfig(
        seed=7,
        size=48,
        p_noise=0.25,
        held_out=("kite", "fish"),
        appearance=AppearanceConfig(p_typical=0.9, thing_area=(0.2, 0.4)),
    )
    loaded = WorldConfig.load(config.save(tmp_path / f"world{suffix}"))
    assert loaded == config
    assert loaded.held_out == ("fish", "kite")  # normalised to class-table order
    first, second = render(config, "val", 3), render(loaded, "val", 3)
    assert np.array_equal(first.image, second.image)
    assert first.caption == second.caption


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"p_noise": 1.5}, "p_noise"),
        ({"size": 16}, "size"),
        ({"seed": -1}, "seed"),
        ({"appearance": {"thing_area": [0.5, 0.2]}}, "appearance.thing_area"),
        ({"shift": {"hue_jitter": 0.9}}, "shift.hue_jitter"),
        ({"shift": {"texture_scale": 0.0}}, "shift.texture_scale"),
        ({"stuff_regions": [0.5, 0.5, 0.5]}, "stuff_regions"),
        ({"held_out": ["unicorn"]}, "held_out"),
        ({"held_out": ["sky"]}, "held_out"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_config_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as error:
        WorldConfig.parse(data)
    assert field in str(error.value)


def test_cross_field_errors_name_both_fields() -> None:
    with pytest.raises(ConfigError, match=r"min_things \(3\) must not exceed max_things \(2\)"):
        WorldConfig.parse({"min_things": 3, "max_things": 2})
    with pytest.raises(ConfigError, match="cannot hold out every thing class"):
        WorldConfig.parse({"held_out": list(THING_NAMES)})


def test_class_table_is_consistent() -> None:
    assert len(THING_NAMES) >= 12
    assert len(STUFF_NAMES) >= 5
    assert [c.id for c in CLASSES] == list(range(len(CLASSES)))
    assert len({c.name for c in CLASSES}) == len(CLASSES)
    assert len({c.color for c in CLASSES}) == len(CLASSES), "palette colours must tell classes apart"
    for thing in CLASSES:
        if thing.kind == "thing":
            assert thing.typical_stuff in STUFF_NAMES
    assert {class_by_name(name).typical_stuff for name in THING_NAMES} == set(STUFF_NAMES)
    assert class_by_id(class_by_name("cow").id).name == "cow"
    unseen = unseen_class_names()
    assert unseen
    assert set(unseen) < set(THING_NAMES)
    with pytest.raises(ConfigError, match="unknown world class 'unicorn'"):
        class_by_name("unicorn")


def test_label_lookup_remaps_to_a_subset() -> None:
    semantic = np.array([[class_by_name("sky").id, class_by_name("cow").id, class_by_name("duck").id, IGNORE_LABEL]])
    things_only = label_lookup(["cow", "duck"], others="background")
    assert things_only[semantic].tolist() == [[0, 1, 2, IGNORE_LABEL]]
    ignored = label_lookup(["duck", "sky"])
    assert ignored[semantic].tolist() == [[1, IGNORE_LABEL, 0, IGNORE_LABEL]]
    with pytest.raises(ConfigError, match="duplicate"):
        label_lookup(["cow", "cow"])
