"""``seg train reco|reco-plus|groupvit|pgseg|simcon`` with tiny recipes, then ``seg eval`` of what they wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from seg_eval.world import generate_split


def test_train_reco_then_reco_plus_then_eval(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    reco_config = tmp_path / "reco.yaml"
    reco_config.write_text(
        yaml.safe_dump(
            {
                "method": "reco",
                "collection_size": 48,
                "k": 4,
                "concepts": ["grass", "sky", "cow"],
                "templates": ["a photo of a {}."],
                "coseg": {"context_concepts": ["grass", "sky"]},
            }
        )
    )
    reco_run = tmp_path / "reco-run"
    result = run_seg("train", "reco", "--config", str(reco_config), "--out", str(reco_run))
    assert result.exit_code == 0, result.text
    assert "mean purity" in result.text
    model = reco_run / "model"
    assert json.loads((model / "reco.json").read_text())["method"] == "reco"

    plus_config = tmp_path / "plus.yaml"
    plus_config.write_text(
        yaml.safe_dump(
            {
                "method": "reco-plus",
                "reco_model": str(model),
                "num_images": 8,
                "batch_size": 4,
                "train": {"max_steps": 2, "progress": False, "tensorboard": False},
            }
        )
    )
    plus_run = tmp_path / "plus-run"
    result = run_seg("train", "reco-plus", "--config", str(plus_config), "--out", str(plus_run))
    assert result.exit_code == 0, result.text
    assert (plus_run / "model" / "reco_plus.json").is_file()

    world = tmp_path / "world"
    generate_split(world, "val", 3, seed=7, fmt="coco")
    # ReCo+ knows only the three trained labels: the world's 21 classes are a clear error, not a crash.
    out = tmp_path / "r.json"
    result = run_seg(
        "eval",
        "--method",
        "reco-plus",
        "--model",
        f"local-dir:{plus_run / 'model'}",
        "--dataset",
        str(world),
        "--out",
        str(out),
    )
    assert result.exit_code == 1
    assert "cannot segment" in result.text


def test_train_reco_config_typo_names_the_field(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "reco.yaml"
    config.write_text("method: reco\ncolection_size: 10\n")
    result = run_seg("train", "reco", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "colection_size" in result.text


def _tiny_grouping_recipe(method: str) -> dict[str, Any]:
    from seg_models.groupvit import GROUPVIT_TINY_CONFIG

    model: dict[str, Any] = GROUPVIT_TINY_CONFIG.model_dump(mode="json")
    if method == "pgseg":
        model = {"groupvit": model, "reconstruction_hidden_dim": 32}
    return {
        "method": method,
        "model": model,
        "batch_size": 4,
        "workers": 0,
        "train": {"max_steps": 2, "progress": False, "tensorboard": False, "precision": "fp32"},
    }


def test_train_groupvit_and_pgseg_then_eval_and_refuse_each_others_folders(
    run_seg: Callable[..., Any], tmp_path: Path
) -> None:
    world = tmp_path / "world"
    generate_split(world, "val", 2, seed=7, fmt="coco")
    folders = {}
    for method in ("groupvit", "pgseg"):
        config = tmp_path / f"{method}.yaml"
        config.write_text(yaml.safe_dump(_tiny_grouping_recipe(method)))
        result = run_seg("train", method, "--config", str(config), "--out", str(tmp_path / method))
        assert result.exit_code == 0, result.text
        folders[method] = tmp_path / method / "model"
        assert json.loads((folders[method] / "training.json").read_text())["method"] == method
        out = tmp_path / f"{method}.json"
        result = run_seg(
            "eval", "--method", method, "--model", str(folders[method]), "--dataset", str(world), "--out", str(out)
        )
        assert result.exit_code == 0, result.text
        assert json.loads(out.read_text())["method"] == method
    for method, other in (("groupvit", "pgseg"), ("pgseg", "groupvit")):
        result = run_seg(
            "eval", "--method", method, "--model", str(folders[other]), "--dataset", str(world), "--out", "x.json"
        )
        assert result.exit_code == 1
        assert ("PGSeg" if method == "groupvit" else "GroupViT") in result.text


def test_train_simcon_then_eval_and_refuse_other_recipes_models(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    from seg_zoo.bundled import bundled_model_dir

    world = tmp_path / "world"
    generate_split(world, "val", 2, seed=7, fmt="coco")
    config = tmp_path / "simcon.yaml"
    recipe = _tiny_grouping_recipe("groupvit") | {"method": "simcon", "loss": {"kind": "mv-simcon"}}
    config.write_text(yaml.safe_dump(recipe))
    result = run_seg("train", "simcon", "--config", str(config), "--out", str(tmp_path / "simcon"))
    assert result.exit_code == 0, result.text
    folder = tmp_path / "simcon" / "model"
    assert json.loads((folder / "training.json").read_text())["method"] == "simcon"
    out = tmp_path / "simcon.json"
    result = run_seg("eval", "--method", "simcon", "--model", str(folder), "--dataset", str(world), "--out", str(out))
    assert result.exit_code == 0, result.text
    assert json.loads(out.read_text())["method"] == "simcon"
    # A GroupViT trained with InfoNCE is not a SimCon model, and the other way round: the error names the recipe.
    groupvit = bundled_model_dir("groupvit-synthetic")
    for method, other, trained_by in (("simcon", groupvit, "groupvit"), ("groupvit", folder, "simcon")):
        result = run_seg("eval", "--method", method, "--model", str(other), "--dataset", str(world), "--out", "x.json")
        assert result.exit_code == 1
        assert f"seg train {trained_by}" in result.text
        assert f"--method {trained_by}" in result.text


def test_train_simcon_config_typo_names_the_field(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "simcon.yaml"
    config.write_text("method: simcon\nloss:\n  knd: simcon\n")
    result = run_seg("train", "simcon", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "knd" in result.text


def test_train_pgseg_config_typo_names_the_field(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "pgseg.yaml"
    config.write_text("method: pgseg\npg:\n  image_wieght: 0.5\n")
    result = run_seg("train", "pgseg", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "image_wieght" in result.text


def test_train_zutis_then_eval_and_predict(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "zutis.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "zutis",
                "collection_size": 40,
                "k": 4,
                "concepts": ["cow", "car"],
                "templates": ["a photo of a {}."],
                "model": {"num_queries": 4, "decoder_layers": 2, "decoder_heads": 2, "decoder_dim": 16},
                "batch_size": 2,
                "train": {"max_steps": 2, "progress": False, "tensorboard": False},
            }
        )
    )
    run = tmp_path / "zutis-run"
    result = run_seg("train", "zutis", "--config", str(config), "--out", str(run))
    assert result.exit_code == 0, result.text
    assert "pseudo-masks: mean IoU" in result.text
    model = run / "model"
    assert json.loads((model / "zutis.json").read_text())["method"] == "zutis"

    world = tmp_path / "world"
    generate_split(world, "val", 3, seed=7, fmt="coco")
    out = tmp_path / "r.json"
    result = run_seg(
        "eval", "--method", "zutis", "--model", f"local-dir:{model}", "--dataset", str(world), "--out", str(out)
    )
    assert result.exit_code == 0, result.text
    record = json.loads(out.read_text())
    # The default protocol of ZUTIS on the world is synthetic-object: background + the 14 things, with mask AP.
    assert record["protocol"]["name"] == "synthetic-object"
    assert record["protocol"]["class_names"][0] == "background"
    assert set(record["instance_metrics"]) == {"class_aware", "class_agnostic"}
    assert "mask AP" in result.text

    image = next((world / "images" / "val").iterdir())
    predictions = tmp_path / "predictions"
    result = run_seg(
        "predict", str(image), "-m", "zutis", "-c", "cow,car", "--model", f"local-dir:{model}", "-o", str(predictions)
    )
    assert result.exit_code == 0, result.text
    with Image.open(predictions / f"{image.stem}_labels.png") as labels:
        assert int(np.asarray(labels).max()) <= 2  # background, cow, car
    instances = json.loads((predictions / f"{image.stem}_instances.json").read_text())
    assert all(entry["class"] in {"cow", "car"} and 0.0 <= entry["score"] <= 1.0 for entry in instances)
    assert (predictions / f"{image.stem}_instances.png").is_file()


def test_train_zutis_unknown_class_names_the_field(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "zutis.yaml"
    config.write_text("method: zutis\nconcepts: [cow, unicorn]\n")
    result = run_seg("train", "zutis", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "unicorn" in result.text
    assert not (tmp_path / "run").exists()


def test_train_reclip_then_eval_both_stages_and_refuse_other_class_lists(
    run_seg: Callable[..., Any], tmp_path: Path
) -> None:
    config = tmp_path / "reclip.yaml"
    tiny = {"max_steps": 2, "progress": False, "tensorboard": False}
    config.write_text(
        yaml.safe_dump(
            {
                "method": "reclip",
                "num_images": 8,
                "rectify_train": tiny,
                "rectify_batch_size": 4,
                "distill_train": tiny,
                "distill_batch_size": 2,
            }
        )
    )
    run = tmp_path / "reclip-run"
    result = run_seg("train", "reclip", "--config", str(config), "--out", str(run))
    assert result.exit_code == 0, result.text
    assert json.loads((run / "model" / "reclip.json").read_text())["kind"] == "student"
    assert json.loads((run / "rectifier" / "reclip.json").read_text())["kind"] == "rectifier"

    world = tmp_path / "world"
    generate_split(world, "val", 2, seed=7, fmt="coco")
    for folder in ("model", "rectifier"):
        out = tmp_path / f"{folder}.json"
        result = run_seg(
            "eval", "--method", "reclip", "--model", str(run / folder), "--dataset", str(world), "--out", str(out)
        )
        assert result.exit_code == 0, result.text
        assert json.loads(out.read_text())["method"] == "reclip"

    # A ReCLIP++ model segments the classes it was trained for; another list is a clear error naming them.
    image = next((world / "images" / "val").iterdir())
    result = run_seg(
        "predict", str(image), "-m", "reclip", "-c", "cow,unicorn", "--model", str(run / "model"), "-o", "p"
    )
    assert result.exit_code == 1
    assert "unicorn" in result.text
    # Another method's folder is refused.
    from seg_zoo.bundled import bundled_model_dir

    zutis = bundled_model_dir("zutis-synthetic")
    result = run_seg("eval", "--method", "reclip", "--model", str(zutis), "--dataset", str(world), "--out", "x.json")
    assert result.exit_code == 1
    assert "holds a ZUTIS model" in result.text
    assert "--method zutis" in result.text


def test_train_reclip_config_typo_names_the_field(run_seg: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "reclip.yaml"
    config.write_text("method: reclip\nmodel:\n  n_ctxx: 4\n")
    result = run_seg("train", "reclip", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "n_ctxx" in result.text


def test_train_push_to_hub_publishes_the_trained_folder_and_keeps_it_when_the_push_fails(
    run_seg: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Hub side of push_to_hub is tested against a local Hub in seg-zoo; here: what `seg train` hands it.
    import seg_zoo

    pushed: list[tuple[Path, str]] = []

    def fake_push(model: Path, repo_id: str, **options: object) -> str:
        seg_zoo.save_pretrained(model, tmp_path / "published")  # the real conversion runs on the trained folder
        pushed.append((Path(model), repo_id))
        return "0123456789abcdef"

    monkeypatch.setattr(seg_zoo, "push_to_hub", fake_push)
    config = tmp_path / "groupvit.yaml"
    config.write_text(yaml.safe_dump(_tiny_grouping_recipe("groupvit")))
    args = ("train", "groupvit", "--config", str(config), "--out", str(tmp_path / "run"))
    result = run_seg(*args, "--push-to-hub", "me/my-groupvit")
    assert result.exit_code == 0, result.text
    assert pushed == [(tmp_path / "run" / "model", "me/my-groupvit")]
    assert "pushed to me/my-groupvit (commit 0123456789ab)" in " ".join(result.stdout.split())
    assert json.loads((tmp_path / "published" / "config.json").read_text())["method"] == "groupvit"

    def failing_push(model: Path, repo_id: str, **options: object) -> str:
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(seg_zoo, "push_to_hub", failing_push)
    result = run_seg(*args, "--resume", "--push-to-hub", "me/my-groupvit")
    assert result.exit_code == 1
    text = " ".join(result.text.split())
    assert "the model is in" in text
    assert "Connection refused" in text
    assert "seg zoo push" in text
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    bad = run_seg(*args, "--push-to-hub", "no-slash")
    assert bad.exit_code == 2


@pytest.mark.slow
def test_train_under_torchrun_reports_once_from_rank_0(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from seg_models.groupvit import load_groupvit

    config = tmp_path / "groupvit.yaml"
    config.write_text(yaml.safe_dump(_tiny_grouping_recipe("groupvit")))
    script = tmp_path / "seg_entry.py"
    script.write_text("from seg_cli.main import main\n\nmain()\n")  # what the `seg` console script runs
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(port), str(script), "train", "groupvit", "--config", str(config), "--out",
        str(tmp_path / "run"),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert " ".join(finished.stdout.split()).count("groupvit: model written to") == 1
    training = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert training["method"] == "groupvit"
    load_groupvit(tmp_path / "run" / "model")
