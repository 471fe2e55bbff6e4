"""YOLO datasets: reading labels into multi-hot vectors, grouped multi-label splits, the new tree."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from ewaste_vision.cli import main
from ewaste_vision.data.yolo import (
    label_path_for,
    multi_hot,
    read_yolo,
    read_yolo_dataset,
    write_multilabel_csv,
)
from ewaste_vision.data.yolo_split import multilabel_grouped_split, write_split_dataset
from ewaste_vision.errors import DataError

MakeImage = Callable[..., Path]

NAMES_AS_LIST = "names: [ic, led, resistor]"
NAMES_AS_MAPPING = "names:\n  0: ic\n  1: led\n  2: resistor"


def yolo_tree(
    root: Path, make_image: MakeImage, labels: dict[str, dict[str, str | None]], names: str = NAMES_AS_LIST
) -> Path:
    """`labels[split][stem]` is the label text (None: no label file); splits use Roboflow folders."""
    seed = 0
    for split, files in labels.items():
        for stem, text in files.items():
            make_image(root / split / "images" / f"{stem}.png", seed)
            seed += 1
            if text is not None:
                (root / split / "labels").mkdir(parents=True, exist_ok=True)
                (root / split / "labels" / f"{stem}.txt").write_text(text)
    keys = {"train": "train", "valid": "val", "test": "test"}
    lines = [f"{keys[split]}: {split}/images" for split in labels]
    (root / "data.yaml").write_text("\n".join([*lines, names, ""]))
    return root


@pytest.mark.parametrize("names", [NAMES_AS_LIST, NAMES_AS_MAPPING], ids=["list", "mapping"])
def test_boxes_polygons_empty_files_and_splits(tmp_path: Path, make_image: MakeImage, names: str) -> None:
    root = yolo_tree(
        tmp_path,
        make_image,
        {
            "train": {"a": "0 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n\n", "b": ""},
            "valid": {"c": "1 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n"},
        },
        names,
    )
    dataset, summary = read_yolo(root / "data.yaml")  # the yaml file itself works as well as its folder

    assert dataset.class_names == ["ic", "led", "resistor"]
    assert dataset.root == root.resolve()
    by_stem = {record.path.stem: record for record in dataset.records}
    assert by_stem["a"].present == (0, 2) and by_stem["a"].label == -1
    polygon = by_stem["a"].boxes[1]
    assert (polygon.class_id, polygon.cx, polygon.cy, polygon.w, polygon.h) == pytest.approx(
        (2, 0.2, 0.25, 0.2, 0.3)
    )
    assert by_stem["b"].present == () and by_stem["b"].boxes == ()  # empty file: no components
    assert by_stem["c"].present == (1,) and len(by_stem["c"].boxes) == 2
    assert {s: r.split for s, r in by_stem.items()} == {"a": "train", "b": "train", "c": "val"}
    assert dataset.skipped == []
    assert (summary.polygons_converted, summary.boxes, summary.empty_label_files) == (1, 4, 1)

    hot = multi_hot(dataset.records, 3)
    assert hot.dtype.is_floating_point
    assert hot.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("0 0.5 0.5 0.2", "wrong field count"),
        ("0 0.1 0.1 0.2 0.2 0.3", "wrong field count"),
        ("3 0.5 0.5 0.2 0.2", "class id 3 out of range"),
        ("-1 0.5 0.5 0.2 0.2", "out of range"),
        ("1 0.5 1.5 0.2 0.2", "outside [0, 1]"),
        ("1 0.5 0.5 -0.2 0.2", "outside [0, 1]"),
        ("1 x 0.5 0.2 0.2", "not a number"),
        ("1 nan 0.5 0.2 0.2", "outside [0, 1]"),
        ("1.5 0.5 0.5 0.2 0.2", "not a whole number"),
    ],
)
def test_each_malformed_line_is_reported_with_file_and_line_and_skipped(
    tmp_path: Path, make_image: MakeImage, line: str, fragment: str
) -> None:
    root = yolo_tree(
        tmp_path, make_image, {"train": {"a": f"0 0.5 0.5 0.2 0.2\n{line}\n2 0.5 0.5 0.1 0.1\n"}}
    )
    dataset, summary = read_yolo(root)

    label_file = label_path_for(dataset.records[0].path)
    assert [(path, reason.split(": ")[0]) for path, reason in dataset.skipped] == [
        (label_file, f"{label_file}:2")
    ]
    reason = dataset.skipped[0][1]
    assert fragment in reason and "fix or delete the line" in reason
    assert dataset.records[0].present == (0, 2)  # the good lines around it are kept
    assert sum(summary.malformed_lines.values()) == 1


def test_image_without_label_file_is_reported_and_left_out(tmp_path: Path, make_image: MakeImage) -> None:
    root = yolo_tree(tmp_path, make_image, {"train": {"a": "0 0.5 0.5 0.2 0.2\n", "b": None}})
    dataset, summary = read_yolo(root)

    assert [record.path.stem for record in dataset.records] == ["a"]
    assert len(dataset.skipped) == 1
    path, reason = dataset.skipped[0]
    assert path.name == "b.png" and "b.png" in reason and "no label file" in reason and "b.txt" in reason
    assert summary.missing_labels == 1


def test_val_spellings_lists_of_folders_and_txt_lists(tmp_path: Path, make_image: MakeImage) -> None:
    for folder, stem in (("one", "a"), ("two", "b"), ("held", "c")):
        make_image(tmp_path / folder / "images" / f"{stem}.png", ord(stem))
        (tmp_path / folder / "labels").mkdir(parents=True)
        (tmp_path / folder / "labels" / f"{stem}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "val.txt").write_text("./held/images/c.png\n")
    (tmp_path / "data.yaml").write_text(
        "path: .\ntrain: [one/images, two/images]\nvalid: val.txt\nnames: {0: ic, 1: led}\n"
    )
    dataset = read_yolo_dataset(tmp_path)
    assert [(r.path.stem, r.split) for r in dataset.records] == [("a", "train"), ("b", "train"), ("c", "val")]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("train: train/images\nnc: 3\n", "'names'"),
        ("train: nowhere/images\nnames: [a, b, c]\n", "'train'"),
        ("val: train/images\nnames: [a, b, c]\n", "'train'"),
        ("train: train/images\nval: missing/images\nnames: [a, b, c]\n", "'val'"),
        ("train: train/images\nnames: [a, b]\nnc: 3\n", "'nc'"),
    ],
)
def test_data_yaml_errors_name_the_key(tmp_path: Path, make_image: MakeImage, spec: str, key: str) -> None:
    root = yolo_tree(tmp_path, make_image, {"train": {"a": ""}})
    (root / "data.yaml").write_text(spec)
    with pytest.raises(DataError, match=key):
        read_yolo_dataset(root)


def test_no_data_yaml_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no data\.yaml"):
        read_yolo_dataset(tmp_path)


def test_multilabel_csv_has_a_column_per_class(tmp_path: Path, make_image: MakeImage) -> None:
    root = yolo_tree(
        tmp_path / "data",
        make_image,
        {"train": {"a": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n"}, "valid": {"b": ""}},
    )
    out = write_multilabel_csv(read_yolo_dataset(root), tmp_path / "labels.csv")
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["file", "split", "ic", "led", "resistor"],
        ["train/images/a.png", "train", "1", "0", "1"],
        ["valid/images/b.png", "val", "0", "0", "0"],
    ]


def _synthetic_labels(seed: int, images: int = 300) -> tuple[list[tuple[int, ...]], list[int]]:
    """Multi-label sets with one common, one mid and one rare class; copies in groups of 1 to 3."""
    rng = np.random.default_rng(seed)
    present: list[tuple[int, ...]] = []
    groups: list[int] = []
    group = 0
    while len(present) < images:
        classes = tuple(int(c) for c in np.flatnonzero(rng.random(4) < [0.6, 0.3, 0.08, 0.2]))
        for _ in range(int(rng.integers(1, 4))):
            present.append(classes)
            groups.append(group)
        group += 1
    return present, groups


def test_split_keeps_groups_together_and_preserves_prevalence() -> None:
    present, groups = _synthetic_labels(seed=1)
    groups[0] = -1  # a negative id is a group of its own
    splits = multilabel_grouped_split(present, groups, num_classes=4, seed=3)

    assert splits == multilabel_grouped_split(present, groups, num_classes=4, seed=3)
    by_group: dict[int, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        by_group.setdefault(group, set()).add(split)
    assert all(len(names) == 1 for group, names in by_group.items() if group >= 0)

    sizes = Counter(splits)
    assert set(sizes) == {"train", "val", "test"}
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert sizes[name] / len(splits) == pytest.approx(share, abs=0.04)
    hot = np.zeros((len(present), 4))
    for row, classes in enumerate(present):
        hot[row, list(classes)] = 1
    overall = hot.mean(axis=0)
    for name in ("train", "val", "test"):
        in_split = hot[[s == name for s in splits]].mean(axis=0)
        assert in_split == pytest.approx(overall, abs=0.06), name


def test_split_of_few_groups_fills_every_split_and_checks_arguments() -> None:
    splits = multilabel_grouped_split([(0,), (0,), (1,), (1,)], [0, 0, 1, 2], num_classes=2)
    assert set(splits) == {"train", "val", "test"} and splits[0] == splits[1]
    assert set(multilabel_grouped_split([(0,)] * 5, list(range(5)), 1, fractions=(1, 0, 0))) == {"train"}
    with pytest.raises(ValueError, match="fractions"):
        multilabel_grouped_split([(0,)], [0], 1, fractions=(1, 1))
    with pytest.raises(ValueError, match="class id 4"):
        multilabel_grouped_split([(4,)], [0], 2)


def test_written_split_tree_is_clean_yolo_with_linked_images(tmp_path: Path, make_image: MakeImage) -> None:
    root = yolo_tree(
        tmp_path / "data",
        make_image,
        {
            "train": {
                "a": "0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n",
                "b": "2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n",
                "c": "",
            },
            "valid": {"a2": "1 0.5 0.5 0.1 0.1\n"},
        },
        NAMES_AS_MAPPING,
    )
    (root / "valid" / "images" / "a2.png").rename(root / "valid" / "images" / "a.png")  # same file name
    (root / "valid" / "labels" / "a2.txt").rename(root / "valid" / "labels" / "a.txt")
    dataset = read_yolo_dataset(root)
    splits = ["train", "val", "test", "train"]
    yaml_file = write_split_dataset(dataset, splits, tmp_path / "out")

    spec = yaml.safe_load(yaml_file.read_text())
    assert spec == {
        "train": "train/images",
        "val": "valid/images",
        "test": "test/images",
        "nc": 3,
        "names": ["ic", "led", "resistor"],
    }
    again = read_yolo_dataset(tmp_path / "out")
    assert again.skipped == []
    assert sorted((r.path.name, r.split, r.present) for r in again.records) == [
        ("a.png", "train", (0,)),
        ("a_1.png", "train", (1,)),
        ("b.png", "val", (2,)),
        ("c.png", "test", ()),
    ]
    label = (tmp_path / "out" / "valid" / "labels" / "b.txt").read_text()
    assert label == "2 0.200000 0.250000 0.200000 0.300000\n"  # the polygon is now its box
    original, written = dataset.records[0].path, tmp_path / "out" / "train" / "images" / "a.png"
    assert original.stat().st_ino == written.stat().st_ino  # hard link, same file system

    with pytest.raises(DataError, match="not empty"):
        write_split_dataset(dataset, splits, tmp_path / "out")


def test_cli_yolo2multilabel_and_split(tmp_path: Path, make_image: MakeImage, capsys) -> None:
    root = yolo_tree(
        tmp_path / "data",
        make_image,
        {
            "train": {f"t{i}": f"{i % 3} 0.5 0.5 0.2 0.2\n" for i in range(8)},
            "valid": {"v0": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "v1": None},
        },
    )
    assert main(["data", "yolo2multilabel", str(root), "--out", str(tmp_path / "labels.csv")]) == 0
    captured = capsys.readouterr()
    assert "wrote 9 images x 3 classes" in captured.out
    assert "v0.txt:2:" in captured.err and "v1.png" in captured.err
    assert len((tmp_path / "labels.csv").read_text().splitlines()) == 10

    assert main(["data", "split", str(root), "--out", str(tmp_path / "split"), "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    written = read_yolo_dataset(tmp_path / "split")
    assert len(written.records) == 9 and {r.split for r in written.records} == {"train", "val", "test"}

    assert main(["data", "split", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
