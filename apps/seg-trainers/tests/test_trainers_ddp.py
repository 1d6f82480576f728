"""Every training recipe under ``torchrun`` (2 CPU processes, gloo), each called exactly as in one process.

Each test writes a script that calls the recipe unchanged (the synthetic CLIP, GroupViT and PGSeg, SimCon and
MV-SimCon, ReCo and ReCo+, ReCLIP++, ZUTIS), launches it with ``python -m torch.distributed.run``, and records per
rank: the batches its step functions saw (and their indices), the trained parameters, which cached stages it
computed, and (through an audit hook) every file it created, replaced or removed under the run folder. The test then
checks: identical replicas, rank ``r`` training on batches ``r, r + 2, ...`` of the one-process sequence (so no batch
twice), rank 0 alone computing and writing the cached stages and the model folders (the other rank only embeds its
shards of a collection store), and that the folders load back with rank 0's weights. The tests in one process: the
batches of each rank (and ``batch_loader`` unchanged in one process), the step functions' optimiser-step count over
the ranks, and a re-run that reuses the pseudo-labels of a rectifier saved again with its safetensors metadata in
another order.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import JsonValue
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from seg_core import ScheduleConfig, TrainConfig
from seg_coseg.copy_paste import CopyPasteConfig
from seg_eval.world import WorldConfig
from seg_models.clip import CONFIG_FILE_NAME as CLIP_CONFIG_FILE
from seg_models.clip import WEIGHTS_FILE_NAME as CLIP_WEIGHTS_FILE
from seg_models.clip import load_clip, register_model_config
from seg_models.groupvit import GROUPVIT_TINY_CONFIG, groupvit_tokenizer, load_groupvit
from seg_models.pgseg import load_pgseg
from seg_models.reclip import load_reclip, load_reclip_student, read_reclip_info
from seg_models.reco import REFERENCES_FILE_NAME, load_reference_embeddings
from seg_models.zutis import load_zutis, read_zutis_info
from seg_trainers import reclip as reclip_module
from seg_trainers import reco as reco_module
from seg_trainers.clip import SyntheticClipRecipe, WorldPairBatches, batch_loader, build_synthetic_clip
from seg_trainers.groupvit import PGLossSettings, new_grouping_model, pgseg_step
from seg_trainers.reclip import ReCLIPRecipe, TrainingBatches, train_reclip
from seg_trainers.reco import ReCoPlusRecipe, WorldImages, load_reco_plus, read_reco_plus_info
from seg_trainers.simcon import (
    SIMCON_VIEWS,
    SimConLossSettings,
    SimConModule,
    SimConRecipe,
    WorldViewBatches,
    simcon_step,
)
from seg_trainers.zutis import CopyPasteBatches, PseudoMasks

# Shared by every script: an audit hook that logs what this rank writes under the run folder, and a recorder that
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
    # safetensors writes its files from Rust, past the audit hook: log its save_file (patched before any seg module
    # imports it).
    import safetensors.torch

    _save_file = safetensors.torch.save_file


    def _logged_save_file(tensors, filename, *args, **kwargs):
        relative = _relative(filename)
        if relative is not None:
            writes.append(["write", relative])
        return _save_file(tensors, filename, *args, **kwargs)


    safetensors.torch.save_file = _logged_save_file
    seen = {}
    indices = {}
    models = {}


    def _recording(step, stage, pixels_key):
        def wrapped(model, batch):
            seen.setdefault(stage, []).append(float(batch[pixels_key].double().sum()))
            if "batch_index" in batch:
                indices.setdefault(stage, []).append(int(batch["batch_index"]))
            models[stage] = model
            return step(model, batch)

        return wrapped


    def record(module, factory_name, stage, pixels_key):
        factory = getattr(module, factory_name)

        def make(*args, **kwargs):
            return _recording(factory(*args, **kwargs), stage, pixels_key)

        setattr(module, factory_name, make)


    def record_step(module, step_name, stage, pixels_key):
        setattr(module, step_name, _recording(getattr(module, step_name), stage, pixels_key))


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
        summary = {"seen": seen, "indices": indices, "writes": writes, "world_size": dist.get_world_size(), **extra}
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

SYNTHETIC_CLIP_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_core import ScheduleConfig, TrainConfig
    from seg_eval.world import WorldConfig
    from seg_trainers import clip
    from seg_trainers.clip import SyntheticClipRecipe, train_synthetic_clip

    record_step(clip, "clip_step", "train", "images")
    recipe = SyntheticClipRecipe(
        world=WorldConfig(seed=11), model_name=SYNTHETIC_CLIP_NAME, model_cfg=SYNTHETIC_CLIP_CONFIG, batch_size=4,
        workers=0, train=TrainConfig(
            max_steps=3, lr=2e-3, weight_decay=0.1, schedule=ScheduleConfig(kind="constant"), log_every=1,
            progress=False, tensorboard=False, checkpoint_every=2,
        ),
    )
    # The user's script: the same call as in one process.
    run = train_synthetic_clip(recipe, RUN)
    first_writes = list(writes)
    again = train_synthetic_clip(recipe, RUN, resume=True)  # resumes at the last step: nothing left to train
    finish({
        "first_writes": first_writes, "model_dir": str(run.model_dir), "rerun_model_dir": str(again.model_dir),
        "steps": run.result.final_step,
    })
    """
)

