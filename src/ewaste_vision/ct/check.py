"""`ewaste data check` for a folder of CT volumes: what each volume is, and what could not be read.

People run it before rendering X-rays from their scans: a wrong spacing (a TIFF stack without a
sidecar, a header exported in inches) or an intensity range that is not HU-like (a scan already
windowed to 0-255) changes every render, and a class with one device cannot be held out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ewaste_vision.ct.volume import (
    NPY_READ_ERRORS,
    SITK_SUFFIXES,
    STACK_SUFFIXES,
    VolumeEntry,
    find_volumes,
    is_dicom_folder,
    read_volume,
    volume_suffix,
)
from ewaste_vision.data.images import is_image_file
from ewaste_vision.errors import DataError

_PERCENTILE_SAMPLE = 2_000_000
"""Voxels sampled (evenly strided) for the 1st/99th percentiles: exact enough, fast on big scans."""

_LOOKED_AT = 5000
"""Files `holds_volumes` looks at before deciding, so deciding is quick on a huge image folder."""


@dataclass(frozen=True)
class VolumeStats:
    """What one readable volume holds."""

    entry: VolumeEntry
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    spacing_known: bool
    minimum: float
    maximum: float
    p1: float
    p99: float


@dataclass
class VolumeReport:
    """The findings of `check_volumes`. Paths are absolute."""

    root: Path
    volumes: list[VolumeStats] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        """Classes with at least one readable volume, sorted."""
        return sorted({stats.entry.class_name for stats in self.volumes})

    def devices_per_class(self) -> dict[str, int]:
        """Distinct devices with a readable volume, per class."""
        devices: dict[str, set[str]] = {}
        for stats in self.volumes:
            devices.setdefault(stats.entry.class_name, set()).add(stats.entry.device)
        return {name: len(devices[name]) for name in sorted(devices)}

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data; paths relative to `root`."""
        return {
            "root": str(self.root),
            "kind": "volumes",
            "volumes": [
                {
                    "file": _relative(s.entry.path, self.root),
                    "class": s.entry.class_name,
                    "device": s.entry.device,
                    "shape": list(s.shape),
                    "spacing_mm": list(s.spacing),
                    "spacing_known": s.spacing_known,
                    "min": s.minimum,
                    "max": s.maximum,
                    "p1": s.p1,
                    "p99": s.p99,
                }
                for s in self.volumes
            ],
            "devices_per_class": self.devices_per_class(),
            "unreadable": [{"file": _relative(p, self.root), "reason": r} for p, r in self.unreadable],
            "skipped": [{"path": _relative(p, self.root), "reason": r} for p, r in self.skipped],
        }


def holds_volumes(root: Path) -> bool:
    """True when `root` is a folder of CT volumes rather than of images.

    NRRD, NIfTI, MetaImage, DICOM files and DICOM folders are volumes; when they are at least as
    many as the images, the folder is a volume folder. TIFF and .npy can be either, so a folder
    holding only those counts as volumes when the first few are 3-D stacks of at least 4 slices
    (a dual-energy X-ray TIFF has 2 pages, a colour image 3 channels).
    """
    root = Path(root)
    if not root.is_dir() or (root / "data.yaml").exists():
        return False
    volumes = images = 0
    stacks: list[Path] = []
    looked = 0
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        kept = []
        for name in sorted(subfolders):
            if name.startswith("."):
                continue
            if is_dicom_folder(here / name):
                volumes += 1
            else:
                kept.append(name)
        subfolders[:] = kept
        for name in files:
            suffix = volume_suffix(Path(name))
            if suffix in SITK_SUFFIXES:
                volumes += 1
            elif suffix in STACK_SUFFIXES:
                stacks.append(here / name)
            elif is_image_file(here / name):
                images += 1
            looked += 1
        if looked > _LOOKED_AT:
            break
    if volumes:
        return volumes >= images
    if images or not stacks:
        return False
    return all(_is_volume_stack(path) for path in sorted(stacks)[:3])


def check_volumes(root: Path) -> VolumeReport:
    """Read every volume under `root/CLASS/...` and summarise it; bad files are listed, not fatal.

    Raises:
        DataError: `root` holds no volumes at all (see `find_volumes`).
    """
    entries, skipped = find_volumes(root)
    report = VolumeReport(root=Path(root), skipped=skipped)
    for entry in entries:
        try:
            volume = read_volume(entry.path)
        except DataError as exc:
            report.unreadable.append((entry.path, str(exc)))
            continue
        flat = volume.voxels.reshape(-1)
        sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
        p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
        report.volumes.append(
            VolumeStats(
                entry=entry,
                shape=volume.shape,
                spacing=volume.spacing,
                spacing_known=volume.spacing_known,
                minimum=float(flat.min()),
                maximum=float(flat.max()),
                p1=p1,
                p99=p99,
            )
        )
    return report


def format_volume_report(report: VolumeReport, listed: int = 10) -> str:
    """A text report: one line per volume, devices per class, then the problems."""
    lines = [
        f"{report.root}: {len(report.class_names)} classes, {len(report.volumes)} readable volumes",
    ]
    rows: list[tuple[str, ...]] = [
        ("class", "device", "shape D x H x W", "spacing mm", "min", "p1", "p99", "max")
    ]
    for s in report.volumes:
        spacing = " x ".join(f"{v:.3g}" for v in s.spacing) + ("" if s.spacing_known else " (assumed)")
        rows.append(
            (
                s.entry.class_name,
                s.entry.device,
                " x ".join(str(n) for n in s.shape),
                spacing,
                *(f"{v:.0f}" for v in (s.minimum, s.p1, s.p99, s.maximum)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i < 4 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )

    lines.append("")
    per_class = report.devices_per_class()
    volumes_per_class = {name: sum(s.entry.class_name == name for s in report.volumes) for name in per_class}
    lines += [f"{name}: {volumes_per_class[name]} volumes, {n} devices" for name, n in per_class.items()]
    problems: list[str] = []
    single = [name for name, n in per_class.items() if n < 2]
    if single:
        problems.append(
            f"classes with one device: {', '.join(single)} (no device can be held out for testing)"
        )
    assumed = [s for s in report.volumes if not s.spacing_known]
    if assumed:
        problems.append(
            f'spacing assumed 1 mm: {len(assumed)} volumes (add NAME.json with {{"spacing": [d, h, w]}})'
        )
    if report.unreadable:
        problems.append(f"unreadable volumes: {len(report.unreadable)} (left out; replace or remove)")
        problems += _listed([reason for _, reason in report.unreadable], listed)
    if report.skipped:
        problems.append(f"skipped: {len(report.skipped)} files or folders")
        problems += _listed([f"{_relative(p, report.root)}: {r}" for p, r in report.skipped], listed)
    lines.append("")
    lines += problems or ["no problems found"]
    return "\n".join(lines)


def _is_volume_stack(path: Path) -> bool:
    """True when a .tif/.npy holds a single-valued 3-D stack of at least 4 slices."""
    try:
        if volume_suffix(path) == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        else:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                if "S" in series.axes:
                    return False
                shape = tuple(n for n in series.shape if n != 1)
    except (*NPY_READ_ERRORS, IndexError, tifffile.TiffFileError):
        return False
    return len(shape) == 3 and min(shape) >= 4


def _listed(items: list[str], listed: int) -> list[str]:
    shown = [f"  {item}" for item in items[:listed]]
    if len(items) > listed:
        shown.append(f"  ... and {len(items) - listed} more")
    return shown


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
