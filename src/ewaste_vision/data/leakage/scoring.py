"""Scoring a grouping against known source photos (`source_groups.csv` of an export)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ewaste_vision.data.leakage.grouping import find_augmented_copies
from ewaste_vision.errors import DataError


def pair_precision_recall(
    predicted_groups: Sequence[Hashable], true_groups: Sequence[Hashable]
) -> dict[str, float]:
    """Precision and recall of "same group" over all unordered pairs of items.

    Pairs are counted from group sizes (a group of n holds n(n-1)/2 pairs), never enumerated.
    A negative integer predicted id (unreadable image) is a group of its own.

    Returns:
        precision, recall, and the pair counts predicted_pairs, true_pairs, correct_pairs.
        Precision is 1.0 when nothing is predicted; recall is 1.0 when there is nothing to find.
    """
    if len(predicted_groups) != len(true_groups):
        raise ValueError(f"got {len(predicted_groups)} predicted and {len(true_groups)} true group ids")
    predicted = [
        ("alone", index) if isinstance(group, int) and group < 0 else group
        for index, group in enumerate(predicted_groups)
    ]
    predicted_pairs = _pairs(predicted)
    true_pairs = _pairs(true_groups)
    correct_pairs = _pairs(list(zip(predicted, true_groups, strict=True)))
    return {
        "precision": correct_pairs / predicted_pairs if predicted_pairs else 1.0,
        "recall": correct_pairs / true_pairs if true_pairs else 1.0,
        "predicted_pairs": predicted_pairs,
        "true_pairs": true_pairs,
        "correct_pairs": correct_pairs,
    }


def read_source_groups(root: Path, source_csv: Path | None = None) -> tuple[list[Path], list[str]]:
    """The images of a YOLO export and their true source photo, from `source_groups.csv`.

    Args:
        root: the dataset folder, with `{split}/images/{file}` as listed in `source_csv`.
        source_csv: CSV with columns file, split, source_stem (default `root/source_groups.csv`).

    Returns:
        (image paths, source stem of each).

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    source_csv = Path(source_csv) if source_csv is not None else Path(root) / "source_groups.csv"
    try:
        with open(source_csv, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        paths = [Path(root) / row["split"] / "images" / row["file"] for row in rows]
        truth = [row["source_stem"] for row in rows]
    except OSError as exc:
        raise DataError(f"{source_csv}: cannot read ({exc.strerror}); give file,split,source_stem") from exc
    except KeyError as exc:
        raise DataError(f"{source_csv}: column {exc} is missing; expected file, split, source_stem") from exc
    return paths, truth


def compare_with_source_groups(
    root: Path, source_csv: Path | None = None, progress: bool = False, **finder: Any
) -> dict[str, float]:
    """Run `find_augmented_copies` on a YOLO export and score it against known source photos.

    Args:
        root: the dataset folder, with `{split}/images/{file}` as listed in `source_csv`.
        source_csv: CSV with columns file, split, source_stem (default `root/source_groups.csv`);
            the truth to compare with, never an input to the finder.
        progress: print progress to stderr.
        **finder: `CopySettings` fields (e.g. `min_inliers`).

    Returns:
        `pair_precision_recall` of the groups found against the source stems, plus `images`
        and `groups` (groups of two or more found).

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    paths, truth = read_source_groups(root, source_csv)
    groups = find_augmented_copies(paths, progress=progress, **finder)
    scores = pair_precision_recall(groups, truth)
    scores["images"] = len(paths)
    scores["groups"] = sum(1 for size in Counter(g for g in groups if g >= 0).values() if size > 1)
    return scores


def _pairs(groups: Sequence[Hashable]) -> int:
    return sum(size * (size - 1) // 2 for size in Counter(groups).values())
