"""Reading YOLO-format datasets (`data.yaml` + images + labels), as Roboflow and Ultralytics export.

Each label line is `class cx cy w h` (a box) or `class x1 y1 x2 y2 ...` (a polygon, turned into its
bounding box), coordinates as fractions of the image. A bad line is skipped and reported with its
file and line number; an image without a label file is reported; an empty label file means the
image holds none of the classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ewaste_vision.data.images import IMAGE_EXTENSIONS
from ewaste_vision.data.records import ImageRecord, LabelledImages, ObjectBox
from ewaste_vision.errors import DataError

SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def find_data_yaml(root_or_yaml: Path) -> Path:
    """The `data.yaml` of a dataset given as its folder or the file itself."""
    path = Path(root_or_yaml)
    candidate = path / "data.yaml" if path.is_dir() else path
    if not candidate.is_file():
        raise DataError(
            f"{candidate}: not found; a YOLO dataset needs a data.yaml with `names` and split paths"
        )
    return candidate


def is_yolo_dataset(root: Path) -> bool:
    """True when `root` is a folder holding a data.yaml, or is such a file."""
    root = Path(root)
    return (root / "data.yaml").is_file() or (root.is_file() and root.suffix in (".yaml", ".yml"))


def class_names_from_yaml(spec: dict[str, Any], source: Path) -> list[str]:
    """`names` as a list or as a {index: name} mapping, checked against `nc` when given."""
    if "names" not in spec:
        raise DataError(f"{source}: missing key 'names'; list the class names in index order")
    names = spec["names"]
    if isinstance(names, dict):
        try:
            indices = sorted(int(k) for k in names)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: key 'names' must map class indices 0..N-1 to names") from exc
        if indices != list(range(len(indices))):
            raise DataError(
                f"{source}: key 'names' must number the classes 0..{len(indices) - 1} without gaps"
            )
        names = [names[k] if k in names else names[str(k)] for k in indices]
    if not isinstance(names, list) or not names:
        raise DataError(f"{source}: key 'names' must be a non-empty list or mapping of class names")
    if "nc" in spec and int(spec["nc"]) != len(names):
        raise DataError(f"{source}: key 'nc' says {spec['nc']} classes but 'names' lists {len(names)}")
    return [str(n) for n in names]


def parse_label_line(line: str, num_classes: int) -> ObjectBox:
    """One label line as a box; `ValueError` says what is wrong with it."""
    fields = line.split()
    if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
        raise ValueError(f"expected 'class cx cy w h' or 'class x1 y1 x2 y2 ...', got {len(fields)} fields")
    try:
        class_value = float(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError("a field is not a number") from None
    if not class_value.is_integer() or not 0 <= class_value < num_classes:
        raise ValueError(f"class id {fields[0]} is outside 0..{num_classes - 1}")
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError("a coordinate is outside [0, 1]")
    if len(values) == 4:
        cx, cy, w, h = values
    else:
        xs, ys = values[0::2], values[1::2]
        cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        w, h = max(xs) - min(xs), max(ys) - min(ys)
    return ObjectBox(int(class_value), cx, cy, w, h)


def read_label_file(path: Path, num_classes: int) -> tuple[list[ObjectBox], list[tuple[Path, str]]]:
    """Boxes of one label file and the problems found in it (file:line: reason)."""
    boxes, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            boxes.append(parse_label_line(line, num_classes))
        except ValueError as exc:
            problems.append((path, f"{path}:{number}: {exc}; line skipped, fix or delete it"))
    return boxes, problems


def _split_image_files(entry: Any, base: Path, key: str, source: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for item in entries:
        folder = (base / str(item)).resolve()
        if folder.is_file() and folder.suffix == ".txt":
            files += [
                (folder.parent / line.strip()).resolve()
                for line in folder.read_text().splitlines()
                if line.strip()
            ]
        elif folder.is_dir():
            files += sorted(
                p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        else:
            raise DataError(f"{source}: key '{key}' points to {folder}, which does not exist; fix the path")
    return files


def label_path_for(image: Path) -> Path:
    """Ultralytics convention: the last `images` folder of the path becomes `labels`, suffix `.txt`."""
    parts = list(image.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_dataset(root_or_yaml: Path) -> LabelledImages:
    """All images of a YOLO dataset with their classes present and boxes; problems go to `skipped`."""
    source = find_data_yaml(Path(root_or_yaml))
    try:
        spec = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{source}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    if not isinstance(spec, dict):
        raise DataError(f"{source}: expected a mapping with keys 'names', 'train', 'val'")
    names = class_names_from_yaml(spec, source)
    base = (source.parent / str(spec.get("path") or ".")).resolve()
    if not base.is_dir():
        base = source.parent.resolve()  # exports often carry the exporter's absolute 'path'
    split_keys = [k for k in SPLIT_KEYS if spec.get(k)]
    if not split_keys:
        raise DataError(f"{source}: missing key 'train' (and 'val'/'test'); give the image folders")
    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    for key in split_keys:
        for image in _split_image_files(spec[key], base, key, source):
            label_file = label_path_for(image)
            if not label_file.is_file():
                skipped.append((image, f"{image}: no label file {label_file.name}; image skipped"))
                continue
            boxes, problems = read_label_file(label_file, len(names))
            skipped += problems
            present = tuple(sorted({b.class_id for b in boxes}))
            records.append(ImageRecord(image, -1, SPLIT_KEYS[key], -1, present, tuple(boxes)))
    if not records:
        raise DataError(f"{source}: no labelled images found; check the split paths and labels/ folders")
    return LabelledImages(base, names, records, skipped)
