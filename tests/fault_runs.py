"""Killing `ewaste` commands with SIGKILL and comparing what they leave: shared by tests/test_faults.py
and bench/bench_faults.py (which repeats the kills at many random points)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}

TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial")
"""What `ewaste_vision.io.atomic` (and common tools) name a file while it is being written."""


def write_colour_classes(root: Path, per_class: int = 10, seed: int = 0, side: int = 32) -> Path:
    """Three separable classes of flat, noisy colour in class folders."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
    return root


def ewaste(*args: str) -> list[str]:
    """The command line of `ewaste ARGS` in this interpreter."""
    return [sys.executable, "-m", "ewaste_vision.cli", *args]


def quiet_env(**extra: str) -> dict[str, str]:
    """One thread per process: the shared CI cores, and results that do not depend on thread count."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def kill_when(
    command: Sequence[str],
    ready: Callable[[], bool] | None,
    delay_s: float,
    env: dict[str, str] | None = None,
    timeout_s: float = 300,
) -> int:
    """Start `command`, wait until `ready()` (None: at once), wait `delay_s`, then SIGKILL it.

    Returns:
        The return code: -9 when it was killed, its own code when it finished first.
    """
    process = subprocess.Popen(
        list(command), env=env or quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout_s
    while ready is not None and process.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay_s)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait()


def run_ok(command: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = env or quiet_env()
    result = subprocess.run(list(command), capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def temporary_files(root: Path) -> list[str]:
    """Files a writer leaves while writing: none may be left once a command has finished."""
    return sorted(name for name in files_under(root) if name.endswith(TEMPORARY_SUFFIXES))


def assert_same_run(expected: Path, got: Path) -> None:
    """`got` holds the same files as `expected`, with the same contents where a run is deterministic.

    Checkpoints (Lightning pickles timers and paths into them) and `config.yaml` (it names the run
    folder and `--resume`) are compared by presence; `model.pt` by its tensors; `report.md` line by
    line, except the title (the run's name) and the training time.
    """
    assert files_under(got) == files_under(expected)
    for name in sorted(files_under(expected)):
        a, b = expected / name, got / name
        if name.endswith(".ckpt") or name == "config.yaml":
            continue
        if name == "model.pt":
            first = torch.load(a, weights_only=True)["state_dict"]
            second = torch.load(b, weights_only=True)["state_dict"]
            assert first.keys() == second.keys()
            for key in first:
                assert torch.equal(first[key], second[key]), f"model.pt: {key} differs"
        elif name == "report.md":
            assert _report_lines(a) == _report_lines(b)
        elif name.endswith(".json"):
            assert json.loads(a.read_text()) == json.loads(b.read_text()), name
        else:
            assert a.read_bytes() == b.read_bytes(), name


def assert_same_tables(expected: Path, got: Path, replace: tuple[str, str] = ("", "")) -> None:
    """Every file of `expected` exists in `got` with the same text (after replacing one path)."""
    assert files_under(got) == files_under(expected)
    for name in sorted(files_under(expected)):
        a, b = (expected / name).read_bytes(), (got / name).read_bytes()
        if name.endswith((".csv", ".md", ".json", ".txt", ".yaml")):
            assert a.decode().replace(*replace) == b.decode(), name
        else:
            assert a == b, name


def complete_csv_rows(path: Path) -> list[list[str]]:
    """The rows of a CSV file, checking that every row has the header's width."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows, f"{path}: empty"
    assert all(len(row) == len(rows[0]) for row in rows), f"{path}: a row is cut short"
    return rows


def _report_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line for line in lines[1:] if not line.startswith("| Training |")]
