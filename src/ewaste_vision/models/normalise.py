"""Per-channel input normalisation as a module, for networks that take images in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalise(nn.Module):
    """Images [B, C, H, W] -> (images - mean) / std per channel. Mean and std are buffers, so they
    move with the module's device and are baked into traced and exported graphs."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", _channel_vector(mean))
        self.register_buffer("std", _channel_vector(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def _channel_vector(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1)
