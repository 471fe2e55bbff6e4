"""Grouped, stratified splits: copies stay together, shares hold, every class reaches every split."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.data.split import assign_splits, grouped_stratified_split

MakeImage = Callable[..., Path]


def synthetic_items(seed: int = 0, count: int = 200, classes: int = 4) -> tuple[list[int], list[int]]:
    """Labels and group ids: groups of 1 to 4 items, one class per group."""
    rng = np.random.default_rng(seed)
    labels: list[int] = []
    groups: list[int] = []
    group = 0
    while len(labels) < count:
        size = int(rng.integers(1, 5))
        labels += [int(rng.integers(0, classes))] * size
        groups += [group] * size
        group += 1
    return labels[:count], groups[:count]


def test_groups_never_cross_splits_and_shares_hold() -> None:
    labels, groups = synthetic_items()
    splits = grouped_stratified_split(labels, groups, seed=3)

    split_of_group: dict[int, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(found) == 1 for found in split_of_group.values())

    shares = Counter(splits)
    assert set(shares) == {"train", "val", "test"}
    assert abs(shares["train"] / 200 - 0.70) <= 0.05
    assert abs(shares["val"] / 200 - 0.15) <= 0.05
    assert abs(shares["test"] / 200 - 0.15) <= 0.05
    for label in set(labels):
        assert {split for lab, split in zip(labels, splits, strict=True) if lab == label} == {
            "train",
            "val",
            "test",
        }


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels, groups = synthetic_items()
    first = grouped_stratified_split(labels, groups, seed=1)
    assert grouped_stratified_split(labels, groups, seed=1) == first
    assert grouped_stratified_split(labels, groups, seed=2) != first


@pytest.mark.parametrize("sizes", [[5, 5, 5], [10, 1, 1], [20, 1, 1, 1], [1, 1, 1]])
def test_class_with_three_groups_reaches_every_split(sizes: list[int]) -> None:
    groups = [group for group, size in enumerate(sizes) for _ in range(size)]
    splits = grouped_stratified_split([0] * len(groups), groups, seed=0)
    assert set(splits) == {"train", "val", "test"}
    assert Counter(splits).most_common(1)[0][0] == "train"


def test_group_goes_with_its_majority_label() -> None:
    # Group 0 holds two items of class 1 and one of class 0: it is split among class 1's groups.
    labels = [1, 1, 0] + [0] * 3 + [1] * 3
    groups = [0, 0, 0, 1, 2, 3, 4, 5, 6]
    splits = grouped_stratified_split(labels, groups, seed=0)
    assert len(set(splits[:3])) == 1
    assert {split for split, label in zip(splits[3:6], labels[3:6], strict=True) if label == 0} == {
        "train",
        "val",
        "test",
    }


def test_zero_share_leaves_split_empty_and_negative_groups_are_singletons() -> None:
    labels = [0] * 30 + [1] * 30
    splits = grouped_stratified_split(labels, [-1] * 60, fractions=(0.8, 0.2, 0.0), seed=0)
    assert Counter(splits) == {"train": 48, "val": 12}


@pytest.mark.parametrize(
    ("labels", "groups", "fractions"),
    [
        ([0, 1], [0], (0.7, 0.15, 0.15)),
        ([0], [0], (0.5, 0.5)),
        ([0], [0], (1.0, -0.5, 0.5)),
        ([0], [0], (0, 0, 0)),
    ],
)
def test_bad_arguments_are_programmer_errors(
    labels: list[int], groups: list[int], fractions: tuple[float, ...]
) -> None:
    with pytest.raises(ValueError):
        grouped_stratified_split(labels, groups, fractions=fractions)


def _unsplit_dataset(root: Path, make_image: MakeImage) -> Path:
    """Two classes of six images each; `a/0.png` has a copy `a/0_copy.png`; `b/broken.png` is garbage."""
    for label in "ab":
        for index in range(6):
            make_image(root / label / f"{index}.png", seed=ord(label) * 100 + index)
    shutil.copy(root / "a" / "0.png", root / "a" / "0_copy.png")
    (root / "b" / "broken.png").write_bytes(b"garbage")
    return root


def test_assign_splits_groups_copies_and_skips_unreadable(tmp_path: Path, make_image: MakeImage) -> None:
    dataset = read_class_folders(_unsplit_dataset(tmp_path / "data", make_image))
    before = list(dataset.records)

    result, summary = assign_splits(dataset, seed=0, cache_file=tmp_path / "fingerprints.json")

    assert dataset.records == before  # the input is left alone
    by_name = {record.path.relative_to(result.root).as_posix(): record for record in result.records}
    assert "b/broken.png" not in by_name
    assert [path.name for path, _ in result.skipped] == ["broken.png"]
    assert result.skipped[0][1]  # the decoder's reason, shown to the user
    assert by_name["a/0.png"].group == by_name["a/0_copy.png"].group >= 0
    assert by_name["a/0.png"].split == by_name["a/0_copy.png"].split
    assert result.has_split
    assert {record.split for record in result.records} == {"train", "val", "test"}
    assert (summary.groups, summary.images, summary.cross_split) == (1, 2, [])
    assert (tmp_path / "fingerprints.json").is_file()


def test_assign_splits_keeps_a_given_split_and_reports_leaks(tmp_path: Path, make_image: MakeImage) -> None:
    root = tmp_path / "data"
    for seed, (split, label) in enumerate([("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")]):
        make_image(root / split / label / "x.png", seed=seed)
    shutil.copy(root / "train" / "a" / "x.png", root / "test" / "a" / "leak.png")
    dataset = read_class_folders(root)

    result, summary = assign_splits(dataset, seed=0)

    assert [(r.path, r.split) for r in result.records] == [(r.path, r.split) for r in dataset.records]
    assert summary.cross_split == [[root / "train" / "a" / "x.png", root / "test" / "a" / "leak.png"]]


def test_describe_split_gives_counts_and_shares_against_the_request() -> None:
    from ewaste_vision.data.yolo_split import describe_split

    text = describe_split(["train"] * 72 + ["val"] * 14 + ["test"] * 14, (0.7, 0.15, 0.15))
    assert text == "train 72 (72.0%, asked 70%), val 14 (14.0%, asked 15%), test 14 (14.0%, asked 15%)"
