"""`read_class_folders` finds labelled images in the layouts people use, and says clearly when it cannot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.errors import DataError, UserError

MakeImage = Callable[..., Path]


def test_flat_layout_sorted_classes_and_nested_images(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "tv" / "a.png", 1)
    make_image(tmp_path / "laptop" / "b.jpg", 2)
    make_image(tmp_path / "laptop" / "more" / "deeper" / "c.png", 3)
    (tmp_path / "laptop" / "notes.txt").write_text("hi")
    (tmp_path / "laptop" / ".DS_Store").write_text("mac")
    make_image(tmp_path / "laptop" / ".thumbs" / "d.png", 4)

    dataset = read_class_folders(tmp_path)

    assert dataset.class_names == ["laptop", "tv"]
    assert dataset.root == tmp_path
    labels = {record.path.relative_to(tmp_path).as_posix(): record.label for record in dataset.records}
    assert labels == {"laptop/b.jpg": 0, "laptop/more/deeper/c.png": 0, "tv/a.png": 1}
    assert not dataset.has_split
    assert [path.name for path, _ in dataset.skipped] == ["notes.txt"]


def test_split_layout_maps_folder_aliases_and_unions_classes(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "train" / "mouse" / "1.png", 1)
    make_image(tmp_path / "train" / "phone" / "2.png", 2)
    make_image(tmp_path / "valid" / "phone" / "3.png", 3)
    make_image(tmp_path / "testing" / "camera" / "4.png", 4)

    dataset = read_class_folders(tmp_path)

    assert dataset.class_names == ["camera", "mouse", "phone"]
    assert dataset.has_split
    splits = {
        record.path.name: (record.split, dataset.class_names[record.label]) for record in dataset.records
    }
    assert splits == {
        "1.png": ("train", "mouse"),
        "2.png": ("train", "phone"),
        "3.png": ("val", "phone"),
        "4.png": ("test", "camera"),
    }


def test_lone_images_folder_holds_the_classes(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "images" / "tv" / "a.png", 1)
    make_image(tmp_path / "images" / "watch" / "b.png", 2)
    (tmp_path / "exact_duplicates.csv").write_text("md5,file\n")

    dataset = read_class_folders(tmp_path)

    assert dataset.root == tmp_path / "images"
    assert dataset.class_names == ["tv", "watch"]


def test_images_folder_of_pictures_is_a_class_not_a_container(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "images" / "a.png", 1)
    make_image(tmp_path / "images" / "sub" / "b.png", 2)
    with pytest.raises(DataError, match="only class 'images'"):
        read_class_folders(tmp_path)


def test_empty_class_is_dropped_and_recorded(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "a" / "1.png", 1)
    make_image(tmp_path / "b" / "2.png", 2)
    (tmp_path / "c" / "sub").mkdir(parents=True)
    dataset = read_class_folders(tmp_path)
    assert dataset.class_names == ["a", "b"]
    assert dataset.skipped == [(tmp_path / "c", "class folder holds no images; class dropped")]


def test_loose_images_beside_class_folders_are_recorded(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "a" / "1.png", 1)
    make_image(tmp_path / "b" / "2.png", 2)
    make_image(tmp_path / "stray.png", 3)
    dataset = read_class_folders(tmp_path)
    assert len(dataset.records) == 2
    assert [path.name for path, _ in dataset.skipped] == ["stray.png"]


def test_images_are_listed_not_decoded(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "a" / "1.png", 1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.jpg").write_bytes(b"garbage")
    dataset = read_class_folders(tmp_path)
    assert sorted(record.path.name for record in dataset.records) == ["1.png", "broken.jpg"]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "no class folders"),
        ({"a/readme.txt": "text"}, "no image files"),
        ({"a/1.png": 1, "b/notes.txt": "text"}, "needs at least two classes"),
        ({"train/a/1.png": 1, "b/2.png": 2}, "split folders"),
        ({"val/a/1.png": 1, "valid/b/2.png": 2}, "same split"),
    ],
)
def test_unusable_layouts_raise_one_line_data_errors(
    tmp_path: Path, make_image: MakeImage, layout: dict[str, object], message: str
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for name, content in layout.items():
        path = root / name
        if isinstance(content, int):
            make_image(path, content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(content))
    with pytest.raises(DataError, match=message) as raised:
        read_class_folders(root)
    assert str(root) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_class_folders(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a dataset folder"):
        read_class_folders(tmp_path / "file.png")
