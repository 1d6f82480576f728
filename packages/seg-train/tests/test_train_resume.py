"""Exact resume across processes: a run SIGKILLed midway and resumed ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

TRAIN_SCRIPT = textwrap.dedent(
    """
    import os
    import random
    import signal
    import sys

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from seg_core import TrainConfig
    from seg_train import ResumableIndexBatches, Trainer, build_optimizer, seed_everything

    out_dir, kill_at_step = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    config = TrainConfig.parse({
        "max_steps": 12, "lr": 0.03, "weight_decay": 0.01, "grad_accum_steps": 2, "grad_clip_norm": 1.0,
        "schedule": {"kind": "cosine", "warmup_steps": 3, "min_lr_ratio": 0.1},
        "checkpoint_every": 4, "keep_checkpoints": 2, "log_every": 2, "progress": False, "tensorboard": False,
    })
    seed_everything(config.seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Conv2d(4, 3, 1))
    optimizer = build_optimizer(config, [
        {"params": model[0].parameters(), "lr_multiplier": 0.5},
        {"params": model[3].parameters()},
    ])
    data_generator = torch.Generator().manual_seed(7)
    images = torch.randn(24, 1, 6, 6, generator=data_generator)
    masks = torch.randint(0, 3, (24, 6, 6), generator=data_generator)
    index_batches = ResumableIndexBatches(len(images), batch_size=4, seed=config.seed)

    def batches(start_batch):
        for indices in index_batches(start_batch):
            yield {"image": images[indices], "mask": masks[indices]}

    def step(model, batch):
        if trainer.global_step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint
        jitter = 0.01 * random.random() + 0.01 * float(np.random.rand())  # python and numpy RNG must resume too
        logits = model(batch["image"] + jitter)  # dropout: torch RNG must resume
        loss = F.cross_entropy(logits, batch["mask"])
        return {"loss": loss, "pixel_accuracy": (logits.argmax(1) == batch["mask"]).float().mean()}

    trainer = Trainer(config, model, optimizer, step, out_dir=out_dir)
    result = trainer.fit(batches, resume_from="latest")
    print("final step", result.final_step)
    """
)


def _launch(script: Path, out_dir: Path, kill_at_step: int) -> subprocess.Popen[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(out_dir), str(kill_at_step)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )


def test_sigkilled_run_resumes_bit_identical(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"

    reference = _launch(script, reference_dir, kill_at_step=-1)
    killed = _launch(script, killed_dir, kill_at_step=6)  # killed during step 7; the last checkpoint is step 4
    killed_output, _ = killed.communicate(timeout=120)
    reference_output, _ = reference.communicate(timeout=120)
    assert reference.returncode == 0, reference_output
    assert killed.returncode == -signal.SIGKILL, killed_output
    checkpoints = killed_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_00000004"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["latest", "step_00000004"]

    resume_point = load_file(checkpoints / "step_00000004" / "model.safetensors")
    resumed = _launch(script, killed_dir, kill_at_step=-1)
    resumed_output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, resumed_output
    assert "at step 4" in resumed_output
    assert "final step 12" in resumed_output

    final = "checkpoints/step_00000012/model.safetensors"
    reference_weights, resumed_weights = load_file(reference_dir / final), load_file(killed_dir / final)
    assert reference_weights.keys() == resumed_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
    assert not torch.equal(resume_point["0.weight"], resumed_weights["0.weight"])  # training did continue
    # Log lines after the resume point repeat the uninterrupted run's exactly (loss, lr, metrics).
    after_resume = [line.split(" | steps/s")[0] for line in reference_output.splitlines() if line.startswith("step 1")]
    repeated = [line.split(" | steps/s")[0] for line in resumed_output.splitlines() if line.startswith("step 1")]
    assert [line.rsplit(" | ", 1)[0] for line in after_resume] == [line.rsplit(" | ", 1)[0] for line in repeated]
    assert len(repeated) == 2  # steps 10 and 12
