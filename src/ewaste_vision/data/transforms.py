"""Image transforms at the one boundary where PIL images become normalised tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic transform: the whole image resized to S x S, scaled to [0, 1], normalised.

    No centre crop: it cuts off what sits near the edges (a phone's camera, a part at the rim of a
    board). On ewaste-devices the whole image gave 1-2 points more validation accuracy than the
    ImageNet-style crop. Output [3, S, S].
    """
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Random crop of 50-100% of the image, mirror, mild colour changes. Output [3, S, S]."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            # No hue jitter: on tensors it costs ten times the rest of the pipeline.
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class RandomQuarterTurn(torch.nn.Module):
    """Rotate by 0, 90, 180 or 270 degrees at random: boards have no "up"."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        turns = int(torch.randint(0, 4, ()).item())
        return torch.rot90(image, turns, dims=(-2, -1)) if turns else image


def board_train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Whole image (crops would cut away the components that make the labels), mirrored either way,
    turned by a multiple of 90 degrees, mild colour changes. Output [3, S, S]."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            RandomQuarterTurn(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
