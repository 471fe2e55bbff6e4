"""The YOLO reader on hand-made trees: boxes, polygons, bad lines, missing files, bad data.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from ewaste_vision.data.yolo import read_yolo_dataset
from ewaste_vision.errors import DataError


def _tree(root: Path, make_image, names_yaml: str, labels: dict[str, str | None]) -> Path:
    for index, (stem, text) in enumerate(labels.items()):
        make_image(root / "train" / "images" / f"{stem}.jpg", seed=index)
        if text is not None:
            (root / "train" / "labels").mkdir(parents=True, exist_ok=True)
            (root / "train" / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"train: train/images\n{names_yaml}\n")
    return root


@pytest.mark.parametrize("names", ["names: [ic, led, resistor]", "names:\n  0: ic\n  1: led\n  2: resistor"])
def test_boxes_polygons_and_empty_files(tmp_path: Path, make_image, names: str):
    root = _tree(
        tmp_path,
        make_image,
        names,
        {
            "a": "0 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n",
            "b": "",
        },
    )
    dataset = read_yolo_dataset(root)
    assert dataset.class_names == ["ic", "led", "resistor"]
    by_stem = {r.path.stem: r for r in dataset.records}
    assert by_stem["a"].present == (0, 2)
    polygon = by_stem["a"].boxes[1]
    assert polygon.class_id == 2
    assert (polygon.cx, polygon.cy, polygon.w, polygon.h) == pytest.approx((0.2, 0.25, 0.2, 0.3))
    assert by_stem["b"].present == () and by_stem["b"].split == "train"
    assert not dataset.skipped


def test_bad_lines_and_missing_label_files_are_reported_and_skipped(tmp_path: Path, make_image):
    root = _tree(
        tmp_path,
        make_image,
        "names: [ic, led]",
        {
            "a": "0 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\n1 0.5 1.5 0.2 0.2\n1 x 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
            "b": None,
        },
    )
    dataset = read_yolo_dataset(root)
    reasons = [why for _, why in dataset.skipped]
    for line, fragment in ((1, "fields"), (2, "class id 7"), (3, "outside [0, 1]"), (4, "not a number")):
        assert any(f"a.txt:{line}: " in r and fragment in r for r in reasons), (line, reasons)
    assert any("b.jpg" in r and "no label file" in r for r in reasons)
    assert [r.present for r in dataset.records] == [(1,)]


def test_data_yaml_errors_name_the_key(tmp_path: Path, make_image):
    root = _tree(tmp_path, make_image, "nc: 2", {"a": ""})
    with pytest.raises(DataError, match="'names'"):
        read_yolo_dataset(root)
    (root / "data.yaml").write_text("train: nowhere/images\nnames: [a, b]\n")
    with pytest.raises(DataError, match="'train'"):
        read_yolo_dataset(root)
