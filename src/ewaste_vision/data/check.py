"""A dataset health check: what is there, what cannot be read, and which images are copies.

It backs `ewaste data check DIR`: people run it before training to learn whether the test score
they are about to get can be trusted. Class folders and YOLO datasets (a folder with `data.yaml`)
are both read; in a YOLO dataset an image counts once for every class it contains, and copies are
looked for with the augmentation-aware finder of `leakage` (flips, turns, crops, grayscale, hue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ewaste_vision.data.dedup import (
    duplicate_groups,
    fingerprints_cached,
    group_duplicates,
    unreadable_reason,
)
from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.data.leakage import find_copy_groups
from ewaste_vision.data.records import SPLITS, LabelledImages
from ewaste_vision.data.yolo import find_yolo_yaml, read_yolo_dataset

NO_SPLIT = "all"
"""Column name of the image counts when the data gives no split."""

_LISTED = 10
"""Problems of one kind listed in full by `format_report`; the rest are counted."""


@dataclass
class DataReport:
    """The findings of `check_dataset`. Paths are absolute.

    Attributes:
        root: the folder that holds the class (or split) folders.
        class_names: classes found, sorted.
        splits: split names in the data, or `[NO_SPLIT]` when it gives none.
        counts: readable images per class, then per split.
        unreadable: (file, reason) for each image that cannot be decoded.
        ignored: (path, reason) for files and folders the reader left out (not images, empty classes).
        exact_duplicates: groups of byte-identical files.
        near_duplicates: groups of near-copies (resized, recompressed, lightly edited), some not identical.
        cross_split: duplicate groups whose members sit in different splits, as (split, file).
        possible_cross_split: YOLO datasets: groups joined only by uncertain evidence (few
            keypoint matches, a look-alike nearest neighbour) whose members sit in different splits.
        cross_class: duplicate groups whose members carry different classes, as (class, file).
        multi_label: True for YOLO datasets, where `counts` are images containing each class.
        images: readable images when they cannot be summed from `counts` (multi-label).
        label_problems: (label file or image, "file:line: reason") for each skipped label line
            and each image without a label file (YOLO datasets).
    """

    root: Path
    class_names: list[str]
    splits: list[str]
    counts: dict[str, dict[str, int]]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    exact_duplicates: list[list[Path]] = field(default_factory=list)
    near_duplicates: list[list[Path]] = field(default_factory=list)
    cross_split: list[list[tuple[str, Path]]] = field(default_factory=list)
    possible_cross_split: list[list[tuple[str, Path]]] = field(default_factory=list)
    cross_class: list[list[tuple[str, Path]]] = field(default_factory=list)
    multi_label: bool = False
    images: int | None = None
    label_problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def has_split(self) -> bool:
        """True when the data came with its own split."""
        return self.splits != [NO_SPLIT]

    @property
    def total(self) -> int:
        """Readable images."""
        if self.images is not None:
            return self.images
        return sum(sum(per_split.values()) for per_split in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data; file paths are relative to `root`."""

        def rel(path: Path) -> str:
            return _relative(path, self.root)

        return {
            "root": str(self.root),
            "has_split": self.has_split,
            "class_names": self.class_names,
            "splits": self.splits,
            "counts": self.counts,
            "total": self.total,
            "unreadable": [{"file": rel(path), "reason": reason} for path, reason in self.unreadable],
            "ignored": [{"path": rel(path), "reason": reason} for path, reason in self.ignored],
            "exact_duplicates": [[rel(path) for path in group] for group in self.exact_duplicates],
            "near_duplicates": [[rel(path) for path in group] for group in self.near_duplicates],
            "cross_split": [
                [{"split": s, "file": rel(path)} for s, path in group] for group in self.cross_split
            ],
            "possible_cross_split": [
                [{"split": s, "file": rel(path)} for s, path in group] for group in self.possible_cross_split
            ],
            "cross_class": [
                [{"class": c, "file": rel(path)} for c, path in group] for group in self.cross_class
            ],
            "multi_label": self.multi_label,
            "label_problems": [{"file": rel(path), "reason": why} for path, why in self.label_problems],
        }