GROUPVIT_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_core import ScheduleConfig, TrainConfig
    from seg_eval.world import WorldConfig
    from seg_models.groupvit import GROUPVIT_TINY_CONFIG
    from seg_models.pgseg import PGSEG_TINY_CONFIG
    from seg_trainers import groupvit
    from seg_trainers.groupvit import GroupViTRecipe, PGLossSettings, PGSegRecipe, train_groupvit

    record_step(groupvit, "groupvit_step", "groupvit", "images")
    record(groupvit, "pgseg_step", "pgseg", "images")


    def train(steps):
        return TrainConfig(
            max_steps=steps, lr=2e-3, weight_decay=0.05, schedule=ScheduleConfig(kind="constant"), log_every=1,
            progress=False, tensorboard=False, checkpoint_every=2,
        )


    recipes = {
        "groupvit": GroupViTRecipe(
            world=WorldConfig(seed=11), model=GROUPVIT_TINY_CONFIG, batch_size=4, workers=0, train=train(3)
        ),
        # The PG losses switch on at step 3 of 4 (optimiser step 2 counted from 0).
        "pgseg": PGSegRecipe(
            world=WorldConfig(seed=11), model=PGSEG_TINY_CONFIG, batch_size=4, workers=0, train=train(4),
            pg=PGLossSettings(start=0.5),
        ),
    }
    runs = {}
    for name, recipe in recipes.items():
        # The user's script: the same call as in one process; the re-run resumes at the last step.
        run = train_groupvit(recipe, os.path.join(RUN, name))
        again = train_groupvit(recipe, os.path.join(RUN, name), resume=True)
        runs[name] = {
            "model_dir": str(run.model_dir), "rerun_model_dir": str(again.model_dir), "steps": run.result.final_step,
            "history": list(run.result.history),
        }
    finish({"runs": runs})
    """
)

SIMCON_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_core import ScheduleConfig, TrainConfig
    from seg_eval.world import WorldConfig
    from seg_models.groupvit import GROUPVIT_TINY_CONFIG
    from seg_models.pgseg import PGSEG_TINY_CONFIG
    from seg_trainers import groupvit, simcon
    from seg_trainers.groupvit import PGLossSettings
    from seg_trainers.simcon import SimConLossSettings, SimConRecipe, train_simcon


    def recipe(kind, model, steps):
        return SimConRecipe(
            world=WorldConfig(seed=11), model=model, batch_size=4, workers=0,
            loss=SimConLossSettings(kind=kind, threshold=0.9, milestones=(0.25, 0.5)), pg=PGLossSettings(start=0.5),
            train=TrainConfig(
                max_steps=steps, lr=2e-3, schedule=ScheduleConfig(kind="constant"), log_every=1, progress=False,
                tensorboard=False, checkpoint_every=2,
            ),
        )


    # MV-SimCon on a GroupViT (every parameter used); one-view SimCon on a PGSeg (the prediction head unused, the
    # PG units unused before their start: DDP's find_unused_parameters).
    recipes = {
        "mv-simcon": recipe("mv-simcon", GROUPVIT_TINY_CONFIG, 3),
        "simcon-pgseg": recipe("simcon", PGSEG_TINY_CONFIG, 4),
    }
    factory = simcon.simcon_step
    runs = {}
    for name, settings in recipes.items():
        simcon.simcon_step = factory
        record(simcon, "simcon_step", name, "view1")
        # The user's script: the same call as in one process; the re-run resumes at the last step.
        run = train_simcon(settings, os.path.join(RUN, name))
        again = train_simcon(settings, os.path.join(RUN, name), resume=True)
        runs[name] = {
            "model_dir": str(run.model_dir), "rerun_model_dir": str(again.model_dir), "steps": run.result.final_step,
            "history": list(run.result.history),
        }
    finish({"runs": runs})
    """
)

