"""What the zoo refuses, and what it writes: digests, manifests, pickles, other methods' models, card metadata.

No Hub here (HF_HUB_OFFLINE=1): the checkpoints are written by save_pretrained from the bundled models.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import seg_zoo
from seg_core import ConfigError, ZooEntry
from seg_zoo.bundled import bundled_model_dir

SMALL = "reco-plus-deeplab-r18-tiny.synthetic"  # 1.6 MB: the cheapest checkpoint to copy around


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seg_zoo.save_pretrained(SMALL, tmp_path_factory.mktemp("zoo") / "ckpt")


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_save_writes_three_files_with_the_weights_digest(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    manifest = json.loads((saved / "config.json").read_text())
    assert manifest["format_version"] == "1.0"
    assert manifest["method"] == "reco-plus"
    assert manifest["name"] == SMALL
    assert manifest["architecture"]["kind"] == "reco-plus"
    digest = seg_zoo.formats.file_digest(saved / "model.safetensors")
    assert manifest["files"]["model.safetensors"] == {"sha256": digest.sha256, "size": digest.size}
    # The weights are the bundled ones, byte for byte.
    assert (saved / "model.safetensors").read_bytes() == (
        bundled_model_dir("reco-plus-synthetic") / "model.safetensors"
    ).read_bytes()
    assert manifest["preprocessing"]["image_size"] == 64
    assert manifest["label_names"][:3] == ["sky", "grass", "water"]


def test_a_changed_weight_file_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"sha256 .* differs from config\.json"):
        seg_zoo.load(folder)


def test_unknown_fields_and_other_major_versions_are_refused_with_the_field_named(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, weights_dtype="fp8")
    with pytest.raises(ConfigError, match="weights_dtype"):
        seg_zoo.load(folder)
    folder = _copy(saved, tmp_path / "b")
    _edit_manifest(folder, format_version="2.0")
    with pytest.raises(ConfigError, match=r"format_version.*upgrade"):
        seg_zoo.load(folder)
    folder = _copy(saved, tmp_path / "c")
    _edit_manifest(folder, format_version="1.3")  # a newer minor version without new fields still loads
    assert type(seg_zoo.load(folder)).__name__ == "ClosedSetSegmenter"


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "code ran"))


def test_pickles_are_refused_unless_opted_in_and_then_read_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    checkpoint = tmp_path / "groupvit.pth"
    checkpoint.write_bytes(pickle.dumps({"model": payload}, protocol=2))
    with pytest.raises(ConfigError, match=r"pickle.*allow_pickle=True"):
        seg_zoo.load(checkpoint, method="groupvit")
    with pytest.raises(Exception, match=r"[Ww]eights only load failed|weights_only"):
        seg_zoo.load(checkpoint, method="groupvit", allow_pickle=True)
    assert not marker.exists()


def test_a_zoo_folder_with_a_pickle_next_to_it_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"pickle files \(pytorch_model\.bin\)"):
        seg_zoo.load(folder)
    assert type(seg_zoo.load(folder, allow_pickle=True)).__name__ == "ClosedSetSegmenter"


def test_another_methods_checkpoint_is_refused(saved: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds a ReCo\+ model.*not a ReCLIP\+\+ one.*--method reco-plus"):
        seg_zoo.load(saved, method="reclip")
    # The reference CLIP runs as MaskCLIP and as the naive dense CLIP.
    assert type(seg_zoo.load("maskclip-vit-tiny-p8.synthetic", method="dense-clip")).__name__ == "MaskCLIPSegmenter"


def test_a_local_clip_path_cannot_be_published_without_naming_where_it_lives(tmp_path: Path) -> None:
    native = tmp_path / "reco"
    shutil.copytree(bundled_model_dir("reco-synthetic"), native)
    info = json.loads((native / "reco.json").read_text())
    info["clip"] = str(tmp_path / "my-clip")
    (native / "reco.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"upstream.*local folder.*--upstream-clip"):
        seg_zoo.save_pretrained(native, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    out = seg_zoo.save_pretrained(native, tmp_path / "out", upstream={"clip": "maskclip-vit-tiny-p8.synthetic"})
    assert json.loads((out / "config.json").read_text())["upstream"] == {"clip": "maskclip-vit-tiny-p8.synthetic"}
    assert type(seg_zoo.load(out)).__name__ == "ReCoSegmenter"


def test_in_memory_groupvit_and_loaded_segmenters_save(tmp_path: Path) -> None:
    segmenter = seg_zoo.load("groupvit-tiny.synthetic")
    again = seg_zoo.save_pretrained(segmenter, tmp_path / "from-segmenter")
    assert json.loads((again / "config.json").read_text())["name"] == "groupvit-tiny.synthetic"
    network = segmenter.model  # type: ignore[attr-defined]
    direct = seg_zoo.save_pretrained(network, tmp_path / "from-network", name="groupvit-mine.test")
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    from seg_core import ConceptSet

    concepts = ConceptSet(names=("sky", "grass", "cow"))
    expected = segmenter.segment(images, concepts).logits
    for folder in (again, direct):
        assert torch.equal(seg_zoo.load(folder).segment(images, concepts).logits, expected)
    with pytest.raises(TypeError, match="cannot save a int"):
        seg_zoo.save_pretrained(3, tmp_path / "nope")


def test_registry_lists_with_wildcards_and_suggests_close_names() -> None:
    assert "reco-vit-tiny-p8.synthetic" in seg_zoo.list_models("reco*")
    assert all(name.endswith(".synthetic") for name in seg_zoo.list_models("*.synthetic"))
    assert seg_zoo.list_models(method="pgseg") == ["pgseg-groupvit-tiny.synthetic"]
    with pytest.raises(KeyError, match=r"reco-vit-tiny-p8\.synthetic"):
        seg_zoo.get_entry("reco-vit-tiny.synthetic")
    methods = {seg_zoo.get_entry(name).method for name in seg_zoo.list_models("*.synthetic")}
    assert methods == {"maskclip", "reco", "reco-plus", "groupvit", "pgseg", "simcon", "reclip", "zutis"}
    entry = ZooEntry(name="reco-mine.test", method="reco", hf_hub_id="me/reco-mine")
    seg_zoo.register(entry)
    try:
        assert seg_zoo.get_entry("reco-mine.test") is entry
        with pytest.raises(ConfigError, match="exists"):
            seg_zoo.register(entry)
    finally:
        seg_zoo.registry._ENTRIES.pop("reco-mine.test")


def test_upstream_entries_name_public_weights_and_their_source_kind() -> None:
    vit_b = seg_zoo.resolve("maskclip-vit-b16.openai")
    assert (vit_b.kind, vit_b.target, vit_b.method) == ("open_clip", "ViT-B-16/openai", "maskclip")
    groupvit = seg_zoo.resolve("groupvit-gcc-yfcc.nvidia")
    assert (groupvit.kind, groupvit.target) == ("transformers", "hf-hub:nvidia/groupvit-gcc-yfcc@main")


def test_bad_sources_say_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder at"):
        seg_zoo.resolve(str(tmp_path / "missing" / "model"))
    with pytest.raises(ConfigError, match="holds no seg model"):
        seg_zoo.resolve(tmp_path)
    with pytest.raises(ConfigError, match=r"hf-hub:org/name@revision"):
        seg_zoo.resolve("hf-hub:no-slash")
    with pytest.raises(ConfigError, match="give a source"):
        seg_zoo.resolve(None)