def check_dataset(
    root: Path, cache_file: Path | None = None, invariant: bool = False, max_distance: int = 4
) -> DataReport:
    """Read the dataset at `root`, decode every image, and look for duplicates.

    Args:
        root: a dataset folder in a layout `read_class_folders` accepts, or a YOLO dataset (a
            folder holding `data.yaml`, or the yaml file). YOLO datasets are always checked for
            augmented copies (flips, turns, crops, grayscale, hue; see `leakage`).
        cache_file: JSON file that keeps image fingerprints between runs.
        invariant: count flipped and rotated copies as duplicates too.
        max_distance: perceptual-hash bits two near-copies may differ in (of 64); class folders only
            (YOLO exports use the copy finder's own thresholds, as `data split` does).

    Raises:
        DataError: the folder layout or data.yaml cannot be read.
    """
    if find_yolo_yaml(root) is not None:
        return _check_yolo(read_yolo_dataset(root), cache_file)
    dataset = read_class_folders(root)
    paths = [record.path for record in dataset.records]
    fingerprints = fingerprints_cached(paths, cache_file, invariant=invariant)
    groups = group_duplicates(fingerprints, max_distance=max_distance)

    splits = (
        [s for s in SPLITS if any(r.split == s for r in dataset.records)] if dataset.has_split else [NO_SPLIT]
    )
    counts = {name: dict.fromkeys(splits, 0) for name in dataset.class_names}
    for record, fingerprint in zip(dataset.records, fingerprints, strict=True):
        if fingerprint is not None:
            counts[dataset.class_names[record.label]][record.split or NO_SPLIT] += 1

    report = DataReport(
        root=dataset.root,
        class_names=list(dataset.class_names),
        splits=splits,
        counts=counts,
        unreadable=_unreadable(paths, fingerprints),
        ignored=list(dataset.skipped),
    )
    for group in duplicate_groups(fingerprints, groups):
        members = [dataset.records[index] for index in group.members]
        (report.exact_duplicates if group.exact else report.near_duplicates).append([r.path for r in members])
        if len({r.split for r in members}) > 1:
            report.cross_split.append([(r.split or NO_SPLIT, r.path) for r in members])
        if len({r.label for r in members}) > 1:
            report.cross_class.append([(dataset.class_names[r.label], r.path) for r in members])
    return report


def _unreadable(paths: list[Path], fingerprints: list[Any]) -> list[tuple[Path, str]]:
    """(file, reason) for every image that could not be fingerprinted."""
    return [
        (path, unreadable_reason(path) or "cannot be read")
        for path, fingerprint in zip(paths, fingerprints, strict=True)
        if fingerprint is None
    ]


def _check_yolo(dataset: LabelledImages, cache_file: Path | None) -> DataReport:
    """`check_dataset` for a multi-label YOLO dataset; copies found by `find_augmented_copies` with
    its own thresholds, so `data check` reports the groups `data split` keeps together."""
    paths = [record.path for record in dataset.records]
    fingerprints = fingerprints_cached(paths, cache_file, invariant=True)
    found = find_copy_groups(paths, fingerprints)
    groups = found.copies
    splits = [s for s in SPLITS if any(r.split == s for r in dataset.records)] or [NO_SPLIT]
    counts = {name: dict.fromkeys(splits, 0) for name in dataset.class_names}
    for record, fingerprint in zip(dataset.records, fingerprints, strict=True):
        if fingerprint is not None:
            for class_id in record.present:
                counts[dataset.class_names[class_id]][record.split or NO_SPLIT] += 1
    report = DataReport(
        root=dataset.root,
        class_names=list(dataset.class_names),
        splits=splits,
        counts=counts,
        unreadable=_unreadable(paths, fingerprints),
        multi_label=True,
        images=sum(fingerprint is not None for fingerprint in fingerprints),
        label_problems=list(dataset.skipped),
    )
    for group in duplicate_groups(fingerprints, groups):
        members = [dataset.records[index] for index in group.members]
        (report.exact_duplicates if group.exact else report.near_duplicates).append([r.path for r in members])
        if len({r.split for r in members}) > 1:
            report.cross_split.append([(r.split or NO_SPLIT, r.path) for r in members])
    report.possible_cross_split = _possible_cross_split(dataset, groups, found.together)
    return report


def _possible_cross_split(
    dataset: LabelledImages, copies: list[int], together: list[int]
) -> list[list[tuple[str, Path]]]:
    """Groups of `together` that span splits only through uncertain links between copy groups."""
    members: dict[int, list[int]] = {}
    for index, group in enumerate(together):
        if group >= 0:
            members.setdefault(group, []).append(index)
    found = []
    for indexes in members.values():
        records = [dataset.records[index] for index in indexes]
        if len({copies[index] for index in indexes}) > 1 and len({r.split for r in records}) > 1:
            found.append([(r.split or NO_SPLIT, r.path) for r in records])
    return found


