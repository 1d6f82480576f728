"""The ReCLIP++ and ZUTIS recipes under ``torchrun`` (2 CPU processes, gloo), each called exactly as in one process.

Each test writes a script that calls the recipe unchanged, launches it with ``python -m torch.distributed.run``, and
records per rank: the batches its step functions saw, the trained parameters, which cached stages it computed, and
(through an audit hook) every file it created, replaced or removed under the run folder. The test then checks:
identical replicas, different batches per rank, rank 0 alone computing and writing the cached stages and the model
folders (the other rank only embeds its shards of ZUTIS's collection store), and that the folders load back. Two
tests run in one process: the batches of each rank, and a re-run that reuses the pseudo-labels of a rectifier saved
again with its safetensors metadata in another order.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from seg_core import ScheduleConfig, TrainConfig
from seg_coseg.copy_paste import CopyPasteConfig
from seg_eval.world import WorldConfig
from seg_models.clip import load_clip, register_model_config
from seg_models.reclip import load_reclip, load_reclip_student, read_reclip_info
from seg_models.zutis import load_zutis, read_zutis_info
from seg_trainers import reclip as reclip_module
from seg_trainers.reclip import ReCLIPRecipe, TrainingBatches, train_reclip
from seg_trainers.zutis import CopyPasteBatches, PseudoMasks

# Shared by both scripts: an audit hook that logs what this rank writes under the run folder, and a recorder that
# wraps a step-function factory of the recipe's module to log each batch and keep the (DDP-wrapped) model.
PREAMBLE = textwrap.dedent(
    """
    import json
    import os
    import sys

    import torch

    RUN = os.path.abspath(sys.argv[1])
    RESULTS = sys.argv[2]
    RANK = int(os.environ["RANK"])
    torch.set_num_threads(1)
    writes = []


    def _relative(path):
        if isinstance(path, int):
            return None
        try:
            full = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return None
        return os.path.relpath(full, RUN) if full.startswith(RUN + os.sep) else None


    def _audit(event, args):
        if event == "open" and isinstance(args[2], int):
            if args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
                relative = _relative(args[0])
                if relative is not None:
                    writes.append(["write", relative])
        elif event in ("os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            relative = _relative(args[1] if event == "os.rename" else args[0])
            if relative is not None:
                writes.append([event, relative])


    sys.addaudithook(_audit)
    seen = {}
    models = {}


    def record(module, factory_name, stage, pixels_key):
        factory = getattr(module, factory_name)

        def make(*args, **kwargs):
            step = factory(*args, **kwargs)

            def wrapped(model, batch):
                seen.setdefault(stage, []).append(float(batch[pixels_key].double().sum()))
                models[stage] = model
                return step(model, batch)

            return wrapped

        setattr(module, factory_name, make)


    def count_calls(module, name, calls):
        function = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)

        setattr(module, name, counted)


    def finish(extra):
        import torch.distributed as dist

        from seg_train import unwrap_model

        states = {}
        for stage, model in models.items():
            inner = unwrap_model(model)
            states[stage] = {
                "parameters": {name: p.detach().clone() for name, p in inner.named_parameters() if p.requires_grad},
                "state": {name: value.detach().clone() for name, value in inner.state_dict().items()},
            }
        torch.save(states, f"{RESULTS}/states_rank{RANK}.pt")
        summary = {"seen": seen, "writes": writes, "world_size": dist.get_world_size(), **extra}
        with open(f"{RESULTS}/summary_rank{RANK}.json", "w") as handle:
            json.dump(summary, handle)
        dist.destroy_process_group()
    """
)

RECLIP_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_core import ScheduleConfig, TrainConfig
    from seg_eval.world import WorldConfig
    from seg_models.clip import load_clip, register_model_config
    from seg_trainers import reclip
    from seg_trainers.reclip import ReCLIPRecipe, train_reclip

    record(reclip, "rectify_step", "rectify", "pixels")
    record(reclip, "distill_step", "distill", "pixels")
    calls = {}
    count_calls(reclip, "compute_hypotheses", calls)
    count_calls(reclip, "make_pseudo_labels", calls)
    torch.manual_seed(0)
    clip = load_clip(register_model_config(CLIP_NAME, TINY_CLIP_CONFIG))


    def train(steps):
        return TrainConfig(
            max_steps=steps, lr=0.05, schedule=ScheduleConfig(kind="constant"), log_every=1, progress=False,
            tensorboard=False, checkpoint_every=2,
        )


    recipe = ReCLIPRecipe(
        world=WorldConfig(seed=3), num_images=6, class_names=("cow", "grass", "sky", "water"),
        templates=("a photo of a {}.",), model={"n_ctx": 4}, rectify_train=train(3), rectify_batch_size=2,
        distill_train=train(2), distill_batch_size=2, deeplab_overrides=TINY_DEEPLAB, embed_batch_size=4,
    )
    # The user's script: the same call as in one process.
    run = train_reclip(recipe, clip, RUN, clip_source="random")
    first_writes = list(writes)
    # A re-run reuses the cached hypotheses and pseudo-labels and resumes both stages (nothing left to train).
    again = train_reclip(recipe, clip, RUN, clip_source="random", resume=True)
    finish({
        "calls": calls, "first_writes": first_writes, "model_dir": str(run.model_dir),
        "rectify_steps": run.rectify.final_step, "distill_steps": run.distill.final_step,
        "rerun_model_dir": str(again.model_dir), "hypotheses": run.hypotheses["num_images"],
    })
    """
)

