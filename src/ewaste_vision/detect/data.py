"""Images and their boxes as detector inputs, with augmentation suited to circuit boards.

Every image is resized once to `image_size` x `image_size` and kept in memory as 8-bit (a 640 px
board costs 1.2 MB), so later epochs decode nothing. Boxes become pixel xyxy at that size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ewaste_vision.data.images import load_rgb
from ewaste_vision.data.records import ImageRecord, ObjectBox

Target = dict[str, torch.Tensor]
"""`boxes` [N, 4] float xyxy pixels, `labels` [N] int64: torchvision's detection convention."""


def boxes_to_pixels(boxes: Sequence[ObjectBox], width: int, height: int) -> Target:
    """YOLO boxes (centre, size as fractions) as a pixel xyxy target for an image of that size."""
    if not boxes:
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
    fractions = torch.tensor([[b.cx, b.cy, b.w, b.h] for b in boxes], dtype=torch.float32)  # [N, 4]
    half = fractions[:, 2:] / 2
    corners = torch.cat([fractions[:, :2] - half, fractions[:, :2] + half], dim=1).clamp(0, 1)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return {"boxes": corners * scale, "labels": torch.tensor([b.class_id for b in boxes], dtype=torch.int64)}


def resized_rgb_tensor(path: Path, image_size: int) -> torch.Tensor:
    """The image at `path` as uint8 [3, S, S] (stretched, as YOLO exports usually are)."""
    image = load_rgb(path)
    pixels = v2.functional.pil_to_tensor(image)  # [3, H, W] uint8
    return v2.functional.resize(pixels, [image_size, image_size], antialias=True)


MODALITIES = ("rgb", "xray")
"""Input kinds: photos, or dual-energy X-ray pairs (channels high, low, mean; see `data.xray`)."""


def dataset_modality(root: Path) -> str:
    """`xray` when the dataset's data.yaml says `modality: xray_dual_energy`, else `rgb`."""
    import yaml

    from ewaste_vision.data.yolo import find_yolo_yaml

    spec_file = find_yolo_yaml(root)
    if spec_file is None:
        return "rgb"
    try:
        spec = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return "rgb"  # the YOLO reader reports the broken file with its line
    return "xray" if isinstance(spec, dict) and str(spec.get("modality", "")).startswith("xray") else "rgb"


def input_tensor(path: Path, modality: str = "rgb") -> torch.Tensor:
    """A file as the detector's input: float [3, H, W] in [0, 1], at full resolution.

    X-ray pairs keep their 16-bit precision up to here (log attenuation, never 8-bit).
    """
    if modality == "xray":
        from ewaste_vision.data.xray import load_xray_tensor

        return load_xray_tensor(path)
    return v2.functional.pil_to_tensor(load_rgb(path)).float() / 255.0


def resized_xray_tensor(path: Path, image_size: int) -> torch.Tensor:
    """An X-ray pair as float [3, S, S] log attenuation in [0, 1]."""
    from ewaste_vision.data.xray import load_xray_tensor

    return load_xray_tensor(path, size=(image_size, image_size))


def loader_for(modality: str) -> Callable[[Path, int], torch.Tensor]:
    """The cached-image loader of a modality."""
    return resized_xray_tensor if modality == "xray" else resized_rgb_tensor


def board_augmentation(image_size: int, colour: bool = True) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Flips both ways and quarter turns (a board has no up), zoomed crops (scale), colour.

    Boxes follow every geometric change; boxes cropped to almost nothing are dropped. X-ray input
    gets no colour change: its values are physical attenuations, not a camera's colours.
    """
    quarter_turns = v2.RandomChoice(
        [v2.RandomRotation(degrees=(angle, angle)) for angle in (0, 90, 180, 270)]
    )
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            quarter_turns,
            v2.RandomApply([v2.RandomResizedCrop(image_size, scale=(0.4, 1.0), antialias=True)], p=0.5),
            *([v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25)] if colour else []),
            v2.SanitizeBoundingBoxes(min_size=2.0),
        ]
    )


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """(image float [3, S, S] in [0, 1], target) pairs for the records given."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        image_size: int,
        augment: bool = False,
        modality: str = "rgb",
    ) -> None:
        self.records = list(records)
        self.image_size = image_size
        self.augmentation = board_augmentation(image_size, colour=modality == "rgb") if augment else None
        self.load = loader_for(modality)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.records)

    def pixels(self, index: int) -> torch.Tensor:
        """The cached resized image [3, S, S] (uint8 for photos)."""
        if index not in self._cache:
            self._cache[index] = self.load(self.records[index].path, self.image_size)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        pixels = self.pixels(index)
        target = boxes_to_pixels(self.records[index].boxes, self.image_size, self.image_size)
        if self.augmentation is not None:
            size = (self.image_size, self.image_size)
            sample = self.augmentation(
                {
                    "image": tv_tensors.Image(pixels),
                    "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=size),
                    "labels": target["labels"],
                }
            )
            pixels = sample["image"].as_subclass(torch.Tensor)
            target = {"boxes": sample["boxes"].as_subclass(torch.Tensor).float(), "labels": sample["labels"]}
        image = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        return image, target


def typical_side(dataset: DetectionDataset) -> int:
    """Median long side of the dataset's source images (read from file headers; X-ray arrays
    count as their own size), the scale tiled inference keeps."""
    import statistics

    from PIL import Image

    sides = []
    for record in dataset.records:
        try:
            with Image.open(record.path) as opened:
                sides.append(max(opened.size))
        except (OSError, ValueError):
            continue  # unreadable files were reported while reading the dataset
    return int(statistics.median(sides)) if sides else dataset.image_size


def collate_detection(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images and targets as lists: boxes per image differ in number."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