def format_report(report: DataReport) -> str:
    """A compact text report: a table of classes by splits, then the problems found."""

    def rel(path: Path) -> str:
        return _relative(path, report.root)

    split_note = "split given" if report.has_split else "no split given"
    lines = [
        f"{report.root}: {len(report.class_names)} classes, {report.total} readable images ({split_note})"
    ]
    if report.multi_label:
        lines.append("multi-label: each image counts once for every class it contains")

    columns = [*report.splits, "total"] if report.has_split else ["images"]
    name_width = max(len("class"), *(len(name) for name in report.class_names))
    widths = [max(len(column), 6) for column in columns]
    lines.append(
        "  ".join(["class".ljust(name_width)] + [c.rjust(w) for c, w in zip(columns, widths, strict=True)])
    )
    rows = [(name, [*report.counts[name].values()]) for name in report.class_names]
    totals = [sum(report.counts[name][s] for name in report.class_names) for s in report.splits]
    for name, values in [*rows, ("total", totals)]:
        # Multi-label rows overlap, so the total column of the totals row is the image count.
        row_total = report.total if report.multi_label and name == "total" else sum(values)
        cells = [*values, row_total] if report.has_split else values
        lines.append(
            "  ".join(
                [name.ljust(name_width)] + [str(v).rjust(w) for v, w in zip(cells, widths, strict=True)]
            )
        )

    problems: list[str] = []
    if report.unreadable:
        problems.append(
            f"unreadable images: {len(report.unreadable)} (skipped in training; replace or remove)"
        )
        problems += _listed([f"{rel(path)}: {reason}" for path, reason in report.unreadable])
    if report.exact_duplicates:
        images = sum(len(group) for group in report.exact_duplicates)
        problems.append(f"exact duplicate groups: {len(report.exact_duplicates)} ({images} files)")
        problems += _listed([" = ".join(rel(path) for path in group) for group in report.exact_duplicates])
    if report.near_duplicates:
        images = sum(len(group) for group in report.near_duplicates)
        problems.append(f"near-duplicate groups: {len(report.near_duplicates)} ({images} files)")
        problems += _listed([" ~ ".join(rel(path) for path in group) for group in report.near_duplicates])
    if report.cross_class:
        problems.append(
            f"duplicate groups with different classes: {len(report.cross_class)} (check the labels)"
        )
        problems += _listed([", ".join(f"{rel(p)} [{c}]" for c, p in group) for group in report.cross_class])
    if report.cross_split:
        problems.append(
            f"duplicate groups across splits: {len(report.cross_split)} (test scores are inflated; "
            "re-split with duplicates grouped)"
        )
        # Every leaking group is listed: each one is a test image whose copy is trained on.
        problems += _listed(
            [", ".join(f"{rel(p)} [{s}]" for s, p in group) for group in report.cross_split], limit=None
        )
    if report.possible_cross_split:
        problems.append(
            f"possible copies across splits: {len(report.possible_cross_split)} groups (weak evidence: "
            "look at them; `ewaste data split` keeps each in one split)"
        )
        problems += _listed(
            [", ".join(f"{rel(p)} [{s}]" for s, p in group) for group in report.possible_cross_split],
            limit=None,
        )
    if report.label_problems:
        problems.append(
            f"label problems: {len(report.label_problems)} (lines and images skipped; fix or delete them)"
        )
        problems += _listed([why for _, why in report.label_problems])
    if report.ignored:
        problems.append(f"ignored: {len(report.ignored)} files or folders")
        problems += _listed([f"{rel(path)}: {reason}" for path, reason in report.ignored])

    lines.append("")
    lines += problems or ["no problems found"]
    if not report.has_split and (report.exact_duplicates or report.near_duplicates):
        lines.append("no split given: a grouped split keeps each duplicate group within one split")
    return "\n".join(lines)


def _listed(items: list[str], limit: int | None = _LISTED) -> list[str]:
    shown = [f"  {item}" for item in items[:limit]]
    if limit is not None and len(items) > limit:
        shown.append(f"  ... and {len(items) - limit} more")
    return shown


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