ZUTIS_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_coseg.copy_paste import CopyPasteConfig
    from seg_core import TrainConfig
    from seg_models.clip import load_clip, register_model_config
    from seg_models.zutis import ZUTISConfig
    from seg_trainers import zutis
    from seg_trainers.zutis import SaliencySettings, ZUTISRecipe, train_zutis

    record(zutis, "zutis_step", "train", "images")
    calls = {}
    count_calls(zutis, "build_pseudo_masks", calls)
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    recipe = ZUTISRecipe(
        collection_size=40, k=4, concepts=("cow", "car"), templates=("a photo of a {}.",),
        saliency=SaliencySettings(features="colour"),
        copy_paste=CopyPasteConfig(crop_size=32, max_sources=3, hue=0.0, saturation=0.0, grayscale_prob=0.0),
        model=ZUTISConfig(
            num_queries=4, decoder_layers=2, decoder_heads=2, decoder_dim=16, decoder_ffn=32, ffn_hidden=16
        ),
        batch_size=2,
        train=TrainConfig(max_steps=3, lr=1e-3, log_every=1, progress=False, tensorboard=False, checkpoint_every=2),
        embed_batch_size=8,
    )
    # The user's script: the same call as in one process.
    run = train_zutis(recipe, clip, RUN, clip_source="random")
    first_writes = list(writes)
    # A re-run reuses the store, the pseudo-masks and the last checkpoint.
    again = train_zutis(recipe, clip, RUN, clip_source="random", resume=True)
    finish({
        "calls": calls, "first_writes": first_writes, "model_dir": str(run.model_dir),
        "steps": run.result.final_step, "rerun_model_dir": str(again.model_dir),
        "purity_keys": sorted(run.purity), "saliency_keys": sorted(run.saliency_iou),
    })
    """
)

CLIP_NAME = "seg-test-ddp-reclip-tiny"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_DEEPLAB = {
    "aspp_channels": 8,
    "low_level_channels": 8,
    "decoder_channels": 8,
    "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16]},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(script_text: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the script on 2 gloo processes; the run folder, each rank's summary and each rank's saved states."""
    script = tmp_path / "train.py"
    constants = f"CLIP_NAME = {CLIP_NAME!r}\nTINY_CLIP_CONFIG = {TINY_CLIP_CONFIG!r}\nTINY_DEEPLAB = {TINY_DEEPLAB!r}\n"
    script.write_text(constants + script_text)
    run, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script), str(run), str(results),
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    environment["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even on a machine with GPUs
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, check=False)
    assert finished.returncode == 0, finished.stdout[-5000:] + finished.stderr[-5000:]
    summaries = [json.loads((results / f"summary_rank{rank}.json").read_text()) for rank in range(2)]
    states = [torch.load(results / f"states_rank{rank}.pt", weights_only=True) for rank in range(2)]
    return run, summaries, states


def _files(writes: list[list[str]]) -> set[str]:
    """The files a rank wrote or moved into place (temporary names and directories left out)."""
    return {path for event, path in writes if event in ("write", "os.rename") and not Path(path).name.startswith(".")}


def _assert_identical_replicas(states: list[dict[str, Any]], stage: str) -> None:
    """Every parameter and buffer is equal on both ranks, but BatchNorm's running statistics.

    DDP broadcasts rank 0's buffers before each forward, then each rank's BatchNorm updates them with its own batch:
    after the last step they differ by that last update (the exported model has rank 0's).
    """
    parameters = [states[rank][stage]["parameters"] for rank in range(2)]
    assert parameters[0], f"{stage}: no trainable parameters recorded"
    assert sorted(parameters[0]) == sorted(parameters[1])
    for name, tensor in parameters[0].items():
        assert torch.equal(tensor, parameters[1][name]), f"{stage}: the replicas differ in {name}"
    state = [states[rank][stage]["state"] for rank in range(2)]
    assert sorted(state[0]) == sorted(state[1])
    for name, tensor in state[0].items():
        if not name.endswith(("running_mean", "running_var")):
            assert torch.equal(tensor, state[1][name]), f"{stage}: the replicas differ in {name}"


