"""The `fuse` task's dataset: RGB photos and X-ray images of the same classes, side by side.

Layout (each side may have its own train/val/test folders, or neither has):

    ROOT/rgb/<class>/<images>       ROOT/xray/<class>/<images>

An RGB file and an X-ray file of one class with the same stem are a *true pair* (one device seen
both ways); any other image is paired at random within its class (`pairing`). Files are grouped
by *device*: the stem up to a `__` (the renders of `ewaste data synth-xray`, `dev01__a0003.png`)
or a last `_NN` / `-NN` (`phone3_07.png` -> `phone3`). Without split folders, whole devices are
dealt to train, validation and test, so no device has images on both sides of a split, in either
modality; when only one side has split folders, the other side's files follow their device.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ewaste_vision.data.folders import read_class_folders
from ewaste_vision.data.records import SPLITS, ImageRecord
from ewaste_vision.data.split_file import read_split_file, write_split_file
from ewaste_vision.errors import DataError

MODALITIES = ("rgb", "xray")
"""The two streams, in the order the fusion layer concatenates them."""

_LAYOUT = "the fuse task needs ROOT/rgb/<class>/<images> and ROOT/xray/<class>/<images>"
_DEVICE_SUFFIX = re.compile(r"__.*$|[_-]\d+$")


@dataclass
class PairedImages:
    """Both sides of a paired dataset; labels index `class_names` on both."""

    root: Path
    class_names: list[str]
    rgb: list[ImageRecord]
    xray: list[ImageRecord]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def side(self, modality: str) -> list[ImageRecord]:
        """The records of `modality` (`rgb` or `xray`)."""
        return self.rgb if modality == "rgb" else self.xray


def read_paired_folders(root: Path | str) -> PairedImages:
    """List (without decoding) the RGB and X-ray images under `root`.

    Raises:
        DataError: a side is missing, or a class has images on one side only (the error names the
            folder to fill), or only one side has split folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; {_LAYOUT}")
    for modality in MODALITIES:
        if not (root / modality).is_dir():
            raise DataError(f"{root / modality}: missing; {_LAYOUT}")
    rgb, xray = read_class_folders(root / "rgb"), read_class_folders(root / "xray")
    for name in sorted(set(rgb.class_names) - set(xray.class_names)):
        raise DataError(
            f"{root / 'xray' / name}: class {name!r} has RGB images but no X-ray images; "
            f"add X-ray images of {name} there, or move {root / 'rgb' / name} out of the dataset"
        )
    for name in sorted(set(xray.class_names) - set(rgb.class_names)):
        raise DataError(
            f"{root / 'rgb' / name}: class {name!r} has X-ray images but no RGB images; "
            f"add RGB images of {name} there, or move {root / 'xray' / name} out of the dataset"
        )
    rgb_records, xray_records = rgb.records, xray.records
    if rgb.has_split and not xray.has_split:
        xray_records = _follow_device_split(rgb_records, xray_records, root / "rgb", rgb.class_names)
    elif xray.has_split and not rgb.has_split:
        rgb_records = _follow_device_split(xray_records, rgb_records, root / "xray", rgb.class_names)
    return PairedImages(root, rgb.class_names, rgb_records, xray_records, rgb.skipped + xray.skipped)


def _follow_device_split(
    split: list[ImageRecord], unsplit: list[ImageRecord], split_root: Path, class_names: list[str]
) -> list[ImageRecord]:
    """`unsplit` with the split of its device on the other side (`split`, from `split_root`)."""
    split_of: dict[tuple[int, str], str | None] = {}
    for record in split:
        key = (record.label, device_of(record.path))
        if split_of.setdefault(key, record.split) != record.split:
            raise DataError(
                f"{record.path}: device {key[1]!r} of class {class_names[key[0]]!r} sits in more than "
                f"one split folder under {split_root}; keep each device in one split"
            )
    out = []
    for record in unsplit:
        key = (record.label, device_of(record.path))
        if key not in split_of:
            raise DataError(
                f"{record.path}: device {key[1]!r} has no images under {split_root}, so its split is "
                "unknown; add split folders on this side too, or images of the device on the other"
            )
        out.append(dataclasses.replace(record, split=split_of[key]))
    return out


def device_of(path: Path) -> str:
    """The device a file shows: its stem up to a `__` or a last `_NN` / `-NN` (`phone3_07` -> `phone3`)."""
    return _DEVICE_SUFFIX.sub("", path.stem) or path.stem


