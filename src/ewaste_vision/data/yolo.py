"""Reading a YOLO dataset (`data.yaml` + images + one label file per image) into records.

The layout follows Ultralytics: `data.yaml` names the classes and where the `train`, `val` (or
`valid`) and `test` images are, each a folder, a list of folders, or a `.txt` file listing images.
The label file of `.../images/x.jpg` is `.../labels/x.txt` (the last `images` path component
becomes `labels`); each line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 ...` (a polygon,
turned into its bounding box here), in fractions of the image.

Real exports are messy, so a bad line never stops the reader: it is skipped and reported with its
file and line number, and an image without a label file is reported and left out. An empty label
file is an image with no objects.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ewaste_vision.data.images import is_image_file
from ewaste_vision.data.records import ImageRecord, LabelledImages, ObjectBox
from ewaste_vision.errors import DataError
from ewaste_vision.io.atomic import write_atomic

YAML_NAMES = ("data.yaml", "data.yml")
"""File names looked for when a folder is given."""

SPLIT_KEYS: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}
"""Canonical split -> the `data.yaml` keys that may hold it, in order of preference."""

_COORD_TOLERANCE = 1e-6
"""Exporters write 1.0000001 now and then; such values are clipped, not rejected."""


@dataclass
class YoloSummary:
    """What `read_yolo` met on the way, beyond the records themselves.

    Attributes:
        yaml_file: the `data.yaml` that was read.
        label_files: label files read.
        boxes: object lines kept (boxes and converted polygons).
        polygons_converted: polygon lines turned into their bounding box.
        malformed_lines: lines skipped, by reason (e.g. "class id out of range").
        missing_labels: images left out because they have no label file.
        empty_label_files: images whose label file is empty (no objects).
    """

    yaml_file: Path
    label_files: int = 0
    boxes: int = 0
    polygons_converted: int = 0
    malformed_lines: Counter[str] = field(default_factory=Counter)
    missing_labels: int = 0
    empty_label_files: int = 0

    def describe(self) -> str:
        """One line for people."""
        skipped = sum(self.malformed_lines.values())
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.malformed_lines.most_common())
        return (
            f"{self.label_files} label files, {self.boxes} objects ({self.polygons_converted} polygons "
            f"converted to boxes), {skipped} malformed lines skipped"
            + (f" ({reasons})" if reasons else "")
            + f", {self.missing_labels} images without a label file"
            + f", {self.empty_label_files} empty label files"
        )


def is_yolo_dataset(root: Path | str) -> bool:
    """True when `root` is a folder holding a data.yaml, or is such a file."""
    return find_yolo_yaml(root) is not None


def find_yolo_yaml(root_or_yaml: Path | str) -> Path | None:
    """The `data.yaml` of a YOLO dataset given as that file or its folder; None when there is none."""
    path = Path(root_or_yaml)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return path
    if path.is_dir():
        for name in YAML_NAMES:
            if (path / name).is_file():
                return path / name
    return None


def read_yolo_dataset(root_or_yaml: Path | str, splits_only: bool = False) -> LabelledImages:
    """Read a YOLO dataset; see `read_yolo` (this drops the summary)."""
    return read_yolo(root_or_yaml, splits_only=splits_only)[0]


def read_yolo(root_or_yaml: Path | str, splits_only: bool = False) -> tuple[LabelledImages, YoloSummary]:
    """Read a YOLO dataset into records with multi-label classes and boxes.

    Args:
        root_or_yaml: the dataset folder (holding `data.yaml`) or the yaml file itself.
        splits_only: only find the images and their splits; label files are not opened, so
            records carry no classes or boxes and no label problems are reported.

    Returns:
        The dataset (`label` is -1; `present` holds the sorted class ids of the image, `boxes`
        its objects, `split` the yaml key it was listed under; `root` is the dataset root) and a
        summary. `skipped` holds one (label file, "file:line: reason") per malformed line and one
        (image, reason) per image without a label file.

    Raises:
        DataError: no `data.yaml`, unreadable yaml, a missing `names` or `train` key, or a split
            path that does not exist; the message names the key.
    """
    yaml_file = find_yolo_yaml(root_or_yaml)
    if yaml_file is None:
        raise DataError(
            f"{root_or_yaml}: no data.yaml found; pass a YOLO dataset folder or its data.yaml file"
        )
    spec = _load_yaml(yaml_file)
    class_names = _class_names(spec, yaml_file)
    root = _dataset_root(spec, yaml_file)

    summary = YoloSummary(yaml_file=yaml_file)
    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[Path, str] = {}
    for split, keys in SPLIT_KEYS.items():
        key = next((k for k in keys if spec.get(k) not in (None, "", [])), None)
        if key is None:
            if split == "train":
                raise DataError(f"{yaml_file}: key 'train' is missing; add `train: path/to/train/images`")
            continue
        for image in _split_images(spec[key], key, root, yaml_file):
            if image in seen:
                skipped.append(
                    (image, f"{image}: listed in {seen[image]} and {split}; kept in {seen[image]}")
                )
                continue
            seen[image] = split
            if splits_only:
                records.append(ImageRecord(path=image, label=-1, split=split))
                continue
            label_file = label_path_for(image)
            if not label_file.is_file():
                summary.missing_labels += 1
                skipped.append(
                    (
                        image,
                        f"{image}: no label file ({label_file}); skipped, add one (empty = no objects)",
                    )
                )
                continue
            boxes, problems = parse_label_file(label_file, len(class_names), summary)
            skipped += [(label_file, problem) for problem in problems]
            records.append(
                ImageRecord(
                    path=image,
                    label=-1,
                    split=split,
                    present=tuple(sorted({box.class_id for box in boxes})),
                    boxes=tuple(boxes),
                )
            )
    if not records:
        raise DataError(f"{yaml_file}: no labelled images found; check the split paths and labels/ folders")
    return LabelledImages(root=root, class_names=class_names, records=records, skipped=skipped), summary


def label_path_for(image: Path) -> Path:
    """Ultralytics convention: the last `images` component of the path becomes `labels`, suffix `.txt`."""
    parts = list(image.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_label_file(
    label_file: Path, num_classes: int, summary: YoloSummary | None = None
) -> tuple[list[ObjectBox], list[str]]:
    """Parse one label file into boxes; polygons become their bounding box.

    Returns:
        The boxes of the good lines, and one "file:line: reason; what to do" per bad line.
    """
    try:
        text = label_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [], [f"{label_file}: cannot read ({exc.strerror or type(exc).__name__}); check the file"]
    boxes: list[ObjectBox] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = parse_label_line(line, num_classes)
        if isinstance(parsed, str):
            problems.append(f"{label_file}:{number}: {parsed}; fix or delete the line (it was skipped)")
            if summary is not None:
                summary.malformed_lines[parsed.split(" (")[0]] += 1
            continue
        box, was_polygon = parsed
        boxes.append(box)
        if summary is not None:
            summary.boxes += 1
            summary.polygons_converted += was_polygon
    if summary is not None:
        summary.label_files += 1
        summary.empty_label_files += not boxes and not problems
    return boxes, problems


def parse_label_line(line: str, num_classes: int) -> tuple[ObjectBox, bool] | str:
    """One label line as (box, was it a polygon), or the reason it is malformed."""
    fields = line.split()
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        return (
            f"wrong field count ({len(fields)}; a box has 5 fields: class cx cy w h, "
            "a polygon an odd number of at least 7: class x1 y1 x2 y2 x3 y3 ...)"
        )
    try:
        class_value = float(fields[0])
        values = [float(value) for value in fields[1:]]
    except ValueError:
        return f"not a number in {line.strip()!r}"
    if not class_value.is_integer():
        return f"class id {fields[0]} is not a whole number"
    class_id = int(class_value)
    if not 0 <= class_id < num_classes:
        return f"class id {class_id} out of range (data.yaml names classes 0..{num_classes - 1})"
    if not all(math.isfinite(v) and -_COORD_TOLERANCE <= v <= 1 + _COORD_TOLERANCE for v in values):
        return "coordinates outside [0, 1] (YOLO labels are fractions of the image width and height)"
    values = [min(max(v, 0.0), 1.0) for v in values]
    if len(fields) == 5:
        cx, cy, w, h = values
        if w <= 0 or h <= 0:
            return "zero width or height"
        return ObjectBox(class_id, cx, cy, w, h), False
    xs, ys = values[0::2], values[1::2]
    w, h = max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        return "zero width or height"
    return ObjectBox(class_id, (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2, w, h), True


def multi_hot(records: Sequence[ImageRecord], num_classes: int) -> torch.Tensor:
    """The classes present in each record as a float tensor [N, C] of zeros and ones."""
    vectors = torch.zeros(len(records), num_classes)  # [N, C]
    for row, record in enumerate(records):
        if record.present:
            vectors[row, list(record.present)] = 1.0
    return vectors


def write_multilabel_csv(dataset: LabelledImages, path: Path | str) -> Path:
    """Write one row per image: file (relative to the dataset root), split, then 0/1 per class."""
    vectors = multi_hot(dataset.records, len(dataset.class_names)).to(torch.int64).tolist()

    def write(handle: Any) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "split", *dataset.class_names])
        for record, vector in zip(dataset.records, vectors, strict=True):
            writer.writerow([_relative(record.path, dataset.root), record.split or "", *vector])

    return write_atomic(path, write)


def _load_yaml(yaml_file: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{yaml_file}: cannot read as YAML ({type(exc).__name__}); fix the file") from exc
    if not isinstance(spec, dict):
        raise DataError(f"{yaml_file}: expected a mapping with keys names, train, val; fix the file")
    return spec


def _class_names(spec: dict[str, Any], yaml_file: Path) -> list[str]:
    names = spec.get("names")
    if names is None:
        raise DataError(f"{yaml_file}: key 'names' is missing; add the class names as a list or a mapping")
    if isinstance(names, dict):
        try:
            ids = sorted(int(key) for key in names)
        except (TypeError, ValueError):
            raise DataError(f"{yaml_file}: key 'names' maps non-integer ids; use 0: name, 1: name") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{yaml_file}: key 'names' must number classes 0..{len(ids) - 1} without gaps")
        class_names = [str(names[key]) for key in sorted(names, key=int)]
    elif isinstance(names, list):
        class_names = [str(name) for name in names]
    else:
        raise DataError(f"{yaml_file}: key 'names' must be a list or a mapping of class names")
    if not class_names:
        raise DataError(f"{yaml_file}: key 'names' lists no classes; add the class names")
    declared = spec.get("nc")
    if declared is not None and declared != len(class_names):
        raise DataError(
            f"{yaml_file}: key 'nc' says {declared} classes, 'names' has {len(class_names)}; make them agree"
        )
    return class_names


def _dataset_root(spec: dict[str, Any], yaml_file: Path) -> Path:
    folder = yaml_file.resolve().parent
    given = spec.get("path")
    if given in (None, ""):
        return folder
    root = (folder / str(given)).resolve()
    # Exports often carry the exporter's own absolute `path`; the yaml's folder is the next best guess.
    return root if root.is_dir() else folder


def _split_images(entry: Any, key: str, root: Path, yaml_file: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        location = _resolve(str(item), root, yaml_file.resolve().parent)
        if location is None:
            raise DataError(
                f"{yaml_file}: key '{key}' points to {item}, which does not exist under {root}; fix the path"
            )
        if location.is_dir():
            images += sorted(path for path in location.rglob("*") if is_image_file(path))
        else:
            images += _listed_images(location, root)
    return images


def _resolve(given: str, root: Path, yaml_folder: Path) -> Path | None:
    """`given` relative to the root; Roboflow exports write `../train/images`, so try that stripped too."""
    candidates = [Path(given)] if Path(given).is_absolute() else [root / given, yaml_folder / given]
    stripped = given
    while stripped.startswith("../"):
        stripped = stripped[3:]
        candidates += [root / stripped, yaml_folder / stripped]
    return next((path.resolve() for path in candidates if path.exists()), None)


def _listed_images(list_file: Path, root: Path) -> list[Path]:
    images = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        given = Path(line.strip())
        options: Iterable[Path] = [given] if given.is_absolute() else [list_file.parent / given, root / given]
        images.append(next((path.resolve() for path in options if path.exists()), (root / given).resolve()))
    return images


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
