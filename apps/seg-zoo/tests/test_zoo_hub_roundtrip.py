"""Every method's checkpoint goes through a Hub and back with identical outputs.

The real huggingface_hub client talks to a local Hub (seg_zoo.testing: olah serves downloads, seg's own test
double of the upload API takes pushes) in a subprocess (tests/hub_client.py), because the client reads its
environment at import and this process runs with HF_HUB_OFFLINE=1. What is checked: push (create repo, upload,
tag), load by ``hf-hub:`` with a tag, a commit sha and the default branch, load by zoo name resolved to its Hub repo,
pull, the model card the Hub would render, offline loading from the filled cache, and ``seg predict`` on a Hub model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import seg_zoo
from seg_zoo.testing import LocalHub

CLIENT = Path(__file__).with_name("hub_client.py")
SYNTHETIC = seg_zoo.list_models("*.synthetic")


def _client_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seg_zoo_hub_client", CLIENT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _client_module()


def _run(hub: LocalHub, workdir: Path, steps: list[dict[str, Any]], *, offline: bool = False) -> dict[str, Any]:
    steps_file = workdir / f"steps-{len(list(workdir.glob('steps-*')))}.json"
    steps_file.write_text(json.dumps(steps))
    env = hub.env(cache=workdir / "hf-cache")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, str(CLIENT), str(steps_file)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, f"hub client failed:\n{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def _same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["method"] == after["method"]
    assert torch.equal(before["labels"], after["labels"])
    assert torch.equal(before["logits"], after["logits"])


@pytest.fixture(scope="module")
def round_trip(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Push every synthetic checkpoint to its zoo repo (tag v1), then segment from the Hub three ways; plus a repo
    whose main moves on after v1 (ReCo+ at v1, the ReCLIP++ student at main)."""
    work = tmp_path_factory.mktemp("round-trip")
    steps: list[dict[str, Any]] = []
    for name in SYNTHETIC:
        repo = seg_zoo.get_entry(name).hf_hub_id
        steps.append({"op": "push", "source": name, "repo": repo, "tag": "v1", "key": f"commit:{name}"})
        steps.append({"op": "outputs", "source": f"hf-hub:{repo}@v1", "out": str(work / f"{name}.tag.pt")})
        steps.append({"op": "outputs", "source": name, "hub": True, "out": str(work / f"{name}.name.pt")})
    first, second = "reco-plus-deeplab-r18-tiny.synthetic", "reclip-deeplab-r18-tiny.synthetic"
    steps += [
        {"op": "push", "source": first, "repo": "testorg/moving", "tag": "v1", "key": "moving:v1"},
        {"op": "push", "source": second, "repo": "testorg/moving", "key": "moving:main"},
        {"op": "outputs", "source": "hf-hub:testorg/moving@v1", "out": str(work / "moving.v1.pt")},
        {"op": "outputs", "source": "hf-hub:testorg/moving", "out": str(work / "moving.main.pt")},
        {"op": "pull", "source": "hf-hub:testorg/moving@v1", "out": str(work / "pulled"), "key": "pulled"},
    ]
    results = _run(hub, work, steps)
    sha = f"hf-hub:testorg/moving@{results['moving:v1']}"
    steps = [
        {"op": "outputs", "source": sha, "out": str(work / "sha.pt")},
        {"op": "pull", "source": sha, "out": str(work / "pulled-sha"), "key": "pulled-sha"},
    ]
    _run(hub, work, steps)
    return {"work": work, "results": results}


@pytest.mark.slow
@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_synthetic_checkpoint_survives_the_hub(name: str, round_trip: dict[str, Any]) -> None:
    work: Path = round_trip["work"]
    before = client.segment(name)
    assert before["kind"] == "native"  # the bundled folder, the reference the Hub copies must equal
    by_tag = torch.load(work / f"{name}.tag.pt")
    by_name = torch.load(work / f"{name}.name.pt")
    assert by_tag["kind"] == by_name["kind"] == "zoo"
    _same(before, by_tag)
    _same(before, by_name)