RECO_SCRIPT = PREAMBLE + textwrap.dedent(
    """
    from seg_core import ConceptSet, TrainConfig
    from seg_coseg.context import CoSegConfig
    from seg_models.clip import load_clip, register_model_config
    from seg_trainers import reco
    from seg_trainers.reco import ReCoPlusRecipe, ReCoRecipe, build_reco, load_reco, train_reco_plus

    record(reco, "_segmentation_step", "reco-plus", "images")
    calls = {}
    for name in ("curate_archive", "reference_embeddings", "make_pseudo_labels"):
        count_calls(reco, name, calls)
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    recipe = ReCoRecipe(
        collection_size=24, k=3, concepts=("cow", "grass"), templates=("a photo of a {}.",),
        coseg=CoSegConfig(context_concepts=("sky",)), batch_size=8,
    )
    plus = ReCoPlusRecipe(
        num_images=6, batch_size=2, deeplab_overrides=TINY_DEEPLAB,
        train=TrainConfig(max_steps=3, lr=5e-4, log_every=1, progress=False, tensorboard=False, checkpoint_every=2),
    )
    concepts = ConceptSet(names=("cow", "grass"))
    # The user's script: the same calls as in one process.
    built = build_reco(recipe, clip, os.path.join(RUN, "reco"), clip_source="random")
    trained = train_reco_plus(plus, load_reco(built.model_dir, clip), concepts, os.path.join(RUN, "plus"))
    first_writes = list(writes)
    # A re-run reuses the store, re-curates on rank 0, reuses the pseudo-labels and resumes at the last step.
    rebuilt = build_reco(recipe, clip, os.path.join(RUN, "reco"), clip_source="random")
    again = train_reco_plus(plus, load_reco(rebuilt.model_dir, clip), concepts, os.path.join(RUN, "plus"), resume=True)
    finish({
        "calls": calls, "first_writes": first_writes, "reco_dir": str(built.model_dir),
        "rerun_reco_dir": str(rebuilt.model_dir), "archive": built.archive.model_dump(mode="json"),
        "purity": {name: {str(k): v for k, v in by_k.items()} for name, by_k in built.purity.items()},
        "model_dir": str(trained.model_dir), "rerun_model_dir": str(again.model_dir),
        "pseudo_labels": str(trained.pseudo_labels), "steps": trained.result.final_step,
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
SYNTHETIC_CLIP_NAME = "seg-test-ddp-synthetic-clip-tiny"
SYNTHETIC_CLIP_CONFIG: dict[str, JsonValue] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(script_text: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the script on 2 gloo processes; the run folder, each rank's summary and each rank's saved states."""
    script = tmp_path / "train.py"
    constants = "".join(
        f"{name} = {value!r}\n"
        for name, value in (
            ("CLIP_NAME", CLIP_NAME),
            ("TINY_CLIP_CONFIG", TINY_CLIP_CONFIG),
            ("TINY_DEEPLAB", TINY_DEEPLAB),
            ("SYNTHETIC_CLIP_NAME", SYNTHETIC_CLIP_NAME),
            ("SYNTHETIC_CLIP_CONFIG", SYNTHETIC_CLIP_CONFIG),
        )
    )
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


def _assert_identical_replicas(states: list[dict[str, Any]], stage: str, local_buffers: tuple[str, ...] = ()) -> None:
    """Every parameter and buffer is equal on both ranks, but BatchNorm's running statistics (and the buffers
    whose names contain one of ``local_buffers``, e.g. PGSeg's momentum prototypes).

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
        if not name.endswith(("running_mean", "running_var")) and not any(part in name for part in local_buffers):
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
    _assert_rank0_wrote(
        summaries,
        "recipe.yaml",
        "hypotheses.pt",
        "hypotheses.json",
        "pseudo_labels.npz",
        "rectifier/reclip.json",
        "rectifier/training.json",
        "model/reclip.json",
        "model/training.json",
    )
    assert (run / "rectify" / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    assert (run / "distill" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    _assert_no_temporary_files(run)

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
    _assert_rank1_wrote_only(summaries, "store/shard-")
    _assert_rank0_wrote(
        summaries,
        "recipe.yaml",
        "store/manifest.json",
        "store/shard-00000.npy",
        "archive.json",
        "purity.json",
        "pseudo_masks.npz",
        "saliency.json",
        "model/zutis.json",
        "model/training.json",
    )
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    _assert_no_temporary_files(run)

    # The folder loads with the method's loader and holds rank 0's trained weights (stored in fp16).
    torch.manual_seed(0)
    clip = load_clip(register_model_config())
    assert read_zutis_info(run / "model")["label_names"] == ["background", "cow", "car"]
    _assert_export_is_rank0(load_zutis(run / "model", clip).model.state_dict(), states[0]["train"]["state"])
    assert json.loads((run / "model" / "training.json").read_text())["steps"] == 3


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a test, restored afterwards (later tests in this process compare outputs bit for bit
    with other processes)."""
    with _one_torch_thread():
        yield


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One torch thread, as the launched ranks use (OMP_NUM_THREADS=1), restored afterwards: rendering and
    augmenting a batch with another thread count can differ in the last bits of a pixel."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _assert_one_process_batches(
    summaries: list[dict[str, Any]], stage: str, pixels: Callable[[int], torch.Tensor], steps: int
) -> None:
    """Rank ``r``'s ``i``-th batch is batch ``2 i + r`` of the one-process sequence (``pixels(b)``, its pixels,
    computed here on one thread like the ranks)."""
    for rank in range(2):
        with _one_torch_thread():
            expected = [float(pixels(2 * i + rank).double().sum()) for i in range(steps)]
        assert summaries[rank]["seen"][stage] == expected, f"{stage}: rank {rank} did not get batches {rank}, ..."


