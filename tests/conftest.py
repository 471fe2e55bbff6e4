"""Shared fixtures: where the real data lives, synthetic images drawn in `tmp_path`, tiny runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _offline_and_deterministic(monkeypatch: pytest.MonkeyPatch):
    """Tests never download weights, and leave the global RNGs as they found them."""
    monkeypatch.setenv("EWASTE_NO_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    yield
    torch.random.set_rng_state(torch_state)
    np.random.set_state(numpy_state)


@pytest.fixture(scope="session", autouse=True)
def _private_temp_dir(tmp_path_factory: pytest.TempPathFactory):
    """Temporary files of the session in pytest's own folder, which it prunes: gradio_client
    leaves an empty folder in the system temp dir for every file it downloads."""
    import tempfile

    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempdir"))
    yield
    tempfile.tempdir = previous


@pytest.fixture
def shared_data() -> Path:
    """The real datasets folder: `$EWASTE_SHARED_DATA`, or `../shared/data` beside the repository."""
    configured = os.environ.get("EWASTE_SHARED_DATA")
    folder = (
        Path(configured) if configured else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: real-data tests need ../shared/data beside the repository")
    return folder


def draw_shapes(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """An RGB image of random rectangles; different seeds give images perceptual hashes tell apart."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.full((height, width, 3), rng.integers(0, 256, size=3), dtype=np.uint8)
    for _ in range(8):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        pixels[y0 : y1 + 1, x0 : x1 + 1] = rng.integers(0, 256, size=3)
    return Image.fromarray(pixels)


@pytest.fixture
def make_image() -> Callable[..., Path]:
    """`make_image(path, seed, size=(64, 64))` writes a `draw_shapes` image (format from the suffix)."""

    def make(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_shapes(seed, size).save(path)
        return path

    return make


TinyRuns = Callable[[Path, Mapping[str, Path], int], dict[str, Path]]


@pytest.fixture(scope="session")
def train_tiny_runs() -> TinyRuns:
    """`train_tiny_runs(root, data, head_epochs)` trains one tiny run per task, for the app tests.

    `data["crops"]` (class folders) trains `classify`, `data["boards"]` (YOLO) `multilabel` and
    `detect`, and `data["xray"]` (YOLO X-ray scans), where given, a `detect` run named `xray`.
    Returns run directories under `root` by name, in that order.
    """
    from ewaste_vision.cli import main

    tiny = ["--backbone", "tiny", "--no-pretrained"]

    def train(root: Path, data: Mapping[str, Path], head_epochs: int) -> dict[str, Path]:
        label = ["--image-size", "64", "--strategy", "linear", "--head-epochs", str(head_epochs)]
        detect = ["--image-size", "96", "--max-epochs", "1", "--batch-size", "4"]
        commands = {
            "classify": [str(data["crops"]), *label],
            "multilabel": [str(data["boards"]), *label],
            "detect": [str(data["boards"]), *detect],
        }
        if "xray" in data:
            commands["xray"] = [str(data["xray"]), *detect]
        for name, args in commands.items():
            task = "detect" if name == "xray" else name
            assert main(["train", *args, "--task", task, "--out", str(root / name), *tiny]) == 0
        return {name: root / name for name in commands}

    return train


LONGEST_FILES_FIRST = (
    "test_demo.py",
    "test_real_multilabel.py",
    "test_ray_engine.py",
    "test_real_data.py",
    "test_bad_corpus.py",
    "test_detect.py",
    "test_ddp.py",
    "test_faults.py",
)
"""Test files that each take minutes, longest first (measured with `--durations=0`). Under
pytest-xdist (pyproject.toml) the scheduler orders files itself; with `-n 0` the long files run
first, so a failure in them shows early."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
