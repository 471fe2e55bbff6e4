"""Shared fixtures: where the real data lives, and synthetic images drawn in `tmp_path`."""

from __future__ import annotations

import os
from collections.abc import Callable
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
