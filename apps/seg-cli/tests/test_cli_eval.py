"""``seg eval`` on a written synthetic world: a results.json record with the protocol signature; methods whose code
has not landed exit 2 before doing any work; bad datasets fail with a message."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import seg_zoo
from seg_eval.world import generate_split


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_split(root, "val", 3, 77, fmt="coco")
    return root


@pytest.mark.parametrize("method", ["maskclip", "dense-clip"])
def test_eval_writes_a_results_record(
    run_seg: Callable[..., Any], tiny_world: Path, random_clip: str, tmp_path: Path, method: str
) -> None:
    out = tmp_path / "results.json"
    args = ["eval", "--method", method, "--model", random_clip, "--dataset", str(tiny_world), "--out", str(out)]
    result = run_seg(*args)
    assert result.exit_code == 0, result.text
    record = json.loads(out.read_text())
    assert record["method"] == method
    assert record["model"] == random_clip
    assert record["dataset"] == "synthetic"
    assert record["num_images"] == 3
    assert record["protocol"]["name"] == "synthetic"
    assert len(record["protocol"]["signature"]) == 16
    assert 0.0 <= record["metrics"]["mIoU"] <= 1.0
    assert set(record["metrics"]["per_class_iou"]) >= {"cow", "sky"}
    assert "mIoU" in result.text


def test_eval_of_a_method_not_landed_exits_2_before_work(
    run_seg: Callable[..., Any], tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seg_cli import segmenters

    # Every method has landed: take one away to exercise the path.
    monkeypatch.setattr(
        segmenters, "AVAILABLE_METHODS", tuple(m for m in segmenters.AVAILABLE_METHODS if m != "reclip")
    )
    out = tmp_path / "r.json"
    result = run_seg("eval", "--method", "reclip", "--dataset", str(tiny_world), "--out", str(out))
    assert result.exit_code == 2
    assert "Not available yet: seg eval --method reclip" in result.text
    assert not out.exists()


def test_eval_on_a_folder_that_is_no_dataset(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run_seg("eval", "--method", "maskclip", "--dataset", str(tmp_path / "data"), "--out", "r.json")
    assert result.exit_code == 1
    assert "no known dataset layout" in result.text


def test_eval_the_trained_methods_with_their_bundled_models(
    run_seg: Callable[..., Any], tiny_world: Path, tmp_path: Path
) -> None:
    for method in ("reco", "reco-plus", "reclip", "groupvit", "pgseg", "simcon"):
        out = tmp_path / f"{method}.json"
        result = run_seg("eval", "--method", method, "--dataset", str(tiny_world), "--out", str(out))
        assert result.exit_code == 0, result.text
        record = json.loads(out.read_text())
        assert record["method"] == method
        assert record["model"] == seg_zoo.default_entry(method).name
        assert 0.0 < record["metrics"]["mIoU"] <= 1.0


def test_eval_with_another_methods_model_folder_is_a_clear_error(
    run_seg: Callable[..., Any], tiny_world: Path, tmp_path: Path
) -> None:
    from seg_zoo.bundled import bundled_model_dir

    reco_plus = bundled_model_dir("reco-plus-synthetic")
    result = run_seg(
        "eval", "--method", "reco", "--model", f"local-dir:{reco_plus}", "--dataset", str(tiny_world), "--out", "r.json"
    )
    assert result.exit_code == 1
    assert "holds a ReCo+ model" in result.text
    assert "not a ReCo one" in result.text
    missing = run_seg(
        "eval",
        "--method",
        "reco-plus",
        "--model",
        str(tmp_path / "nope"),
        "--dataset",
        str(tiny_world),
        "--out",
        "r.json",
    )
    assert missing.exit_code == 1
    assert "no folder at" in missing.text


def test_eval_maskclip_reports_mask_ap_only_under_an_object_protocol(
    run_seg: Callable[..., Any], tiny_world: Path, tmp_path: Path
) -> None:
    records = {}
    for preset in ("synthetic", "synthetic-object"):
        out = tmp_path / f"{preset}.json"
        result = run_seg(
            "eval", "--method", "maskclip", "--preset", preset, "--dataset", str(tiny_world), "--out", str(out)
        )
        assert result.exit_code == 0, result.text
        records[preset] = json.loads(out.read_text())
    # With a literal background class its connected components are instances (ZUTIS's baseline): mask AP.
    assert set(records["synthetic-object"]["instance_metrics"]) == {"class_aware", "class_agnostic"}
    assert records["synthetic"].get("instance_metrics") is None


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    marker = ""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (self.marker, "code ran"))


def test_eval_refuses_pickle_checkpoints_unless_allowed_and_then_reads_weights_only(
    run_seg: Callable[..., Any], tiny_world: Path, tmp_path: Path
) -> None:
    import pickle

    payload = _Payload()
    payload.marker = str(tmp_path / "pwned")
    checkpoint = tmp_path / "groupvit.pth"
    checkpoint.write_bytes(pickle.dumps({"model": payload}, protocol=2))
    args = ("eval", "--method", "groupvit", "--model", str(checkpoint), "--dataset", str(tiny_world), "--out", "r.json")
    refused = run_seg(*args)
    assert refused.exit_code == 1
    assert "--allow-pickle" in " ".join(refused.text.split())
    allowed = run_seg(*args, "--allow-pickle")
    assert allowed.exit_code == 1  # read with weights_only=True: the payload is refused, not run
    assert "weights_only" in " ".join(allowed.text.split())
    assert not (tmp_path / "pwned").exists()
