"""`--num-nodes 2`: two `torchrun` launches on loopback, one per "node", train one run together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ewaste_vision.data.synth import write_component_crops


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_on_loopback_train_one_run(tmp_path: Path) -> None:
    crops = write_component_crops(tmp_path / "crops", n_per_class=12, seed=5, size=40)
    run = tmp_path / "run"
    port = _free_port()
    train = [
        "-m", "ewaste_vision.cli", "train", str(crops), "--out", str(run), "--backbone", "tiny",
        "--no-pretrained", "--image-size", "32", "--strategy", "full", "--max-epochs", "3",
        "--head-epochs", "1", "--no-head-warmup", "--lr", "0.01", "--accelerator", "cpu",
        "--devices", "1", "--num-nodes", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), *train,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=400) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    assert "| Processes | 2 |" in (run / "report.md").read_text()  # one world of two processes
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    # Only global rank 0 (on node 0) evaluates and reports.
    assert sum(stdout.count("test accuracy") for stdout, _ in outputs) == 1
