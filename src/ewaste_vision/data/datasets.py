"""Torch datasets over image files, with decoded images cached in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ewaste_vision.data.images import load_rgb, shrink_for_cache


class ImageFileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(image tensor, target) pairs from files.

    Each file is decoded once and kept, shrunk to what the transform needs (`shrink_for_cache`:
    pass `crops=True` when the transform crops); this pays off from the second epoch on and when
    several views of one image are wanted.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: torch.Tensor,
        transform: Callable[[Image.Image], torch.Tensor],
        image_size: int,
        cache: dict[Path, Image.Image] | None = None,
        crops: bool = False,
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        self.paths = list(paths)
        self.targets = targets
        self.transform = transform
        self.image_size = image_size
        self.crops = crops
        self.cache: dict[Path, Image.Image] = {} if cache is None else cache

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        path = self.paths[index]
        if path not in self.cache:
            self.cache[path] = shrink_for_cache(load_rgb(path), self.image_size, crops=self.crops)
        return self.cache[path]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.image(index)), self.targets[index]
