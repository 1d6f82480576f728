"""ConfusionMatrix.all_reduce across two real gloo ranks (two Python processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from seg_eval.metrics import ConfusionMatrix, HungarianMatchedIoU

RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from seg_eval.metrics import ConfusionMatrix, HungarianMatchedIoU

    rank = int(sys.argv[1])
    dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2)
    generator = np.random.default_rng(rank)
    target = generator.integers(0, 4, size=(16, 16))
    pred = generator.integers(0, 4, size=(16, 16))
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    clusters = HungarianMatchedIoU(4, num_clusters=6)
    clusters.update(generator.integers(0, 6, size=(16, 16)), target)
    cm.all_reduce()
    clusters.all_reduce()
    print(json.dumps({"confusion": cm.counts.tolist(), "clusters": clusters.counts.tolist()}))
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_all_reduce_sums_over_two_gloo_ranks() -> None:
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(rank), init_method],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(2)
    ]
    outputs = []
    for process in ranks:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))

    expected_confusion, expected_clusters = ConfusionMatrix(4), HungarianMatchedIoU(4, num_clusters=6)
    for rank in range(2):
        generator = np.random.default_rng(rank)
        target = generator.integers(0, 4, size=(16, 16))
        expected_confusion.update(generator.integers(0, 4, size=(16, 16)), target)
        expected_clusters.update(generator.integers(0, 6, size=(16, 16)), target)
    for output in outputs:  # every rank holds the global sum
        assert output["confusion"] == expected_confusion.counts.tolist()
        assert output["clusters"] == expected_clusters.counts.tolist()
    assert expected_confusion.counts.sum() == 2 * 16 * 16