@pytest.mark.slow
def test_revisions_pin_what_was_pushed_and_main_moves_on(round_trip: dict[str, Any], hub: LocalHub) -> None:
    work: Path = round_trip["work"]
    results = round_trip["results"]
    reco_plus = client.segment("reco-plus-deeplab-r18-tiny.synthetic")
    reclip = client.segment("reclip-deeplab-r18-tiny.synthetic")
    _same(reco_plus, torch.load(work / "moving.v1.pt"))
    _same(reco_plus, torch.load(work / "sha.pt"))
    _same(reclip, torch.load(work / "moving.main.pt"))
    # Pulled by tag and by commit sha: the same three files, the weights byte for byte those pushed at v1.
    by_tag, by_sha = work / "pulled", work / "pulled-sha"
    for name in ("model.safetensors", "config.json", "README.md"):
        assert (by_tag / name).read_bytes() == (by_sha / name).read_bytes(), name
    bundled = seg_zoo.bundled.bundled_model_dir("reco-plus-synthetic") / "model.safetensors"
    assert (by_sha / "model.safetensors").read_bytes() == bundled.read_bytes()
    assert results["moving:v1"] != results["moving:main"]
    # The repo on the Hub holds exactly the three files, and its git history the two pushes.
    repo = hub.repo_path("testorg/moving")
    assert sorted(p.name for p in repo.iterdir() if p.name != ".git") == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%H"], capture_output=True, text=True, check=True)
    assert results["moving:v1"] in log.stdout.split()
    assert results["moving:main"] == log.stdout.split()[0]


@pytest.mark.slow
def test_pulled_folder_loads_offline_and_its_card_is_a_hub_model_card(round_trip: dict[str, Any]) -> None:
    from huggingface_hub import ModelCard

    pulled = Path(round_trip["results"]["pulled"])
    assert pulled == round_trip["work"] / "pulled"
    _same(client.segment("reco-plus-deeplab-r18-tiny.synthetic"), client.segment(f"local-dir:{pulled}"))
    card = ModelCard.load(pulled / "README.md")
    assert card.data.library_name == "seg"
    assert card.data.pipeline_tag == "image-segmentation"
    manifest = seg_zoo.resolve(f"local-dir:{pulled}").manifest
    assert manifest is not None
    miou = next(r for r in manifest.results if r.metric == "mean_iou")
    rendered = card.data.eval_results[0]
    assert (rendered.metric_type, rendered.metric_value, rendered.metric_config) == (
        "mean_iou",
        miou.value,
        miou.signature,
    )
    assert miou.signature is not None
    assert manifest.protocol is not None
    assert miou.signature == manifest.protocol.signature(manifest.label_names)


@pytest.mark.slow
def test_offline_mode_loads_from_the_filled_cache_only(round_trip: dict[str, Any], hub: LocalHub) -> None:
    work: Path = round_trip["work"]
    steps = [
        {"op": "outputs", "source": "hf-hub:testorg/moving@v1", "out": str(work / "offline.pt")},
        {"op": "fail", "source": "hf-hub:testorg/never-downloaded", "key": "uncached"},
    ]
    results = _run(hub, work, steps, offline=True)
    _same(client.segment("reco-plus-deeplab-r18-tiny.synthetic"), torch.load(work / "offline.pt"))
    assert results["uncached"].startswith(("LocalEntryNotFoundError", "OfflineModeIsEnabled")), results["uncached"]


@pytest.mark.slow
def test_seg_predict_on_a_hub_model_matches_the_bundled_one(round_trip: dict[str, Any], hub: LocalHub) -> None:
    # seg-cli depends on seg-zoo, not the reverse: alone (tools/isolation.py) seg-zoo has no `seg` command.
    pytest.importorskip("seg_cli", reason="seg-cli is not installed next to seg-zoo")
    work: Path = round_trip["work"]
    image = work / "image.png"
    Image.fromarray((client.fixed_batch()[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(image)
    outputs = {}
    for label, model in (("hub", "hf-hub:testorg/moving@v1"), ("bundled", "reco-plus-deeplab-r18-tiny.synthetic")):
        out = work / f"predict-{label}"
        env = hub.env(cache=work / "hf-cache") if label == "hub" else {**os.environ, "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-c", "from seg_cli.main import main; main()", "predict", str(image)]
        command += ["--method", "reco-plus", "--classes", "sky,grass,water,cow", "--model", model, "--out", str(out)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        pngs = sorted(out.glob("*.png"))
        assert pngs
        outputs[label] = {p.name: np.asarray(Image.open(p)) for p in pngs}
    assert outputs["hub"].keys() == outputs["bundled"].keys()
    for key, array in outputs["hub"].items():
        assert np.array_equal(array, outputs["bundled"][key]), key
