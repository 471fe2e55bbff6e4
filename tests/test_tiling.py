"""Tiled inference with a toy detector whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.detect.tiling import detect_tiled, detect_tiled_arrays, needs_tiling, tile_windows

TILE = 640


class BrightSquareDetector:
    """Finds bright rectangles, but only those at least `min_side` pixels in its own input.

    Like a real detector, it first resizes what it is given so the long side is `input_size`, then
    misses what became too small; boxes come back in the pixels of what it was given. Rectangles
    must not share rows or columns with each other (it reads them off row and column profiles).
    """

    def __init__(self, input_size: int = TILE, min_side: int = 6) -> None:
        self.input_size = input_size
        self.min_side = min_side
        self.calls: list[int] = []

    def __call__(self, tiles: list[torch.Tensor]) -> list[DetectionPrediction]:
        self.calls.append(len(tiles))
        return [self._detect(tile) for tile in tiles]

    def _detect(self, tile: torch.Tensor) -> DetectionPrediction:
        height, width = tile.shape[1:]
        scale = self.input_size / max(height, width)
        size = (round(height * scale), round(width * scale))
        resized = F.interpolate(tile[None], size=size, mode="area")[0] if scale != 1 else tile
        bright = resized.mean(dim=0) > 0.5  # [h, w]
        boxes = []
        for y0, y1 in _runs(bright.any(dim=1)):
            for x0, x1 in _runs(bright[y0:y1].any(dim=0)):
                if x1 - x0 >= self.min_side and y1 - y0 >= self.min_side:
                    boxes.append([x0 / scale, y0 / scale, x1 / scale, y1 / scale])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.full((len(boxes),), 0.9),
            "labels": torch.zeros(len(boxes), dtype=torch.long),
        }


def _runs(profile: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a 1-D bool tensor, end exclusive."""
    padded = torch.cat([torch.tensor([False]), profile, torch.tensor([False])]).int()
    changes = torch.nonzero(padded[1:] - padded[:-1]).flatten().tolist()
    return list(zip(changes[::2], changes[1::2], strict=True))


def board(width: int, height: int, squares: list[tuple[int, int, int, int]]) -> torch.Tensor:
    image = torch.zeros(3, height, width)
    for x0, y0, x1, y1 in squares:
        image[:, y0:y1, x0:x1] = 1.0
    return image


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [
        (4080, 3060, 640, 0.2),
        (640, 480, 640, 0.2),
        (100, 700, 640, 0.5),
        (1000, 1001, 300, 0.0),
        (5, 5, 2, 0.9),
    ],
)
def test_windows_cover_every_pixel_and_stay_inside(width: int, height: int, tile: int, overlap: float):
    windows = tile_windows(width, height, tile, overlap)
    covered = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0, y1 - y0) == (min(tile, width), min(tile, height))
        covered[y0:y1, x0:x1] = True
    assert bool(covered.all())
    # Neighbours share at least `overlap` of a tile (up to rounding), so small objects are seen whole.
    for axis in (0, 1):
        starts = sorted({window[axis] for window in windows})
        assert all(tile - (b - a) >= math.floor(tile * overlap) for a, b in itertools.pairwise(starts))


def test_small_image_gets_one_window():
    assert tile_windows(640, 480, 640, 0.2) == [(0, 0, 640, 480)]
    assert len(tile_windows(4080, 3060, 640, 0.2)) == 8 * 6


def test_bad_window_arguments_raise():
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 64, 1.0)
    with pytest.raises(ValueError, match="positive"):
        tile_windows(0, 100, 64, 0.2)


def test_needs_tiling_only_beyond_the_slack():
    assert needs_tiling(4080, 3060, tile=640)
    assert not needs_tiling(800, 600, tile=640, slack=0.25)  # exactly 1.25x: whole-image is fine
    assert needs_tiling(801, 600, tile=640, slack=0.25)


def test_tiled_inference_finds_a_small_part_that_whole_image_inference_misses():
    part = (2000, 1500, 2012, 1512)  # 12 px: 2 px after shrinking 4080 px to 640
    image = board(4080, 3060, [part])
    detector = BrightSquareDetector(input_size=TILE, min_side=6)

    whole = detector([image])[0]
    assert len(whole["boxes"]) == 0

    tiled = detect_tiled(detector, image, tile=TILE, overlap=0.2)
    assert tiled["boxes"].tolist() == [list(map(float, part))]
    assert tiled["labels"].tolist() == [0]


@pytest.mark.parametrize(
    ("width", "height", "part"),
    [
        (1152, 640, (600, 100, 700, 200)),  # across the vertical edge at x = 640, whole in tile 2
        (1152, 1152, (600, 600, 700, 700)),  # on the corner of four tiles, whole in one of them
        (1152, 640, (400, 100, 900, 200)),  # longer than the overlap: cut in both tiles, fused
    ],
)
def test_object_across_a_tile_edge_comes_out_once(width: int, height: int, part: tuple[int, int, int, int]):
    image = board(width, height, [part])
    detector = BrightSquareDetector()
    raw = detector([image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in tile_windows(width, height, TILE, 0.2)])
    assert sum(len(result["boxes"]) for result in raw) >= 2  # seen (whole or cut) by several tiles

    tiled = detect_tiled(detector, image, tile=TILE, overlap=0.2)
    assert tiled["boxes"].tolist() == [list(map(float, part))]


def test_neighbouring_parts_in_the_overlap_stay_apart():
    parts = [(560, 100, 600, 140), (610, 300, 650, 340)]  # the second is cut by the edge at x = 640
    tiled = detect_tiled(BrightSquareDetector(), board(1152, 640, parts), tile=TILE, overlap=0.2)
    assert sorted(tiled["boxes"].tolist()) == sorted([list(map(float, part)) for part in parts])


def test_batches_of_tiles_and_empty_result():
    detector = BrightSquareDetector()
    tiled = detect_tiled(detector, torch.zeros(3, 1500, 1500), tile=TILE, overlap=0.2, batch_size=4)
    assert detector.calls == [4, 4, 1]  # 3 x 3 tiles
    assert tiled["boxes"].shape == (0, 4)
    assert tiled["scores"].shape == tiled["labels"].shape == (0,)
    assert tiled["labels"].dtype == torch.long


def test_bad_image_raises():
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        detect_tiled(BrightSquareDetector(), torch.zeros(1, 3, 64, 64))


def test_numpy_images_are_merged_as_tensors_are():
    # Whole in one tile, cut in both and fused, and a part cut by an edge: every merge step.
    parts = [(600, 100, 700, 200), (400, 300, 900, 400), (610, 500, 650, 540)]
    image = board(1152, 640, parts)
    detector = BrightSquareDetector()

    def on_arrays(tiles: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        found = detector([torch.from_numpy(tile) for tile in tiles])
        return [{key: value.numpy() for key, value in result.items()} for result in found]

    expected = detect_tiled(detector, image, tile=TILE, overlap=0.2)
    got = detect_tiled_arrays(on_arrays, image.numpy(), tile=TILE, overlap=0.2)
    for key in ("boxes", "scores", "labels"):
        assert got[key].dtype == expected[key].numpy().dtype
        assert np.array_equal(got[key], expected[key].numpy())
    assert sorted(got["boxes"].tolist()) == sorted([list(map(float, part)) for part in parts])
