"""Heatmap quality scores on synthetic maps whose answer is known, and `cam_quality` on a tiny net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ewaste_vision.data.records import ObjectBox
from ewaste_vision.explain.quality import (
    box_mask,
    cam_quality,
    centre_gaussian,
    energy_in_boxes,
    pointing_game,
)
from ewaste_vision.models.classifier import build_classifier


def _peak_at(row: int, column: int, size: int = 32, spread: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    return np.exp(-((ys - row) ** 2 + (xs - column) ** 2) / (2 * spread**2)).astype(np.float32)


BOX = ObjectBox(0, cx=0.25, cy=0.25, w=0.25, h=0.25)  # pixels 4..11 of a 32 px map


def test_a_map_peaked_inside_the_box_hits_and_keeps_its_energy_there() -> None:
    cam = _peak_at(8, 8, spread=1.0)
    assert pointing_game(cam, [BOX])
    assert energy_in_boxes(cam, [BOX]) == pytest.approx(1.0, abs=1e-3)
    assert pointing_game(torch.from_numpy(cam), [BOX])  # tensors are accepted too


def test_a_map_peaked_outside_misses() -> None:
    cam = _peak_at(24, 24, spread=1.0)
    assert not pointing_game(cam, [BOX])
    assert energy_in_boxes(cam, [BOX]) < 1e-3
    assert pointing_game(cam, [BOX, ObjectBox(0, 0.75, 0.75, 0.1, 0.1)])  # any box of the class counts
    assert not pointing_game(cam, [])


def test_tolerance_grows_the_boxes() -> None:
    cam = _peak_at(14, 8, spread=1.0)  # three pixels below the box
    assert not pointing_game(cam, [BOX])
    assert pointing_game(cam, [BOX], tolerance_px=3)


def test_energy_is_a_share_of_the_total() -> None:
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[:, :5] = 1.0  # left half
    half = ObjectBox(0, cx=0.25, cy=0.5, w=0.5, h=1.0)
    assert energy_in_boxes(cam, [half]) == pytest.approx(1.0)
    assert energy_in_boxes(cam, [ObjectBox(0, 0.5, 0.5, 1.0, 1.0)]) == pytest.approx(1.0)
    assert energy_in_boxes(np.ones((10, 10)), [half]) == pytest.approx(0.5)
    assert energy_in_boxes(np.zeros((10, 10)), [half]) == 0.0  # a blank map has no energy anywhere


def test_box_mask_scales_normalised_boxes_and_keeps_tiny_ones() -> None:
    mask = box_mask([BOX], 32, 64)
    assert mask.sum() == 8 * 16 and mask[4:12, 8:24].all()
    tiny = box_mask([ObjectBox(0, 0.51, 0.51, 0.001, 0.001)], 10, 10)
    assert tiny.sum() == 1 and tiny[5, 5]


def test_centre_gaussian_peaks_in_the_middle_and_is_symmetric() -> None:
    base = centre_gaussian(40, 60)
    assert base.shape == (40, 60) and base.dtype == np.float32
    assert base.max() == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(base, base[::-1, ::-1], atol=1e-6)
    assert base[20, 30] > base[20, 45] > base[20, 59] > 0
    # sigma is a quarter of the side (15 px); pixel centres sit 0.5 and 15.5 px from the middle
    assert base[20, 45] / base[20, 30] == pytest.approx(np.exp(-0.5 * ((15.5 / 15) ** 2 - (0.5 / 15) ** 2)))
    assert pointing_game(base, [ObjectBox(0, 0.5, 0.5, 0.2, 0.2)])
    assert not pointing_game(base, [BOX])
    assert centre_gaussian(40, 40, 0.05)[0, 0] < centre_gaussian(40, 40, 0.5)[0, 0]
    with pytest.raises(ValueError):
        centre_gaussian(4, 4, 0.0)


def test_cam_quality_reports_per_class_scores_beside_the_baseline() -> None:
    torch.manual_seed(0)
    model, _ = build_classifier("tiny", 3, pretrained=False)
    images = torch.randn(3, 3, 32, 32)
    boxes = [
        [ObjectBox(0, 0.3, 0.3, 0.2, 0.2), ObjectBox(0, 0.7, 0.7, 0.2, 0.2)],
        [ObjectBox(1, 0.5, 0.5, 0.4, 0.4), ObjectBox(0, 0.2, 0.8, 0.2, 0.2)],
        [],
    ]
    result = cam_quality(model, images, boxes, ["a", "b", "c"], backbone="tiny", road_percentiles=(30, 70))
    assert result["cam_method"] == "gradcam"
    assert set(result["cam_pointing"]) == {"a", "b"}  # only classes with boxes
    assert result["cam_pointing"]["a"]["n"] == 2 and result["cam_pointing"]["b"]["n"] == 1
    assert result["cam_pointing"]["b"]["centre_baseline"] == 1.0  # a centred box holds the centre
    for table in ("cam_pointing", "cam_energy_in_box"):
        for row in result[table].values():
            assert 0.0 <= row["cam"] <= 1.0 and 0.0 <= row["centre_baseline"] <= 1.0
    assert sum(row["n"] for row in result["cam_road"].values()) == 3  # one predicted class per image
    assert all(np.isfinite(row["cam"]) for row in result["cam_road"].values())
    without_road = cam_quality(model, images, boxes, ["a", "b", "c"], "eigencam", "tiny", road=False)
    assert "cam_road" not in without_road and without_road["cam_method"] == "eigencam"
    with pytest.raises(ValueError, match="boxes for"):
        cam_quality(model, images, boxes[:2], ["a", "b", "c"], backbone="tiny")
