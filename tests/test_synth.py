"""Synthetic boards and crops: determinism, label validity, boxes that enclose what was drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ewaste_vision.data.synth import (
    COMPONENT_CLASSES,
    COMPONENT_DRAWERS,
    Box,
    draw_board,
    draw_component,
    draw_component_crop,
    write_component_crops,
    write_synthetic_boards,
)

# No component is drawn in pure magenta, so every other pixel on it belongs to a component.
MAGENTA = (255, 0, 255)


def _foreground(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.int32)
    return np.abs(pixels - np.array(MAGENTA)).sum(axis=2) > 60  # (H, W) bool


def _read_labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text(encoding="utf-8").splitlines()]


def test_registry_has_one_drawer_per_class() -> None:
    assert tuple(COMPONENT_DRAWERS) == COMPONENT_CLASSES


@pytest.mark.parametrize("class_name", COMPONENT_CLASSES)
def test_drawers_survive_tiny_and_huge_scales(class_name: str) -> None:
    rng = np.random.default_rng(0)
    for px_per_mm in (0.3, 1.0, 2.5, 12.0, 40.0):
        for _ in range(8):
            sprite = draw_component(class_name, rng, px_per_mm)
            assert sprite.mode == "RGBA" and min(sprite.size) >= 1
            assert np.asarray(sprite.getchannel("A")).max() > 0


def test_same_seed_same_board_and_other_seed_differs() -> None:
    first, first_boxes = draw_board(np.random.default_rng(7), 128)
    again, again_boxes = draw_board(np.random.default_rng(7), 128)
    other, _ = draw_board(np.random.default_rng(8), 128)
    assert first.size == (128, 128) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert first_boxes == again_boxes
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_classes_present_are_exactly_the_drawn_classes() -> None:
    rng = np.random.default_rng(3)
    for wanted in (["ic"], ["resistor", "coil", "transformer"], list(COMPONENT_CLASSES)):
        _, boxes = draw_board(rng, 160, classes_present=wanted)
        assert {box.class_name for box in boxes} == set(wanted)
    _, bare = draw_board(rng, 160, classes_present=[])
    assert bare == []
    with pytest.raises(ValueError, match="unknown component"):
        draw_board(rng, 160, classes_present=["flux_capacitor"])


@pytest.mark.parametrize("class_name", COMPONENT_CLASSES)
def test_box_tightly_encloses_a_single_component(class_name: str) -> None:
    for seed in range(3):
        image, boxes = draw_board(
            np.random.default_rng(seed), 192, classes_present=[class_name], count=1, background=MAGENTA
        )
        assert [box.class_name for box in boxes] == [class_name]
        rows, cols = np.nonzero(_foreground(image))
        left, top, right, bottom = boxes[0].to_pixels(*image.size)
        # Halving the supersampled drawing can move an edge by one output pixel.
        assert cols.min() >= left - 1 and cols.max() + 1 <= right + 1
        assert rows.min() >= top - 1 and rows.max() + 1 <= bottom + 1
        assert cols.min() <= left + 2 and cols.max() + 1 >= right - 2
        assert rows.min() <= top + 2 and rows.max() + 1 >= bottom - 2


def test_every_drawn_pixel_lies_in_some_box() -> None:
    for seed in range(4):
        image, boxes = draw_board(np.random.default_rng(seed), 256, count=10, background=MAGENTA)
        inside = np.zeros((256, 256), dtype=bool)
        for box in boxes:
            left, top, right, bottom = box.to_pixels(256, 256)
            inside[
                max(0, int(top) - 1) : int(np.ceil(bottom)) + 1,
                max(0, int(left) - 1) : int(np.ceil(right)) + 1,
            ] = True
        assert len(boxes) >= 2
        assert not (_foreground(image) & ~inside).any()


def test_boxes_hold_more_detail_than_the_bare_board() -> None:
    # On a full board (traces, noise), parts sit where the local contrast is highest.
    inside_std, outside_std = [], []
    for seed in range(6):
        image, boxes = draw_board(np.random.default_rng(seed), 256)
        gray = np.asarray(image.convert("L"), dtype=np.float32)
        mask = np.zeros_like(gray, dtype=bool)
        for box in boxes:
            left, top, right, bottom = (round(v) for v in box.to_pixels(256, 256))
            mask[top:bottom, left:right] = True
        inside_std.append(float(gray[mask].std()))
        outside_std.append(float(gray[~mask].std()))
    assert np.mean(inside_std) > np.mean(outside_std)


def test_a_closer_field_draws_larger_parts_and_the_count_range_holds() -> None:
    def mean_box_area(field_mm: float) -> float:
        areas = []
        for seed in range(12):
            _, boxes = draw_board(
                np.random.default_rng(seed), 128, field_mm=field_mm, count_range=(2, 4), background=MAGENTA
            )
            assert 1 <= len(boxes) <= 4  # parts that do not fit are dropped, never added
            areas += [box.w * box.h for box in boxes]
        return float(np.mean(areas))

    assert mean_box_area(36.0) > 2.0 * mean_box_area(72.0)
    _, bare = draw_board(np.random.default_rng(0), 96, count_range=(0, 0))
    assert bare == []
    with pytest.raises(ValueError, match="count_range"):
        draw_board(np.random.default_rng(0), 96, count_range=(5, 2))
    with pytest.raises(ValueError, match="field_mm"):
        write_synthetic_boards(Path("unused"), 1, field_mm=0.0)


def test_yolo_tree_is_complete_and_valid(tmp_path: Path) -> None:
    yaml_path = write_synthetic_boards(tmp_path / "boards", n=10, seed=1, size=96)
    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    assert data["names"] == list(COMPONENT_CLASSES) and data["nc"] == 8
    assert (data["train"], data["val"], data["test"]) == ("train/images", "valid/images", "test/images")
    assert Path(data["path"]) == (tmp_path / "boards").resolve()
    counts = {}
    for split in ("train", "valid", "test"):
        images = sorted((tmp_path / "boards" / split / "images").glob("*.jpg"))
        counts[split] = len(images)
        for image_path in images:
            assert Image.open(image_path).size == (96, 96)
            rows = _read_labels(image_path.parent.parent / "labels" / f"{image_path.stem}.txt")
            for row in rows:
                assert len(row) == 5 and row[0] == int(row[0]) and 0 <= row[0] < len(COMPONENT_CLASSES)
                assert all(0.0 <= v <= 1.0 for v in row[1:])
                assert row[3] > 0 and row[4] > 0
                assert row[1] - row[3] / 2 >= -1e-6 and row[1] + row[3] / 2 <= 1 + 1e-6
    assert sum(counts.values()) == 10 and counts["train"] == 7 and min(counts.values()) >= 1


def test_yolo_tree_is_deterministic_and_rewrites_cleanly(tmp_path: Path) -> None:
    write_synthetic_boards(tmp_path / "a", n=6, seed=4, size=64)
    write_synthetic_boards(tmp_path / "b", n=8, seed=4, size=64)
    write_synthetic_boards(tmp_path / "b", n=6, seed=4, size=64)  # shrinking must leave no stale boards
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("board_*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("board_*"))
    assert files_a == files_b and len(files_a) == 12
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


def test_label_line_format() -> None:
    assert Box(3, 0.5, 0.25, 0.1, 0.2).to_yolo_line() == "3 0.500000 0.250000 0.100000 0.200000"


def test_component_crops_one_folder_per_class(tmp_path: Path) -> None:
    root = write_component_crops(tmp_path / "crops", n_per_class=3, seed=2, size=48)
    assert sorted(p.name for p in root.iterdir()) == sorted(COMPONENT_CLASSES)
    for name in COMPONENT_CLASSES:
        images = sorted((root / name).glob("*.jpg"))
        assert len(images) == 3
        assert all(Image.open(path).size == (48, 48) for path in images)


def test_crops_are_deterministic() -> None:
    first = draw_component_crop(np.random.default_rng(5), "ic", 64)
    again = draw_component_crop(np.random.default_rng(5), "ic", 64)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(
        np.asarray(first), np.asarray(draw_component_crop(np.random.default_rng(6), "ic", 64))
    )
    with pytest.raises(ValueError, match="unknown component"):
        draw_component_crop(np.random.default_rng(0), "relay", 64)
