"""Instance ground truth in samples, the background view of a dataset, the ``synthetic-object`` preset and mask AP
in the evaluator: an oracle scores AP 1, right masks with wrong labels score class-aware AP 0 and class-agnostic
AP 1, and a segmenter without instances leaves no instance metrics."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_core import BackgroundClass, ConceptSet, InstancePredictions, ProtocolPreset, SegmentationOutput
from seg_eval.datasets import BackgroundView, Sample, SegmentationDataset, view_for_preset
from seg_eval.evaluator import EvaluationRecord, InstanceEvaluation, evaluate, write_results
from seg_eval.metrics import InstancePredictions as APPredictions
from seg_eval.metrics import InstanceTargets
from seg_eval.presets import get_preset, preset_concepts, preset_info
from seg_eval.world import CLASSES, WorldConfig, generate_split
from seg_eval.world.benchmark import RenderedWorldBenchmark, WorldBenchmark

# --- a hand-made dataset: stuff "sky" and "grass", things "cow" and "car" ------------------------------------------

HAND_CLASSES = ("sky", "cow", "grass", "car")
HAND_LABEL = np.array([[0, 1, 1, 255], [2, 3, 3, 0], [2, 2, 1, 3]], dtype=np.uint8)


def _mask(*pixels: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(HAND_LABEL.shape, dtype=bool)
    for row, col in pixels:
        mask[row, col] = True
    return mask


HAND_MASKS = np.stack(
    [
        _mask((0, 1), (0, 2)),  # cow
        _mask((1, 1), (1, 2)),  # car
        _mask((1, 0), (2, 0), (2, 1)),  # a "grass instance": not kept by the view
        _mask((2, 2)),  # another cow
    ]
)


class HandDataset:
    name = "hand"
    split = "val"
    class_names = HAND_CLASSES
    ignore_index = 255

    def __init__(self, with_instances: bool = True) -> None:
        self.with_instances = with_instances

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        if index != 0:
            raise IndexError(index)
        instances = InstanceTargets(masks=HAND_MASKS, labels=np.array([1, 3, 2, 1]), iscrowd=np.array([0, 1, 0, 0]))
        return Sample(
            image=np.zeros((*HAND_LABEL.shape, 3), dtype=np.uint8),
            label=HAND_LABEL.copy(),
            image_id="hand_0",
            instances=instances if self.with_instances else None,
        )


def test_background_view_relabels_pixels_and_instances() -> None:
    view = BackgroundView(HandDataset(), ("background", "car", "cow"))
    assert isinstance(view, SegmentationDataset)
    assert (view.class_names, view.ignore_index, view.name, view.split, len(view)) == (
        ("background", "car", "cow"),
        255,
        "hand",
        "val",
        1,
    )
    sample = view[0]
    # sky, grass -> 0 (background); car -> 1; cow -> 2; 255 stays 255 (worked out by hand)
    expected = np.array([[0, 2, 2, 255], [0, 1, 1, 0], [0, 0, 2, 1]], dtype=np.uint8)
    assert sample.label.dtype == np.uint8
    np.testing.assert_array_equal(sample.label, expected)
    assert sample.image_id == "hand_0"
    assert sample.instances is not None
    np.testing.assert_array_equal(sample.instances.labels, [2, 1, 2])  # cow, car, cow; the grass one dropped
    np.testing.assert_array_equal(sample.instances.masks, HAND_MASKS[[0, 1, 3]])
    assert sample.instances.iscrowd is not None
    np.testing.assert_array_equal(sample.instances.iscrowd, [0, 1, 0])
    assert BackgroundView(HandDataset(with_instances=False), ("background", "cow"))[0].instances is None


class WideDataset(HandDataset):
    """int64 labels with ignore 1000 (the ImageNet-S style)."""

    ignore_index = 1000


def test_background_view_keeps_int64_labels_and_refuses_unknown_values() -> None:
    view = BackgroundView(WideDataset(), ("bg", "grass"))
    assert view.ignore_index == 1000
    wide = np.array([[0, 2], [1000, 3]], dtype=np.int64)
    relabelled = view.relabel(wide)
    assert relabelled.dtype == np.int64
    np.testing.assert_array_equal(relabelled, [[0, 1], [1000, 0]])
    with pytest.raises(ValueError, match=r"image 'x': label values \[7\] are neither class ids"):
        BackgroundView(HandDataset(), ("background", "cow")).relabel(np.array([[7, 1]], dtype=np.uint8), "x")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "class_names is empty"),
        (("cow", "car"), "must start with a background name.*first name is 'cow'"),
        (("background",), "keeps no class"),
        (("background", "cow", "cow"), r"repeats \['cow'\]"),
        (("background", "cw", "plane"), r"'cw' \(did you mean 'cow'\?\), 'plane'; the dataset's classes"),
    ],
)
def test_background_view_errors(names: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackgroundView(HandDataset(), names)


def test_view_for_preset() -> None:
    dataset = HandDataset()
    preset = ProtocolPreset(name="p", dataset="hand")
    assert view_for_preset(dataset, preset) is dataset  # names left to the dataset
    assert view_for_preset(dataset, preset.model_copy(update={"class_names": HAND_CLASSES})) is dataset
    view = view_for_preset(dataset, preset.model_copy(update={"class_names": ("background", "cow")}))
    assert isinstance(view, BackgroundView)
    assert view.class_names == ("background", "cow")
    with pytest.raises(ValueError, match="choose the preset of this dataset"):
        view_for_preset(dataset, preset.model_copy(update={"class_names": ("cow", "car")}))
    with pytest.raises(ValueError, match=r"does not have: 'caw' \(did you mean 'cow', 'car'\?\).*choose the preset"):
        view_for_preset(dataset, preset.model_copy(update={"class_names": ("background", "caw")}))
    with pytest.raises(ValueError, match="choose the preset of this dataset"):
        view_for_preset(dataset, preset.model_copy(update={"class_names": ("background",)}))


# --- the world: instances in samples, the synthetic-object preset ---------------------------------------------------

THINGS = tuple(c.name for c in CLASSES if c.kind == "thing")
THING_IDS = [c.id for c in CLASSES if c.kind == "thing"]


@pytest.fixture(scope="module")
def world() -> RenderedWorldBenchmark:
    return RenderedWorldBenchmark(WorldConfig(seed=123), "val", num=5)


def test_world_samples_carry_their_thing_instances(world: RenderedWorldBenchmark) -> None:
    for index in range(len(world)):
        sample = world[index]
        assert sample.instances is not None
        masks, labels = np.asarray(sample.instances.masks), np.asarray(sample.instances.labels)
        assert masks.dtype == np.bool_
        assert masks.shape == (len(labels), *sample.label.shape)
        assert masks.reshape(len(labels), -1).any(axis=1).all()  # no empty mask
        for mask, label in zip(masks, labels, strict=True):
            assert label in THING_IDS
            assert set(np.unique(sample.label[mask]).tolist()) == {label}  # the semantic map agrees
        np.testing.assert_array_equal(masks.any(axis=0), np.isin(sample.label, THING_IDS))  # every thing pixel
        assert (masks.sum(axis=0) <= 1).all()  # visible masks do not overlap


def test_written_world_carries_the_same_instances(world: RenderedWorldBenchmark, tmp_path: Path) -> None:
    generate_split(tmp_path / "w", "val", 2, 123, fmt="coco")
    written = WorldBenchmark(tmp_path / "w", "val")
    for index in range(2):
        read, rendered = written[index].instances, world[index].instances
        assert read is not None
        assert rendered is not None
        np.testing.assert_array_equal(read.masks, rendered.masks)
        np.testing.assert_array_equal(read.labels, rendered.labels)


def test_synthetic_object_preset() -> None:
    preset = get_preset("synthetic-object")
    assert preset.dataset == "synthetic"
    assert preset.class_names == ("background", *THINGS)
    assert len(preset.class_names) == 15
    assert "sky" not in preset.class_names
    assert preset.background == BackgroundClass(names=("background",))
    assert (preset.templates, preset.mode, preset.normalization) == (
        "imagenet85",
        "whole",
        get_preset("synthetic").normalization,
    )
    assert "COCO-Object-style" in preset_info("synthetic-object").notes
    concepts = preset_concepts("synthetic-object")
    assert concepts.label_names[0] == "background"
    assert concepts.label_names[1:] == THINGS
    assert concepts.names == THINGS


def test_synthetic_object_view_of_the_world(world: RenderedWorldBenchmark) -> None:
    view = view_for_preset(world, get_preset("synthetic-object"))
    assert isinstance(view, BackgroundView)
    for index in range(len(world)):
        original, seen = world[index], view[index]
        # independent rule: thing id t -> 1 + its rank among the things, every stuff -> 0, 255 -> 255
        expected = np.zeros_like(original.label)
        for rank, thing_id in enumerate(THING_IDS, start=1):
            expected[original.label == thing_id] = rank
        expected[original.label == 255] = 255
        np.testing.assert_array_equal(seen.label, expected)
        assert original.instances is not None
        assert seen.instances is not None
        np.testing.assert_array_equal(seen.instances.labels, np.asarray(original.instances.labels) - THING_IDS[0] + 1)


# --- mask AP in the evaluator ----------------------------------------------------------------------------------------


class InstanceOracle:
    """Answers with the ground truth of ``dataset`` (label map and instances, score 1), image after image.

    Args:
        dataset: What the evaluator scores against (the view under a background preset).
        relabel: Applied to the instance labels (to make them wrong on purpose).
        instances: Whether to return instances at all.
    """

    def __init__(self, dataset: SegmentationDataset, relabel: dict[int, int] | None = None, instances: bool = True):
        self.dataset = dataset
        self.relabel = relabel
        self.instances = instances
        self.calls = 0

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        sample = self.dataset[self.calls]
        self.calls += 1
        label = torch.from_numpy(sample.label.astype(np.int64))
        label[label == 255] = 0
        logits = torch.nn.functional.one_hot(label, concepts.num_labels).permute(2, 0, 1)[None].float()
        if not self.instances:
            return SegmentationOutput(logits=logits, label_names=concepts.label_names)
        assert sample.instances is not None
        labels = np.asarray(sample.instances.labels).astype(np.int64)
        if self.relabel is not None:
            labels = np.array([self.relabel[int(v)] for v in labels], dtype=np.int64)
        predicted = InstancePredictions(
            masks=torch.from_numpy(np.asarray(sample.instances.masks)),
            scores=torch.ones(len(labels)),
            labels=torch.from_numpy(labels),
        )
        return SegmentationOutput(logits=logits, label_names=concepts.label_names, instances=(predicted,))


def _run(segmenter: InstanceOracle, dataset: SegmentationDataset, preset: ProtocolPreset) -> EvaluationRecord:
    return evaluate(segmenter, dataset, preset=preset, method="oracle", model="gt", dataset_name="synthetic")


def test_oracle_instances_score_ap_one(world: RenderedWorldBenchmark) -> None:
    preset = get_preset("synthetic-object")
    record = _run(InstanceOracle(view_for_preset(world, preset)), world, preset)
    assert record.class_names == preset.class_names
    assert record.metrics.miou == pytest.approx(1.0)
    assert record.instance_metrics is not None
    aware, agnostic = record.instance_metrics["class_aware"], record.instance_metrics["class_agnostic"]
    assert aware.ap == pytest.approx(1.0)
    assert aware.ap50 == pytest.approx(1.0)
    assert agnostic.ap == pytest.approx(1.0)
    present = {int(v) for i in range(len(world)) for v in np.unique(view_for_preset(world, preset)[i].label)}
    scored = {c for c, ap in aware.per_class_ap.items() if ap is not None}
    assert scored == present - {0, 255}  # background is no category; classes without objects have no AP
    assert 0 not in aware.per_class_ap
    assert set(agnostic.per_class_ap) == {1}


def test_oracle_without_background_label_scores_every_class(world: RenderedWorldBenchmark) -> None:
    record = _run(InstanceOracle(world), world, get_preset("synthetic"))
    assert record.instance_metrics is not None
    assert record.instance_metrics["class_aware"].ap == pytest.approx(1.0)
    assert 0 in record.instance_metrics["class_aware"].per_class_ap  # label 0 (sky) is a category here


def test_right_masks_wrong_labels(world: RenderedWorldBenchmark) -> None:
    preset = get_preset("synthetic-object")
    shifted = {label: label % 14 + 1 for label in range(1, 15)}  # every thing called the next thing
    record = _run(InstanceOracle(view_for_preset(world, preset), relabel=shifted), world, preset)
    assert record.instance_metrics is not None
    assert record.instance_metrics["class_aware"].ap == pytest.approx(0.0)
    assert record.instance_metrics["class_agnostic"].ap == pytest.approx(1.0)


def test_segmenter_without_instances_has_no_instance_metrics(world: RenderedWorldBenchmark, tmp_path: Path) -> None:
    preset = get_preset("synthetic-object")
    record = _run(InstanceOracle(view_for_preset(world, preset), instances=False), world, preset)
    assert record.instance_metrics is None
    assert "instance_metrics" not in record.to_dict()
    data = json.loads(write_results(record, tmp_path / "results.json").read_text())
    assert "instance_metrics" not in data
    assert data["metrics"]["mIoU"] == pytest.approx(1.0)


def test_results_json_holds_instance_metrics(world: RenderedWorldBenchmark, tmp_path: Path) -> None:
    preset = get_preset("synthetic-object")
    record = _run(InstanceOracle(view_for_preset(world, preset)), world, preset)
    data = json.loads(write_results(record, tmp_path / "out" / "results.json").read_text())
    assert set(data["instance_metrics"]) == {"class_aware", "class_agnostic"}
    for kind in ("class_aware", "class_agnostic"):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "per_class_AP"} <= set(data["instance_metrics"][kind])
        assert data["instance_metrics"][kind]["AP"] == pytest.approx(1.0)
    assert data["protocol"]["class_names"] == ["background", *THINGS]


class Flaky(InstanceOracle):
    """Returns instances for the first image only."""

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        self.instances = self.calls == 0
        return super().segment(images, concepts)


class HalfSize(InstanceOracle):
    """Returns instance masks at half the input size."""

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        output = super().segment(images, concepts)
        assert output.instances is not None
        whole = output.instances[0]
        half = InstancePredictions(masks=whole.masks[:, ::2, ::2], scores=whole.scores, labels=whole.labels)
        return SegmentationOutput(logits=output.logits, label_names=output.label_names, instances=(half,))


def test_inconsistent_instance_outputs_are_refused(world: RenderedWorldBenchmark) -> None:
    preset = get_preset("synthetic-object")
    with pytest.raises(ValueError, match="instances for the earlier images but none for image val_000001"):
        _run(Flaky(view_for_preset(world, preset)), world, preset)
    with pytest.raises(ValueError, match=r"instance masks for image val_000000.*input resolution"):
        _run(HalfSize(view_for_preset(world, preset)), world, preset)


def test_instance_evaluation_leaves_background_out() -> None:
    cow = _mask((0, 1), (0, 2))
    elsewhere = _mask((2, 0), (2, 1))
    scores = InstanceEvaluation(("background", "cow", "car"))
    # A confident "background instance" elsewhere, then the cow: counted as a detection, the background one would
    # be a false positive ranked first and the agnostic AP would drop to about 0.5.
    scores.update(
        APPredictions(masks=np.stack([elsewhere, cow]), scores=np.array([0.99, 0.5]), labels=np.array([0, 1])),
        InstanceTargets(masks=cow[None], labels=np.array([1])),
    )
    result = scores.compute()
    assert result["class_aware"].ap == pytest.approx(1.0)
    assert result["class_agnostic"].ap == pytest.approx(1.0)
    assert set(result["class_aware"].per_class_ap) == {1, 2}
    with pytest.raises(ValueError, match="class_names is empty"):
        InstanceEvaluation(())


@pytest.mark.parametrize("module", ["seg_eval.datasets.views", "seg_eval.evaluator"])
def test_docstring_examples(module: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
