"""`--devices 2` trains with DDP over two CPU processes and still leaves one complete run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ewaste_vision.data.synth import write_component_crops


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["linear", "full"])
def test_two_cpu_processes(tmp_path: Path, strategy: str):
    crops = write_component_crops(tmp_path / "crops", n_per_class=8, seed=5, size=40)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "ewaste_vision.cli",
        "train",
        str(crops),
        "--out",
        str(run),
        "--backbone",
        "tiny",
        "--image-size",
        "32",
        "--max-epochs",
        "2",
        "--head-epochs",
        "2",
        "--devices",
        "2",
        "--strategy",
        strategy,
        "--accelerator",
        "cpu",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| Processes | 2 |" in (run / "report.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert result.stdout.count("test accuracy") == 1  # only rank 0 evaluates and reports