def _assert_rank1_wrote_only(summaries: list[dict[str, Any]], store_shards: str) -> None:
    """Rank 1 wrote at most its own shards of the embedding store (``embed_collection`` splits them over the ranks)
    and nothing rank 0 wrote."""
    others = _files(summaries[1]["writes"])
    assert all(path.startswith(store_shards) for path in others), sorted(others)
    assert not others & _files(summaries[0]["writes"])


def _assert_rank0_wrote(summaries: list[dict[str, Any]], *names: str) -> None:
    """Rank 0 wrote every file of ``names`` in its first call."""
    written = _files(summaries[0]["first_writes"])
    for name in names:
        assert name in written, f"rank 0 did not write {name}: {sorted(written)}"


def _assert_no_temporary_files(run: Path) -> None:
    assert not [path for path in run.rglob("*") if path.name.startswith(".") or ".tmp" in path.name]


def test_synthetic_clip_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(SYNTHETIC_CLIP_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    for summary in summaries:  # every rank returns the same run
        assert summary["model_dir"] == summary["rerun_model_dir"] == str(run / "model")
        assert summary["steps"] == 3

    _assert_identical_replicas(states, "train")
    _assert_disjoint_batches(summaries, "train", 3)
    recipe = SyntheticClipRecipe(model_name=SYNTHETIC_CLIP_NAME, model_cfg=SYNTHETIC_CLIP_CONFIG)
    clip = build_synthetic_clip(recipe)
    pairs = WorldPairBatches(WorldConfig(seed=11), 4, clip.tokenizer, clip.normalization)
    _assert_one_process_batches(summaries, "train", lambda b: pairs[b]["images"], 3)

    # Rank 1 wrote nothing in the run folder; rank 0 wrote the recipe and the model folder.
    assert _files(summaries[1]["writes"]) == set()
    _assert_rank0_wrote(summaries, "recipe.yaml", f"model/{CLIP_CONFIG_FILE}", f"model/{CLIP_WEIGHTS_FILE}")
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    _assert_no_temporary_files(run)
    # The local-dir folder loads with open_clip and holds rank 0's trained weights (stored in fp16).
    loaded = load_clip(f"local-dir:{run / 'model'}")
    _assert_export_is_rank0(loaded.model.state_dict(), states[0]["train"]["state"])


def test_groupvit_and_pgseg_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(GROUPVIT_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    tokenizer = groupvit_tokenizer(GROUPVIT_TINY_CONFIG.text.context_length)
    pairs = WorldPairBatches(WorldConfig(seed=11), 4, tokenizer, GROUPVIT_TINY_CONFIG.normalization)
    for name, steps in (("groupvit", 3), ("pgseg", 4)):
        for summary in summaries:  # every rank returns the same run
            result = summary["runs"][name]
            assert result["model_dir"] == result["rerun_model_dir"] == str(run / name / "model")
            assert result["steps"] == steps
        # PGSeg's momentum prototypes are buffers each rank updates from its own batch (rank 0's are broadcast).
        _assert_identical_replicas(states, name, local_buffers=("_prototypes_",))
        _assert_disjoint_batches(summaries, name, steps)
        _assert_one_process_batches(summaries, name, lambda b: pairs[b]["images"], steps)
        assert (run / name / "checkpoints" / "latest").read_text().strip() == f"step_{steps:08d}"

    # PGSeg counts steps in global batches: batch b of the one-process sequence belongs to optimiser step b // 2, so
    # the PG losses switch on at step 3 on both ranks. The InfoNCE over the gathered batch is the same on both, so
    # before the start the logged loss (the ranks' mean) is exactly it; from the start the PG terms add to it.
    assert [summary["indices"]["pgseg"] for summary in summaries] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    for summary in summaries:
        history = summary["runs"]["pgseg"]["history"]
        assert [record["step"] for record in history] == [1, 2, 3, 4]
        extra = [record["loss"] - record["info_nce"] for record in history]
        assert extra[:2] == pytest.approx([0.0, 0.0], abs=1e-6)
        assert min(extra[2:]) > 1e-4, extra

    # Rank 1 wrote nothing in the run folder; rank 0 wrote the recipes and the model folders.
    assert _files(summaries[1]["writes"]) == set()
    written = _files(summaries[0]["writes"])
    for name in (
        "groupvit/recipe.yaml",
        "groupvit/model/model.safetensors",
        "groupvit/model/training.json",
        "pgseg/recipe.yaml",
        "pgseg/model/model.safetensors",
        "pgseg/model/training.json",
    ):
        assert name in written, f"rank 0 did not write {name}: {sorted(written)}"
    _assert_no_temporary_files(run)
    # The folders load with the method's loaders and hold rank 0's trained weights (stored in fp16).
    _assert_export_is_rank0(load_groupvit(run / "groupvit" / "model").state_dict(), states[0]["groupvit"]["state"])
    _assert_export_is_rank0(load_pgseg(run / "pgseg" / "model").state_dict(), states[0]["pgseg"]["state"])


def test_simcon_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(SIMCON_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    tokenizer = groupvit_tokenizer(GROUPVIT_TINY_CONFIG.text.context_length)
    views = WorldViewBatches(
        WorldConfig(seed=11), 4, tokenizer, GROUPVIT_TINY_CONFIG.normalization, views=SIMCON_VIEWS, seed=0
    )
    settings = SimConLossSettings(threshold=0.9, milestones=(0.25, 0.5))
    for name, steps in (("mv-simcon", 3), ("simcon-pgseg", 4)):
        for summary in summaries:  # every rank returns the same run
            result = summary["runs"][name]
            assert result["model_dir"] == result["rerun_model_dir"] == str(run / name / "model")
            assert result["steps"] == steps
            # The λ schedule counts optimiser steps (batch index // 2), the same on both ranks.
            thresholds = [record["threshold"] for record in result["history"]]
            assert thresholds == [settings.threshold_at(step, steps) for step in range(steps)]
        _assert_identical_replicas(states, name, local_buffers=("_prototypes_",))
        _assert_disjoint_batches(summaries, name, steps)
        _assert_one_process_batches(summaries, name, lambda b: views[b]["view1"], steps)
        assert [summary["indices"][name] for summary in summaries] == [
            list(range(0, 2 * steps, 2)),
            list(range(1, 2 * steps, 2)),
        ]
    for summary in summaries:  # the PG losses are on from step 3 of 4 on both ranks
        history = summary["runs"]["simcon-pgseg"]["history"]
        assert ["pg_image_0" in record for record in history] == [False, False, True, True]

    assert _files(summaries[1]["writes"]) == set()
    written = _files(summaries[0]["writes"])
    for name in ("mv-simcon", "simcon-pgseg"):
        for file in ("recipe.yaml", "model/model.safetensors", "model/training.json"):
            assert f"{name}/{file}" in written, f"rank 0 did not write {name}/{file}: {sorted(written)}"
    _assert_no_temporary_files(run)
    for name, load in (("mv-simcon", load_groupvit), ("simcon-pgseg", load_pgseg)):
        trained = {  # the trained module is the model and the training-only prediction head
            key.removeprefix("model."): value
            for key, value in states[0][name]["state"].items()
            if key.startswith("model.")
        }
        _assert_export_is_rank0(load(run / name / "model").state_dict(), trained)


def test_reco_and_reco_plus_under_torchrun(tmp_path: Path) -> None:
    run, summaries, states = _launch(RECO_SCRIPT, tmp_path)
    assert [summary["world_size"] for summary in summaries] == [2, 2]
    for summary in summaries:  # every rank returns the same runs, with rank 0's archive read back
        assert summary["reco_dir"] == summary["rerun_reco_dir"] == str(run / "reco" / "model")
        assert summary["model_dir"] == summary["rerun_model_dir"] == str(run / "plus" / "model")
        assert summary["pseudo_labels"] == str(run / "plus" / "pseudo_labels.npy")
        assert summary["archive"] == summaries[0]["archive"]
        assert summary["purity"] == summaries[0]["purity"]
        assert summary["steps"] == 3
    assert [concept["concept"] for concept in summaries[0]["archive"]["concepts"]] == ["cow", "grass", "sky"]

    _assert_identical_replicas(states, "reco-plus")
    _assert_disjoint_batches(summaries, "reco-plus", 3)
    plus = ReCoPlusRecipe(num_images=6, batch_size=2)
    labels = np.load(run / "plus" / "pseudo_labels.npy")
    one_process = reco_module._PseudoLabelBatches(WorldImages(plus.world, plus.split, 6), labels, plus)
    _assert_one_process_batches(summaries, "reco-plus", lambda b: one_process.batch(b)["images"], 3)

    # Rank 0 alone curated and co-segmented (once per call) and pseudo-labelled (once: the re-run reuses them).
    assert summaries[0]["calls"] == {"curate_archive": 2, "reference_embeddings": 2, "make_pseudo_labels": 1}
    assert summaries[1]["calls"] == {}
    # Rank 1 wrote at most its own shards of the embedding store (these 24 images make one shard, rank 0's).
    _assert_rank1_wrote_only(summaries, "reco/store/shard-")
    _assert_rank0_wrote(
        summaries,
        "reco/store/manifest.json",
        "reco/archive.json",
        "reco/purity.json",
        "reco/model/reco.json",
        f"reco/model/{REFERENCES_FILE_NAME}",
        "plus/recipe.yaml",
        "plus/pseudo_labels.npy",
        "plus/model/reco_plus.json",
        "plus/model/model.safetensors",
    )
    assert (run / "plus" / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    _assert_no_temporary_files(run)

    # The folders load with the methods' loaders; ReCo+ holds rank 0's trained weights (stored in fp16).
    assert load_reference_embeddings(run / "reco" / "model").names == ("cow", "grass")
    assert read_reco_plus_info(run / "plus" / "model").label_names == ("cow", "grass")
    _assert_export_is_rank0(load_file(run / "plus" / "model" / "model.safetensors"), states[0]["reco-plus"]["state"])
    assert load_reco_plus(run / "plus" / "model").label_names == ("cow", "grass")


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    """The re-run above re-exports the rectifier; safetensors writes its metadata in no fixed order, so the
    pseudo-labels' fingerprint of the rectifier must not be the file's bytes (a re-run failed about half the time)."""
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


class _Items(Dataset[dict[str, torch.Tensor]]):
    """Item ``b``: its index and a draw seeded by it (a stand-in for a dataset of whole batches)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        noise = torch.rand(3, generator=torch.Generator().manual_seed(index))
        return {"index": torch.tensor(index), "noise": noise}


def _old_batch_loader(dataset: Dataset[dict[str, torch.Tensor]], workers: int) -> Any:
    """``batch_loader`` as it was before the ranks split the batches (a copy of its index logic)."""

    def batches(start_batch: int) -> Any:
        yield from DataLoader(
            dataset,
            batch_size=None,
            sampler=range(start_batch, len(dataset)),  # type: ignore[arg-type]
            num_workers=workers,
            prefetch_factor=4 if workers > 0 else None,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(0),
        )

    return batches


def test_batch_loader_in_one_process_is_unchanged_and_ranks_split_its_sequence() -> None:
    dataset = _Items()
    for start in (0, 3):  # a fresh and a resumed run
        old = list(itertools.islice(_old_batch_loader(dataset, 0)(start), 6))
        new = list(itertools.islice(batch_loader(dataset, 0)(start), 6))
        assert [int(batch["index"]) for batch in new] == list(range(start, start + 6))
        for before, after in zip(old, new, strict=True):
            assert before.keys() == after.keys()
            assert all(torch.equal(before[key], after[key]) for key in before)
    # Rank r of 3, resumed after 2 of its batches: items 2·3 + r, 3·3 + r, ...; the ranks never share an item.
    seen: set[int] = set()
    for rank in range(3):
        indices = [
            int(batch["index"]) for batch in itertools.islice(batch_loader(dataset, 0, rank=rank, world_size=3)(2), 4)
        ]
        assert indices == [i * 3 + rank for i in range(2, 6)]
        assert not seen & set(indices)
        seen |= set(indices)
    for rank, world_size in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank must be in"):
            batch_loader(dataset, 0, rank=rank, world_size=world_size)


def test_step_functions_count_optimiser_steps_over_the_ranks() -> None:
    """Under W processes with A micro-batches a step, batch b belongs to optimiser step b // (A·W)."""
    recipe = SimConRecipe(
        model=GROUPVIT_TINY_CONFIG,
        batch_size=2,
        loss=SimConLossSettings(kind="simcon", threshold=0.9, milestones=(0.25, 0.5)),
        train=TrainConfig(max_steps=4, grad_accum_steps=2),
    )
    module = SimConModule(new_grouping_model(GROUPVIT_TINY_CONFIG, 0), None)
    module.eval()
    tokenizer = groupvit_tokenizer(GROUPVIT_TINY_CONFIG.text.context_length)
    views = WorldViewBatches(
        WorldConfig(seed=11), 2, tokenizer, GROUPVIT_TINY_CONFIG.normalization, views=SIMCON_VIEWS, seed=0
    )
    batch = views[0]
    for world_size, expected in ((1, [0.9, 0.9, 0.85, 0.85, 0.8, 0.8]), (2, [0.9] * 4 + [0.85, 0.85])):
        step = simcon_step(recipe, world_size)
        thresholds = []
        for index in range(6):
            output = step(module, batch | {"batch_index": torch.tensor(index)})
            assert output.metrics is not None
            thresholds.append(output.metrics["threshold"])
        assert thresholds == pytest.approx(expected)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        simcon_step(recipe, 0)
    with pytest.raises(ValueError, match="grad_accum_steps and world_size must be >= 1"):
        pgseg_step(PGLossSettings(), 0, 1, world_size=0)
