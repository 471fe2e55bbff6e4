"""`check_dataset` counts what is there and names every unreadable file and duplicate it finds."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from ewaste_vision.data.check import NO_SPLIT, check_dataset, format_report
from ewaste_vision.errors import DataError

MakeImage = Callable[..., Path]


@pytest.fixture
def messy(tmp_path: Path, make_image: MakeImage) -> Path:
    """Unsplit classes `tv` (3 images) and `watch` (2 images) with every kind of problem."""
    root = tmp_path / "messy"
    make_image(root / "tv" / "a.png", 1, size=(96, 96))
    make_image(root / "tv" / "b.png", 2, size=(96, 96))
    make_image(root / "watch" / "c.png", 3, size=(96, 96))
    shutil.copy(root / "tv" / "a.png", root / "tv" / "a_copy.png")  # exact duplicate
    Image.open(root / "tv" / "b.png").resize((72, 72)).save(
        root / "watch" / "b_small.jpg", quality=80
    )  # near, other class
    (root / "watch" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "watch" / "readme.txt").write_text("notes")
    return root


def test_check_counts_and_finds_problems(messy: Path) -> None:
    report = check_dataset(messy)

    assert report.class_names == ["tv", "watch"]
    assert not report.has_split
    assert report.counts == {"tv": {NO_SPLIT: 3}, "watch": {NO_SPLIT: 2}}
    assert report.total == 5
    assert [path.name for path, _ in report.unreadable] == ["broken.jpg"]
    assert [path.name for path, _ in report.ignored] == ["readme.txt"]
    assert [[path.name for path in group] for group in report.exact_duplicates] == [["a.png", "a_copy.png"]]
    assert [[path.name for path in group] for group in report.near_duplicates] == [["b.png", "b_small.jpg"]]
    assert [[(name, path.name) for name, path in group] for group in report.cross_class] == [
        [("tv", "b.png"), ("watch", "b_small.jpg")]
    ]
    assert report.cross_split == []


def test_format_report_shows_table_and_problems(messy: Path) -> None:
    text = format_report(check_dataset(messy))
    lines = text.splitlines()
    assert lines[0].endswith("2 classes, 5 readable images (no split given)")
    assert (
        lines[2].split() == ["tv", "3"]
        and lines[3].split() == ["watch", "2"]
        and lines[4].split() == ["total", "5"]
    )
    assert "unreadable images: 1" in text and "watch/broken.jpg" in text
    assert "exact duplicate groups: 1 (2 files)" in text and "tv/a.png = tv/a_copy.png" in text
    assert "near-duplicate groups: 1" in text
    assert "tv/b.png [tv], watch/b_small.jpg [watch]" in text
    assert "grouped split keeps each duplicate group within one split" in text


def test_to_dict_is_json_with_relative_paths(messy: Path) -> None:
    data = json.loads(json.dumps(check_dataset(messy).to_dict()))
    assert data["root"] == str(messy)
    assert data["has_split"] is False
    assert data["exact_duplicates"] == [["tv/a.png", "tv/a_copy.png"]]
    assert data["unreadable"][0]["file"] == "watch/broken.jpg"
    assert data["counts"]["tv"] == {NO_SPLIT: 3}


def test_split_data_reports_leaks_per_split(tmp_path: Path, make_image: MakeImage) -> None:
    root = tmp_path / "split"
    make_image(root / "train" / "a" / "1.png", 1)
    make_image(root / "train" / "b" / "2.png", 2)
    make_image(root / "val" / "b" / "3.png", 3)
    (root / "val" / "a").mkdir()
    shutil.copy(root / "train" / "a" / "1.png", root / "val" / "a" / "1_again.png")

    report = check_dataset(root)
    text = format_report(report)

    assert report.splits == ["train", "val"]
    assert report.counts == {"a": {"train": 1, "val": 1}, "b": {"train": 1, "val": 1}}
    assert [[(split, path.name) for split, path in group] for group in report.cross_split] == [
        [("train", "1.png"), ("val", "1_again.png")]
    ]
    assert text.splitlines()[1].split() == ["class", "train", "val", "total"]
    assert "duplicate groups across splits: 1" in text
    assert "train/a/1.png [train], val/a/1_again.png [val]" in text


def test_clean_data_says_so(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "a" / "1.png", 1)
    make_image(tmp_path / "b" / "2.png", 2)
    assert format_report(check_dataset(tmp_path)).splitlines()[-1] == "no problems found"


def test_unusable_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        check_dataset(tmp_path / "missing")


@pytest.mark.real_data
def test_real_exact_duplicates_share_a_group(shared_data: Path) -> None:
    root = shared_data / "ewaste-devices"
    if not (root / "exact_duplicates.csv").is_file():
        pytest.skip(
            f"{root / 'exact_duplicates.csv'} not found: needs the ewaste-devices set in ../shared/data"
        )
    with open(root / "exact_duplicates.csv", newline="", encoding="utf-8") as handle:
        listed: dict[str, set[str]] = {}
        for row in csv.DictReader(handle):
            listed.setdefault(row["md5"], set()).add(row["file"])

    report = check_dataset(root)

    assert report.unreadable == []
    found = [
        {path.relative_to(report.root).as_posix() for path in group} for group in report.exact_duplicates
    ]
    assert len(listed) == 15
    for files in listed.values():
        assert any(files <= group for group in found), f"{sorted(files)} not grouped"
