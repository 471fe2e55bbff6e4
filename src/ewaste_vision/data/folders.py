"""Reading a classification dataset laid out as one folder per class.

Three layouts are accepted, because that is how people and exporters leave them:

    root/<class>/<images>                        no split given
    root/{train,val,test}/<class>/<images>       split given (valid, validation, testing also named)
    root/images/<class>/<images>                 a lone `images/` folder beside other files (CSV, README)

Images are found by extension only and never decoded here, so listing a large folder is fast;
unreadable files are found later, when the images are fingerprinted or loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from ewaste_vision.data.images import IMAGE_EXTENSIONS, is_image_file
from ewaste_vision.data.records import SPLITS, ImageRecord, LabelledImages
from ewaste_vision.errors import DataError

SPLIT_FOLDER_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
"""Folder names (lower case) recognised as splits, mapped onto `SPLITS`."""

_LAYOUT_HINT = "expected ROOT/<class>/<images> or ROOT/{train,val,test}/<class>/<images>"


def read_class_folders(root: Path) -> LabelledImages:
    """List the labelled images under `root`, one class per folder.

    Class names are the folder names, sorted, taken over all splits. Images in nested folders
    inside a class folder belong to that class. Empty class folders and files that are not
    images are recorded in `skipped` rather than failing.

    Args:
        root: the dataset folder, in one of the layouts of this module's docstring.

    Returns:
        The dataset; records carry a split only when the folders give one.

    Raises:
        DataError: `root` is missing or not a folder, it holds no class folders or no images,
            split folders are mixed with class folders, or fewer than two classes have images.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found; check the path")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a dataset folder; pass the folder holding the classes")

    base = _dataset_base(root)
    folders = _subfolders(base)
    split_of = {folder: SPLIT_FOLDER_NAMES.get(folder.name.lower()) for folder in folders}
    named_splits = [folder for folder, split in split_of.items() if split is not None]
    skipped: list[tuple[Path, str]] = [
        (path, "not inside a class folder; ignored") for path in _visible_files(base) if is_image_file(path)
    ]

    if named_splits and len(named_splits) != len(folders):
        not_splits = ", ".join(sorted(folder.name for folder in folders if split_of[folder] is None))
        raise DataError(
            f"{base}: split folders ({', '.join(sorted(f.name for f in named_splits))}) sit beside "
            f"other folders ({not_splits}); move every class folder into a split folder, or drop the splits"
        )

    # (split, class folder) pairs; split is None for the flat layout.
    class_folders: list[tuple[str | None, Path]] = []
    if named_splits:
        seen: dict[str, Path] = {}
        for folder in named_splits:
            split = split_of[folder]
            assert split is not None
            if split in seen:
                raise DataError(f"{folder}: names the same split as {seen[split]}; merge them or rename one")
            seen[split] = folder
            skipped += [
                (path, "not inside a class folder; ignored")
                for path in _visible_files(folder)
                if is_image_file(path)
            ]
            class_folders += [(split, class_folder) for class_folder in _subfolders(folder)]
    else:
        class_folders = [(None, folder) for folder in folders]
    if not class_folders:
        raise DataError(f"{base}: no class folders found; {_LAYOUT_HINT}")

    images_of: dict[tuple[str | None, Path], list[Path]] = {}
    for key in class_folders:
        images, others = _images_under(key[1])
        images_of[key] = images
        skipped += [
            (path, f"extension {path.suffix or '(none)'} is not an image type; ignored") for path in others
        ]

    images_per_class: dict[str, int] = {}
    for (_, folder), images in images_of.items():
        images_per_class[folder.name] = images_per_class.get(folder.name, 0) + len(images)
    class_names = sorted(name for name, count in images_per_class.items() if count > 0)
    skipped += [
        (folder, "class folder holds no images; class dropped")
        for (_, folder), images in images_of.items()
        if images_per_class[folder.name] == 0
    ]

    if not class_names:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"{base}: no image files ({extensions}) in any class folder; {_LAYOUT_HINT}")
    if len(class_names) < 2:
        raise DataError(
            f"{base}: only class '{class_names[0]}' has images; classification needs at least two classes, "
            "add a folder of images for each other class"
        )

    label_of = {name: index for index, name in enumerate(class_names)}
    split_order = {split: index for index, split in enumerate(SPLITS)}
    records = [
        ImageRecord(path=path, label=label_of[folder.name], split=split)
        for (split, folder), images in sorted(
            images_of.items(), key=lambda item: (split_order.get(item[0][0] or "", -1), item[0][1].name)
        )
        for path in images
    ]
    return LabelledImages(root=base, class_names=class_names, records=records, skipped=skipped)


def _dataset_base(root: Path) -> Path:
    """The folder holding class (or split) folders: `root`, or its lone `images/` subfolder."""
    folders = _subfolders(root)
    if len(folders) == 1 and folders[0].name.lower() == "images":
        inner = _subfolders(folders[0])
        # `images/` full of class folders is a container; `images/` full of pictures is a class.
        if inner and not any(is_image_file(path) for path in _visible_files(folders[0])):
            return folders[0]
    return root


def _subfolders(folder: Path) -> list[Path]:
    """Visible subfolders, sorted by name so the order never depends on the file system."""
    return sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def _visible_files(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith("."))


def _images_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, other visible files) anywhere below `folder`, hidden folders excluded, sorted."""
    images: list[Path] = []
    others: list[Path] = []
    for current, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            path = Path(current) / name
            if is_image_file(path):
                images.append(path)
            elif not name.startswith("."):
                others.append(path)
    return sorted(images), sorted(others)
