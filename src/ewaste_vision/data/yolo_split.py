"""Grouped, multi-label stratified splits of a YOLO dataset, and writing them as a new YOLO tree.

Stratification follows the iterative stratification of Sechidis, Tsoumakas and Vlahavas (2011,
"On the stratification of multi-label data"), implemented here at group level: the items of one
group (copies of one photo) move together, a group's label counts are the sums over its images,
and the rarest label is placed first, each of its groups going to the split that most lacks that
label (ties: the split that most lacks images, then the seed). Groups with no label fill the
splits that most lack images.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ewaste_vision.data.records import SPLITS, LabelledImages
from ewaste_vision.data.split import DEFAULT_FRACTIONS, items_by_group, normalised_shares
from ewaste_vision.errors import DataError
from ewaste_vision.io.atomic import write_text, write_yaml

SPLIT_FOLDERS = {"train": "train", "val": "valid", "test": "test"}
"""Folder of each split in a written tree (Roboflow's spelling, which Ultralytics reads too)."""


def multilabel_grouped_split(
    present: Sequence[Sequence[int]],
    groups: Sequence[int],
    num_classes: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[str]:
    """Assign each item to "train", "val" or "test", stratified over its classes, never splitting a group.

    Args:
        present: class ids present in each item (multi-label).
        groups: group id per item; items with a negative id are groups of their own.
        num_classes: number of classes; ids in `present` must be below it.
        fractions: shares of train, val and test (any positive sum; a zero share leaves that
            split empty).
        seed: the same seed gives the same split.

    Returns:
        The split name of each item, in item order. Every split with a positive share gets at
        least one group when there are enough groups.

    Raises:
        ValueError: lengths differ, a class id is out of range, or the fractions are not three
            non-negative numbers with a positive sum.
    """
    if len(present) != len(groups):
        raise ValueError(f"got {len(present)} label sets but {len(groups)} group ids")
    shares, open_splits = normalised_shares(fractions)

    members = list(items_by_group(groups).values())
    counts = np.zeros((len(members), num_classes))  # (groups, classes): images with the class
    for row, items in enumerate(members):
        for index in items:
            for class_id in set(present[index]):
                if not 0 <= class_id < num_classes:
                    raise ValueError(f"item {index}: class id {class_id} is outside 0..{num_classes - 1}")
                counts[row, class_id] += 1
    sizes = np.array([len(items) for items in members], dtype=float)

    rng = np.random.default_rng(seed)
    tiebreak = rng.random((len(members), len(SPLITS)))  # seeded choice among equally good splits
    wanted_labels = shares[:, None] * counts.sum(axis=0)[None, :]  # (splits, classes)
    wanted_images = shares * sizes.sum()  # (splits,)
    chosen = np.full(len(members), -1)
    unplaced = np.ones(len(members), dtype=bool)
    closed = np.setdiff1d(np.arange(len(SPLITS)), open_splits)

    def place(row: int, need: np.ndarray) -> None:
        score = np.stack([need, wanted_images, tiebreak[row]], axis=1)  # (splits, 3)
        score[closed] = -np.inf
        split = max(open_splits, key=lambda s: tuple(score[s]))
        chosen[row] = split
        unplaced[row] = False
        wanted_labels[split] -= counts[row]
        wanted_images[split] -= sizes[row]

    while unplaced.any():
        remaining = counts[unplaced].sum(axis=0)  # (classes,)
        if not (remaining > 0).any():
            break
        label = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        rows = np.flatnonzero(unplaced & (counts[:, label] > 0))
        # Larger groups first, so the small ones can even out what the large ones leave.
        for row in sorted(rows.tolist(), key=lambda r: (-sizes[r], tiebreak[r, 0])):
            place(row, wanted_labels[:, label].copy())
    for row in sorted(np.flatnonzero(unplaced).tolist(), key=lambda r: (-sizes[r], tiebreak[r, 0])):
        place(row, wanted_images.copy())

    _fill_empty_splits(chosen, sizes, open_splits)
    split_of = [""] * len(present)
    for row, items in enumerate(members):
        for index in items:
            split_of[index] = SPLITS[int(chosen[row])]
    return split_of


def write_split_dataset(
    dataset: LabelledImages, splits: Sequence[str], out_dir: Path | str, link: bool = True
) -> Path:
    """Write `dataset` as a new YOLO tree `out_dir/{train,valid,test}/{images,labels}` + data.yaml.

    Images are hard-linked where the file system allows it (copied otherwise); label files are
    written from the parsed boxes, so polygons become boxes and malformed lines are gone.

    Args:
        dataset: records with their boxes (from `read_yolo_dataset`).
        splits: the split of each record ("train", "val" or "test").
        out_dir: a new or empty folder.
        link: hard-link images when possible; False always copies.

    Returns:
        The path of the written data.yaml.

    Raises:
        DataError: `out_dir` exists and is not empty.
        ValueError: `splits` does not match the records.
    """
    out_dir = Path(out_dir)
    if len(splits) != len(dataset.records):
        raise ValueError(f"got {len(splits)} splits for {len(dataset.records)} records")
    if unknown := set(splits) - set(SPLIT_FOLDERS):
        raise ValueError(f"unknown split names {sorted(unknown)}; use {', '.join(SPLIT_FOLDERS)}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: exists and is not empty; choose a new folder for the split dataset")
    used: set[Path] = set()
    for record, split in zip(dataset.records, splits, strict=True):
        folder = out_dir / SPLIT_FOLDERS[split]
        image = folder / "images" / record.path.name
        suffix = 1
        while image in used:  # same file name from two source folders
            image = folder / "images" / f"{record.path.stem}_{suffix}{record.path.suffix}"
            suffix += 1
        used.add(image)
        image.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(record.path, image, link)
        lines = [f"{b.class_id} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}\n" for b in record.boxes]
        write_text(folder / "labels" / f"{image.stem}.txt", "".join(lines))
    spec: dict[str, object] = {}
    for split, folder_name in SPLIT_FOLDERS.items():
        if split in splits:
            spec[split] = f"{folder_name}/images"
    spec["nc"] = len(dataset.class_names)
    spec["names"] = list(dataset.class_names)
    return write_yaml(out_dir / "data.yaml", spec)


def describe_split(splits: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """Images per split and how far the shares drifted: "train 700 (69.7%, asked 70%), ..."."""
    shares, _ = normalised_shares(fractions)
    total = max(len(splits), 1)
    return ", ".join(
        f"{name} {splits.count(name)} ({splits.count(name) / total:.1%}, asked {share:.0%})"
        for name, share in zip(SPLITS, shares, strict=True)
    )


def _fill_empty_splits(chosen: np.ndarray, sizes: np.ndarray, open_splits: np.ndarray) -> None:
    """Give each empty open split the smallest group of the split with most groups."""
    if len(chosen) < len(open_splits):
        return
    for split in open_splits:
        if (chosen == split).any():
            continue
        per_split = np.bincount(chosen, minlength=int(open_splits.max()) + 1)
        donor = int(np.argmax(per_split))
        rows = np.flatnonzero(chosen == donor)
        chosen[rows[np.argmin(sizes[rows])]] = split


def _link_or_copy(source: Path, target: Path, link: bool) -> None:
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    shutil.copy2(source, target)