def _assert_export_is_rank0(loaded: dict[str, torch.Tensor], trained: dict[str, torch.Tensor]) -> None:
    """The exported (fp16) weights are rank 0's trained state, buffers included."""
    for name, tensor in trained.items():
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(loaded[name], expected), name


def _assert_disjoint_batches(summaries: list[dict[str, Any]], stage: str, steps: int) -> None:
    """Each rank ran ``steps`` steps on its own batches (no batch of rank 0 is one of rank 1's)."""
    seen = [summaries[rank]["seen"][stage] for rank in range(2)]
    assert len(seen[0]) == len(seen[1]) == steps
    assert not set(seen[0]) & set(seen[1]), f"{stage}: both ranks trained on the same batches {seen}"
    assert len(set(seen[0])) == steps  # and a new batch every step


def test_reclip_both_stages_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(RECLIP_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    for summary in summaries:  # every rank returns the same run
        assert summary["model_dir"] == summary["rerun_model_dir"] == str(run / "model")
        assert (summary["rectify_steps"], summary["distill_steps"], summary["hypotheses"]) == (3, 2, 6)

    for stage, steps in (("rectify", 3), ("distill", 2)):
        _assert_identical_replicas(states, stage)
        _assert_disjoint_batches(summaries, stage, steps)

    # Rank 0 alone computed the cached stages, once each over the two calls; rank 1 read them from disk.
    assert summaries[0]["calls"] == {"compute_hypotheses": 1, "make_pseudo_labels": 1}
    assert summaries[1]["calls"] == {}
    # Rank 1 wrote nothing in the run folder; rank 0 wrote every file of it.
    assert _files(summaries[1]["writes"]) == set()
    written = _files(summaries[0]["first_writes"])
    for name in (
        "recipe.yaml",
        "hypotheses.pt",
        "hypotheses.json",
        "pseudo_labels.npz",
        "rectifier/reclip.json",
        "rectifier/training.json",
        "model/reclip.json",
        "model/training.json",
    ):
        assert name in written, f"rank 0 did not write {name}: {sorted(written)}"
    assert (run / "rectify" / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    assert (run / "distill" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert not [path for path in run.rglob("*") if path.name.startswith(".")], "temporary files left behind"

    # The folders load with the method's loaders and hold rank 0's trained weights (stored in fp16).
    torch.manual_seed(0)
    clip = load_clip(register_model_config(CLIP_NAME, TINY_CLIP_CONFIG))
    rectifier = load_reclip(run / "rectifier", clip).own_state_dict()  # the CLIP is not in the folder
    trained = {name: value for name, value in states[0]["rectify"]["state"].items() if not name.startswith("clip.")}
    assert sorted(rectifier) == sorted(trained)
    _assert_export_is_rank0(rectifier, trained)
    _assert_export_is_rank0(load_reclip_student(run / "model").state_dict(), states[0]["distill"]["state"])
    assert read_reclip_info(run / "model")["kind"] == "student"
    for folder, steps in ((run / "rectifier", 3), (run / "model", 2)):
        assert json.loads((folder / "training.json").read_text())["steps"] == steps


def test_zutis_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(ZUTIS_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    for summary in summaries:  # every rank returns the same run
        assert summary["model_dir"] == summary["rerun_model_dir"] == str(run / "model")
        assert summary["steps"] == 3
        assert summary["purity_keys"] == summaries[0]["purity_keys"]
        assert summary["saliency_keys"] == ["<mean>", "car", "cow"]

    _assert_identical_replicas(states, "train")
    _assert_disjoint_batches(summaries, "train", 3)

    # Rank 0 alone built the pseudo-masks (once over the two calls); rank 1 read them from disk.
    assert summaries[0]["calls"] == {"build_pseudo_masks": 1}
    assert summaries[1]["calls"] == {}
    # Rank 1 wrote at most its own shards of the embedding store (embed_collection splits the shards over the ranks;
    # these 40 images make one shard, rank 0's), nothing that rank 0 wrote, and nothing else.
    others = _files(summaries[1]["writes"])
    assert all(path.startswith("store/shard-") for path in others), sorted(others)
    assert not others & _files(summaries[0]["writes"])
    written = _files(summaries[0]["first_writes"])
    for name in (
        "recipe.yaml",
        "store/manifest.json",
        "store/shard-00000.npy",
        "archive.json",
        "purity.json",
        "pseudo_masks.npz",
        "saliency.json",
        "model/zutis.json",
        "model/training.json",
    ):
        assert name in written, f"rank 0 did not write {name}: {sorted(written)}"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    assert not [path for path in run.rglob("*") if path.name.startswith(".")], "temporary files left behind"

    # The folder loads with the method's loader and holds rank 0's trained weights (stored in fp16).
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    assert read_zutis_info(run / "model")["label_names"] == ["background", "cow", "car"]
    _assert_export_is_rank0(load_zutis(run / "model", clip).model.state_dict(), states[0]["train"]["state"])
    assert json.loads((run / "model" / "training.json").read_text())["steps"] == 3


def _swap_metadata_order(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` entries in reverse order (what another process may
    write for the same weights); the tensors and their offsets stay as they are."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])


def test_rerun_reuses_pseudo_labels_of_the_same_rectifier_saved_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-run above re-exports the rectifier; safetensors writes its metadata in no fixed order, so the
    pseudo-labels' fingerprint of the rectifier must not be the file's bytes (a re-run failed about half the time)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clip = load_clip(register_model_config(CLIP_NAME, TINY_CLIP_CONFIG))
    train = TrainConfig(
        max_steps=1, lr=0.05, schedule=ScheduleConfig(kind="constant"), progress=False, tensorboard=False
    )
    recipe = ReCLIPRecipe(
        world=WorldConfig(seed=3),
        num_images=4,
        class_names=("cow", "grass", "sky", "water"),
        templates=("a photo of a {}.",),
        model={"n_ctx": 4},
        rectify_train=train,
        rectify_batch_size=2,
        distill_train=train,
        distill_batch_size=2,
        deeplab_overrides=TINY_DEEPLAB,
        embed_batch_size=4,
    )
    train_reclip(recipe, clip, tmp_path, clip_source="random")
    weights = tmp_path / "rectifier" / "model.safetensors"
    before, tensors = hashlib.sha256(weights.read_bytes()).hexdigest(), load_file(weights)
    _swap_metadata_order(weights)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() != before  # other bytes ...
    after = load_file(weights)
    assert all(torch.equal(tensors[name], after[name]) for name in tensors)  # ... same weights

    def recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached pseudo-labels must be reused")

    monkeypatch.setattr(reclip_module, "make_pseudo_labels", recompute)
    run = train_reclip(recipe, clip, tmp_path, clip_source="random", stages=("distill",), resume=True)
    assert run.model_dir == tmp_path / "model"


def test_each_rank_takes_every_world_size_th_batch() -> None:
    """Rank ``r`` of ``w``: its ``i``-th batch is batch ``i * w + r`` of the one-process sequence, for both recipes."""
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    hypotheses = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    augment = ReCLIPRecipe().augment.model_copy(update={"crop_size": 16})
    single = TrainingBatches(images, hypotheses, augment, batch_size=2, seed=7)
    for rank in range(3):
        ranked = TrainingBatches(images, hypotheses, augment, batch_size=2, seed=7, rank=rank, world_size=3)
        stream = iter(ranked(2))  # resumed after two batches of this rank
        for i in (2, 3):
            got, expected = next(stream), single.batch(i * 3 + rank)
            assert all(torch.equal(got[key], expected[key]) for key in expected)
    with pytest.raises(ValueError, match="rank must be in"):
        TrainingBatches(images, hypotheses, augment, batch_size=2, seed=7, rank=2, world_size=2)

    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 4:10] = True
    pseudo = PseudoMasks(names=("cow",), images={1: images[:2]}, masks={1: masks}, iou={})
    config = CopyPasteConfig(crop_size=16, max_sources=2, hue=0.0, saturation=0.0, grayscale_prob=0.0)
    common: dict[str, Any] = {"batch_size": 2, "seed": 3, "normalization": ((0.5,) * 3, (0.25,) * 3)}
    one = CopyPasteBatches(pseudo, config, num_batches=8, **common)
    second = CopyPasteBatches(pseudo, config, num_batches=4, rank=1, world_size=2, **common)
    for i in range(4):
        assert all(torch.equal(second[i][key], one[2 * i + 1][key]) for key in one[0])
    with pytest.raises(ValueError, match="rank must be in"):
        CopyPasteBatches(pseudo, config, num_batches=4, rank=-1, world_size=2, **common)
