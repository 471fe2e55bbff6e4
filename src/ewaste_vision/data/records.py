"""The in-memory form of a labelled image collection, shared by every reader and task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
"""Canonical split names. Readers map folder names such as `valid` or `validation` onto these."""


@dataclass(frozen=True)
class ObjectBox:
    """One labelled object in YOLO convention: centre and size as fractions of the image."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float


@dataclass(frozen=True)
class ImageRecord:
    """One image and its label.

    Attributes:
        path: the image file.
        label: index into the collection's `class_names` (single-label tasks).
        split: one of `SPLITS`, or None when the source gave no split.
        group: images with the same group id are copies or near-copies of one photo and must
            share a split; -1 until duplicates have been looked for.
        present: multi-label tasks: indices of the classes present in the image (sorted).
        boxes: object annotations (YOLO-style datasets), empty otherwise.
    """

    path: Path
    label: int
    split: str | None = None
    group: int = -1
    present: tuple[int, ...] = ()
    boxes: tuple[ObjectBox, ...] = ()


@dataclass
class LabelledImages:
    """A dataset: class names, its records, and what was skipped while reading it."""

    root: Path
    class_names: list[str]
    records: list[ImageRecord]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(file, reason) for each file that could not be used; reported, never fatal."""

    def in_split(self, split: str) -> list[ImageRecord]:
        """The records assigned to `split`."""
        return [record for record in self.records if record.split == split]

    @property
    def has_split(self) -> bool:
        """True when every record has a split."""
        return bool(self.records) and all(record.split is not None for record in self.records)
