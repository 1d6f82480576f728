"""The bundled reference synthetic CLIP ships in the wheel, loads offline through open_clip, and carries its record."""

from __future__ import annotations

import pytest
import torch

from seg_models.clip import load_clip
from seg_zoo.bundled import BUNDLED_MODELS, REFERENCE_CLIP, bundled_model_dir, bundled_model_info


def test_bundled_reference_clip_loads_and_embeds() -> None:
    folder = bundled_model_dir(REFERENCE_CLIP)
    assert (folder / "open_clip_model.safetensors").stat().st_size > 1_000_000
    clip = load_clip(f"local-dir:{folder}")
    assert clip.embed_dim == 128
    assert clip.image_size == (64, 64)
    with torch.no_grad():
        texts = torch.nn.functional.normalize(clip.encode_text(["a photo of a cow.", "a photo of a boat."]), dim=-1)
    assert torch.isfinite(texts).all()
    assert float(texts[0] @ texts[1]) < 0.99  # a trained text tower tells classes apart


def test_bundled_model_record() -> None:
    info = bundled_model_info()
    assert info["train_world_seed"] != info["eval"]["world_seed"]  # evaluated on a world it never saw
    assert info["eval"]["zero_shot_thing_accuracy"] >= 0.85
    assert info["eval"]["maskclip"]["mIoU"] > info["eval"]["naive"]["mIoU"]


def test_unknown_bundled_model() -> None:
    assert REFERENCE_CLIP in BUNDLED_MODELS
    with pytest.raises(KeyError, match="no bundled model"):
        bundled_model_dir("nope")


@pytest.mark.parametrize(
    ("name", "method"),
    [("groupvit-synthetic", "groupvit"), ("pgseg-synthetic", "pgseg"), ("simcon-synthetic", "simcon")],
)
def test_bundled_grouping_models_load_and_were_evaluated_on_unseen_worlds(name: str, method: str) -> None:
    from seg_models.groupvit import load_groupvit
    from seg_models.pgseg import PGSeg, load_pgseg

    folder = bundled_model_dir(name)
    model = load_pgseg(folder) if method == "pgseg" else load_groupvit(folder)
    assert isinstance(model, PGSeg) == (method == "pgseg")
    info = bundled_model_info(name)
    assert info["method"] == method
    assert info["train_world_seed"] not in info["eval"]["world_seeds"]
    assert 0.0 < info["eval"]["scores"]["mIoU"] <= 1.0
    assert sum(path.stat().st_size for path in folder.iterdir()) < 20 * 2**20  # small: fp16, a few MB


def test_bundled_reclip_student_loads_and_was_evaluated_on_unseen_worlds() -> None:
    from seg_models.reclip import ReCLIPStudent, load_reclip_student, read_reclip_info

    folder = bundled_model_dir("reclip-synthetic")
    assert read_reclip_info(folder)["kind"] == "student"
    assert isinstance(load_reclip_student(folder), ReCLIPStudent)
    info = bundled_model_info("reclip-synthetic")
    assert info["train_world_seed"] not in info["eval"]["world_seeds"]
    assert 0.0 < info["eval"]["scores"]["mIoU"] <= 1.0
    assert sum(path.stat().st_size for path in folder.iterdir()) < 20 * 2**20
