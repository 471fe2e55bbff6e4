"""Torch datasets of (RGB, X-ray, label) samples: cached stream features (fast fusion) or images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.fusion.pairing import Pair, orient, plan_pairs

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(RGB input, X-ray input, label): features [F] or images [3, S, S], and a scalar class index."""


class RepairingDataset(Dataset[Sample]):
    """Pairs drawn by `plan_pairs`; a `train` dataset draws new partners on `set_epoch`."""

    def __init__(self, rgb: Sequence[ImageRecord], xray: Sequence[ImageRecord], seed: int, use: str) -> None:
        self.rgb_records, self.xray_records = list(rgb), list(xray)
        self.seed, self.use = seed, use
        self.pairs: list[Pair] = plan_pairs(self.rgb_records, self.xray_records, seed, use)

    def set_epoch(self, epoch: int) -> None:
        """Draw the partners of `epoch` (the same number of pairs every epoch)."""
        if self.use == "train":
            self.pairs = plan_pairs(self.rgb_records, self.xray_records, self.seed, self.use, epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def labels(self) -> torch.Tensor:
        """Class index of every pair [N]."""
        return torch.tensor([p.label for p in self.pairs], dtype=torch.long)


class FeaturePairs(RepairingDataset):
    """Pairs of cached features: RGB [N_rgb, F_rgb]; X-ray [ORIENTATIONS, N_xray, F_xray]."""

    def __init__(
        self,
        rgb: Sequence[ImageRecord],
        xray: Sequence[ImageRecord],
        rgb_features: torch.Tensor,
        xray_features: torch.Tensor,
        seed: int,
        use: str,
    ) -> None:
        super().__init__(rgb, xray, seed, use)
        self.rgb_features, self.xray_features = rgb_features, xray_features

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        return (
            self.rgb_features[pair.rgb],
            self.xray_features[pair.orientation, pair.xray],
            torch.tensor(pair.label),
        )


class ImagePairs(RepairingDataset):
    """Pairs of images, each side through its stream's transform; the X-ray re-oriented."""

    def __init__(
        self,
        rgb: Sequence[ImageRecord],
        xray: Sequence[ImageRecord],
        rgb_images: ImageFileDataset,
        xray_images: ImageFileDataset,
        seed: int,
        use: str,
    ) -> None:
        super().__init__(rgb, xray, seed, use)
        self.rgb_images, self.xray_images = rgb_images, xray_images

    def __getitem__(self, index: int) -> Sample:
        pair = self.pairs[index]
        rgb_image, _ = self.rgb_images[pair.rgb]
        xray_image, _ = self.xray_images[pair.xray]
        return rgb_image, orient(xray_image, pair.orientation), torch.tensor(pair.label)
