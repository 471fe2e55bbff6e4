"""`split.csv` in a run directory: which image went to which split, so evaluation reuses it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ewaste_vision.data.records import ImageRecord, ObjectBox
from ewaste_vision.errors import RunError
from ewaste_vision.io.atomic import write_text

COLUMNS = ("path", "label", "class", "split", "group", "present", "boxes")


def write_split_file(path: Path, records: list[ImageRecord], class_names: list[str]) -> Path:
    """Write one row per record."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for record in records:
        name = (
            class_names[record.label]
            if record.label >= 0
            else ";".join(class_names[i] for i in record.present)
        )
        boxes = json.dumps([[b.class_id, b.cx, b.cy, b.w, b.h] for b in record.boxes]) if record.boxes else ""
        present = ";".join(str(i) for i in record.present)
        writer.writerow([str(record.path), record.label, name, record.split, record.group, present, boxes])
    return write_text(path, buffer.getvalue())


def read_split_file(path: Path) -> list[ImageRecord]:
    """Read records back; a damaged file is a `RunError` naming the line."""
    if not path.is_file():
        raise RunError(f"{path}: missing; pass --data DIR to evaluate on a dataset instead")
    records = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                present = tuple(int(i) for i in (row.get("present") or "").split(";") if i)
                boxes = tuple(
                    ObjectBox(int(b[0]), *map(float, b[1:])) for b in json.loads(row.get("boxes") or "[]")
                )
                records.append(
                    ImageRecord(
                        Path(row["path"]),
                        int(row["label"]),
                        row["split"] or None,
                        int(row["group"]),
                        present,
                        boxes,
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise RunError(
                    f"{path}:{line_number}: malformed row ({exc}); retrain or pass --data DIR"
                ) from exc
    return records
