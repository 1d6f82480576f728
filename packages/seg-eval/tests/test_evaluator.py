"""The evaluator: an oracle scores 1.0, a constant predictor scores what the confusion matrix says, records carry
the protocol signature, and mismatches between dataset, preset and segmenter are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_core import BackgroundThreshold, ConceptSet, ProtocolPreset, SegmentationOutput
from seg_eval.datasets.base import Sample
from seg_eval.evaluator import evaluate, image_to_tensor, write_results
from seg_eval.world import WorldConfig
from seg_eval.world.benchmark import RenderedWorldBenchmark, WorldBenchmark

PRESET = ProtocolPreset(name="synthetic-test", dataset="synthetic")


class OracleSegmenter:
    """Answers with the ground truth of the dataset, image after image (the evaluator goes in order)."""

    def __init__(self, dataset: RenderedWorldBenchmark) -> None:
        self.dataset = dataset
        self.calls = 0

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        label = torch.from_numpy(self.dataset[self.calls].label.astype(np.int64))
        self.calls += 1
        label[label == 255] = 0
        logits = torch.nn.functional.one_hot(label, concepts.num_labels).permute(2, 0, 1)[None].float()
        assert images.shape[-2:] == logits.shape[-2:]
        assert float(images.max()) <= 1.0
        return SegmentationOutput(logits=logits, label_names=concepts.label_names)


class ConstantSegmenter:
    def __init__(self, label: int) -> None:
        self.label = label

    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        b, _, h, w = images.shape
        logits = torch.zeros(b, concepts.num_labels, h, w)
        logits[:, self.label] = 1.0
        return SegmentationOutput(logits=logits, label_names=concepts.label_names)


@pytest.fixture(scope="module")
def world() -> RenderedWorldBenchmark:
    return RenderedWorldBenchmark(WorldConfig(seed=123), "val", num=6)


def test_oracle_scores_one(world: RenderedWorldBenchmark) -> None:
    calls: list[tuple[int, int]] = []
    record = evaluate(
        OracleSegmenter(world),
        world,
        preset=PRESET,
        method="oracle",
        model="ground-truth",
        dataset_name="synthetic",
        split="val",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert record.metrics.miou == pytest.approx(1.0)
    assert record.metrics.pixel_accuracy == pytest.approx(1.0)
    assert calls[-1] == (6, 6)
    assert record.num_images == 6


def test_constant_predictor_matches_the_confusion_matrix(world: RenderedWorldBenchmark) -> None:
    record = evaluate(ConstantSegmenter(0), world, preset=PRESET, method="c", model="c", dataset_name="s")
    labels = np.concatenate([world[i].label.ravel() for i in range(len(world))])
    labels = labels[labels != 255]
    share_of_class_0 = float(np.mean(labels == 0))
    assert record.metrics.pixel_accuracy == pytest.approx(share_of_class_0)
    present = sorted(set(labels.tolist()) | {0})
    # Only class 0 has a non-zero IoU: its IoU equals its pixel share; every other present class scores 0.
    assert record.metrics.miou == pytest.approx(share_of_class_0 / len(present))


def test_results_json_record(world: RenderedWorldBenchmark, tmp_path: Path) -> None:
    record = evaluate(OracleSegmenter(world), world, preset=PRESET, method="oracle", model="gt", dataset_name="syn")
    path = write_results(record, tmp_path / "out" / "results.json")
    data = json.loads(path.read_text())
    assert {"method", "model", "dataset", "protocol", "metrics"} <= set(data)
    assert data["method"] == "oracle"
    assert {"mIoU", "pixel_accuracy", "per_class_iou"} <= set(data["metrics"])
    assert data["metrics"]["mIoU"] == pytest.approx(1.0)
    assert data["protocol"]["signature"] == PRESET.signature(world.class_names)
    assert data["protocol"]["class_names"] == list(world.class_names)
    absent = [name for name, iou in data["metrics"]["per_class_iou"].items() if iou is None]
    present = {world.class_names[c] for k in range(len(world)) for c in np.unique(world[k].label) if c != 255}
    assert not set(absent) & present
    listed = write_results([record, record], tmp_path / "list.json")
    assert len(json.loads(listed.read_text())) == 2


def test_written_world_evaluates_like_the_rendered_one(world: RenderedWorldBenchmark, tmp_path: Path) -> None:
    from seg_eval.world import generate_split

    generate_split(tmp_path / "w", "val", 6, 123, fmt="coco")
    written = WorldBenchmark(tmp_path / "w", "val")
    assert written.class_names == world.class_names
    assert len(written) == 6
    for i in range(6):
        assert np.array_equal(written[i].label, world[i].label)


def test_mismatches_are_refused(world: RenderedWorldBenchmark) -> None:
    wrong_preset = PRESET.model_copy(update={"class_names": ("a", "b")})
    with pytest.raises(ValueError, match="choose the preset of this dataset"):
        evaluate(ConstantSegmenter(0), world, preset=wrong_preset, method="c", model="c", dataset_name="s")
    with pytest.raises(ValueError, match="labels"):
        evaluate(
            ConstantSegmenter(0),
            world,
            preset=PRESET,
            method="c",
            model="c",
            dataset_name="s",
            concepts=ConceptSet.from_names("cow, grass"),
        )
    with_background = PRESET.model_copy(update={"background": BackgroundThreshold(threshold=0.5)})
    with pytest.raises(ValueError, match="label 0 must be background"):
        evaluate(ConstantSegmenter(0), world, preset=with_background, method="c", model="c", dataset_name="s")


class WrongSizeSegmenter(ConstantSegmenter):
    def segment(self, images: torch.Tensor, concepts: ConceptSet) -> SegmentationOutput:
        return super().segment(images[..., ::2, ::2], concepts)


def test_segmenter_must_predict_at_input_resolution(world: RenderedWorldBenchmark) -> None:
    with pytest.raises(ValueError, match="input resolution"):
        evaluate(WrongSizeSegmenter(0), world, preset=PRESET, method="c", model="c", dataset_name="s")


def test_image_to_tensor() -> None:
    image = np.full((4, 5, 3), 255, dtype=np.uint8)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 4, 5)
    assert float(tensor.max()) == 1.0
    with pytest.raises(ValueError, match="RGB"):
        image_to_tensor(np.zeros((4, 5), dtype=np.uint8))


def test_sample_type_is_shared() -> None:
    sample = RenderedWorldBenchmark(WorldConfig(seed=1), "test", 1)[0]
    assert isinstance(sample, Sample)