def split_by_device(data: PairedImages, seed: int, fractions: tuple[float, float, float]) -> PairedImages:
    """Give every record a split, keeping each device (see `device_of`) in one split, per class.

    A dataset with split folders keeps them. Otherwise each class's devices are shuffled (seeded)
    and dealt out: at least one device to validation and one to test, the rest by `fractions`.

    Raises:
        DataError: a class has fewer than three devices, or a split of a class would hold images of
            one side only.
    """
    if all(r.split is not None for r in data.rgb + data.xray):
        check_both_sides(data)
        return data
    split_of: dict[tuple[int, str], str] = {}
    by_stem: set[int] = set()  # classes whose files are grouped by whole stem
    for label, name in enumerate(data.class_names):
        members = [r.path for r in data.rgb + data.xray if r.label == label]
        devices = sorted({device_of(path) for path in members})
        if len(devices) < 3:
            # A camera's own numbering (IMG_0001, IMG_0002, ...) makes one "device" of a class:
            # then every stem is a device of its own.
            by_stem.add(label)
            devices = sorted({path.stem for path in members})
        if len(devices) < 3:
            raise DataError(
                f"{data.root}: class {name!r} has {len(devices)} distinct file names; the fuse task "
                "needs at least 3 devices per class for train, validation and test, or give rgb/ and "
                "xray/ train/val/test folders"
            )
        order = np.random.default_rng([seed, label]).permutation(len(devices))
        n_test = max(1, round(fractions[2] * len(devices)))
        n_val = max(1, round(fractions[1] * len(devices)))
        for rank, index in enumerate(order.tolist()):
            split_of[(label, devices[index])] = (
                "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            )

    def assign(records: list[ImageRecord]) -> list[ImageRecord]:
        return [
            dataclasses.replace(
                r, split=split_of[(r.label, r.path.stem if r.label in by_stem else device_of(r.path))]
            )
            for r in records
        ]

    split_data = dataclasses.replace(data, rgb=assign(data.rgb), xray=assign(data.xray))
    check_both_sides(split_data)
    return split_data


def check_both_sides(data: PairedImages) -> None:
    for split in SPLITS:
        for label, name in enumerate(data.class_names):
            have = {m: any(r.split == split and r.label == label for r in data.side(m)) for m in MODALITIES}
            if have["rgb"] != have["xray"]:
                present, absent = ("rgb", "xray") if have["rgb"] else ("xray", "rgb")
                raise DataError(
                    f"{data.root / absent}: the {split} split of class {name!r} has {present} images but "
                    f"no {absent} images; add {absent} images of more {name} devices, or give both sides "
                    "train/val/test folders"
                )


def write_stream_tree(records: list[ImageRecord], class_names: list[str], folder: Path) -> Path:
    """Lay `records` out as `folder/<split>/<class>/` links to the files, for a stream's classify run.

    Links, not copies: the stream run then trains on exactly the fusion's split. Link names carry
    an index so files of one name from different folders stay apart.
    """
    for index, record in enumerate(records):
        target = folder / str(record.split) / class_names[record.label] / f"{index:05d}-{record.path.name}"
        if target.is_symlink() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(record.path.resolve(), target)
    return folder


def records_from_stream_run(
    records: list[ImageRecord], run_dir: Path, modality: str, class_names: list[str]
) -> tuple[list[ImageRecord], list[tuple[Path, str]]]:
    """`records` with the split the stream run in `run_dir` gave each file.

    A file the run did not use (unreadable when it fingerprinted it, or not in its dataset) is
    returned as skipped: its split is unknown, so it could leak into the fusion's test set.
    """
    known: dict[Path, ImageRecord] = {}
    for r in read_split_file(run_dir / "split.csv"):
        known[r.path.resolve()] = r
    kept, skipped = [], []
    for record in records:
        found = known.get(record.path.resolve())
        if found is None or found.split is None:
            skipped.append(
                (
                    record.path,
                    f"not in the {modality} stream run's split.csv ({run_dir}); unreadable or not used there",
                )
            )
            continue
        kept.append(dataclasses.replace(record, split=found.split))
    return kept, skipped


def write_pair_splits(run_dir: Path, data: PairedImages) -> None:
    """`split_rgb.csv` and `split_xray.csv`: which file went to which split, for `evaluate`."""
    for modality in MODALITIES:
        write_split_file(run_dir / f"split_{modality}.csv", data.side(modality), data.class_names)


def read_pair_splits(run_dir: Path, class_names: list[str]) -> PairedImages:
    """The records `write_pair_splits` wrote."""
    rgb = read_split_file(run_dir / "split_rgb.csv")
    xray = read_split_file(run_dir / "split_xray.csv")
    return PairedImages(run_dir, class_names, rgb, xray)
