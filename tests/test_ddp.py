"""`--devices 2` trains with DDP over two CPU processes, both of them learn, and one complete run is left.

The data are separable (three classes of flat, noisy colour), so a model that trained reaches far
above the majority baseline; one that did not stays near it. That both processes trained is read
from the training log: DDP gives each process half of every epoch's samples, so a two-process epoch
takes half the optimiser steps of a one-process epoch on the same data, and since every step's
gradients are averaged across the processes (a collective call that blocks until both arrive), no
step can complete unless both processes took it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def _write_colour_classes(root: Path, per_class: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
    return root


def _train(data: Path, run: Path, strategy: str, devices: int) -> subprocess.CompletedProcess[str]:
    epochs = ["--head-epochs", "15"] if strategy == "linear" else ["--max-epochs", "6"]
    command = [
        sys.executable,
        "-m",
        "ewaste_vision.cli",
        "train",
        str(data),
        "--out",
        str(run),
        "--backbone",
        "tiny",
        "--no-pretrained",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        *epochs,
        "--devices",
        str(devices),
        "--strategy",
        strategy,
        "--accelerator",
        "cpu",
        "--seed",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def _steps_per_epoch(run: Path) -> int:
    """Optimiser steps of the first epoch, from the run's CSV log (the step of epoch 1's first row)."""
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["train_loss"]]
    steps = {int(row["epoch"]): int(row["step"]) for row in rows}
    assert 0 in steps and 1 in steps, "the log needs at least two epochs"
    return steps[1] - steps[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["linear", "full"])
def test_two_cpu_processes_both_learn(tmp_path: Path, strategy: str):
    data = _write_colour_classes(tmp_path / "colours")
    result = _train(data, tmp_path / "ddp", strategy, devices=2)
    single = tmp_path / "single"
    _train(data, single, strategy, devices=1)
    run = tmp_path / "ddp"

    assert "| Processes | 2 |" in (run / "report.md").read_text()
    assert result.stdout.count("test accuracy") == 1  # only rank 0 evaluates and reports
    metrics = json.loads((run / "metrics.json").read_text())
    baseline = metrics["baseline_accuracy"]
    assert baseline < 0.5
    assert metrics["accuracy"] >= baseline + 0.3, metrics
    # Each process took half of every epoch's batches: the two-process epoch has half the steps.
    one_process = _steps_per_epoch(single)
    assert one_process >= 4
    assert _steps_per_epoch(run) == math.ceil(one_process / 2)
