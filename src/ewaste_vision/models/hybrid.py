"""003's hybrid network: a convolutional stem, three inception modules with residual connections.

003 ("Transfer learning approach towards a smarter recycling") trains this network from scratch on
8 smartphone models and transfers it to 4 screwdriver models. Its parts, as the paper lists them:

- a stem of three convolutions, 7x7 (stride 2), 1x1 and 3x3, each followed by normalisation and a
  ReLU (batch norm here; 003's MATLAB model names a "channel normalization" layer), with a 3x3
  max pool after the first, as in GoogLeNet;
- three inception modules with dimension reductions (1x1; 1x1 then 3x3; 1x1 then 5x5; a 3x3 max
  pool then 1x1), their branches concatenated, the filters growing with depth; the max-pool
  branch (and every other branch) down-samples, so each module halves the resolution;
- a residual connection around every module (a strided 1x1 projection, since the width changes);
- global average pooling, dropout 0.4 and a linear layer: the toolkit's `ImageClassifier` head
  (the transfer study passes `dropout=0.4`).

Layers are counted as MATLAB's layer graph (003's tool) lists them: every convolution, batch
norm, ReLU, pooling, concatenation and addition, plus the image input and the five head layers
(average pooling, dropout, fully connected, softmax, classification output). That makes 67, as in
003: 1 input + 10 stem + 3 x 17 per module + 5 head (`matlab_layer_count`).

Widths are modest (0.7 M parameters, 0.14 GFLOPs at 128 px) so the network trains from scratch
on a laptop CPU in minutes. The three modules' outputs (strides 8, 16, 32) also feed a detector's
feature pyramid.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_LAYERS = 5
"""Global average pooling, dropout, fully connected, softmax, classification output."""


class DepthConcat(nn.Module):
    """Concatenates branch outputs along channels; a module so that the layer count sees it."""

    def forward(self, branches: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(branches, dim=1)


class Addition(nn.Module):
    """Adds a residual connection to a module's output; a module so that the layer count sees it."""

    def forward(self, main: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return main + shortcut


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class InceptionResidualBlock(nn.Module):
    """An inception module with dimension reductions that halves the resolution, plus a projected
    residual connection around it: relu(bn(concat(branches)) + bn(proj(x)))."""

    def __init__(
        self,
        in_channels: int,
        branch1: int,
        reduce3: int,
        branch3: int,
        reduce5: int,
        branch5: int,
        pool: int,
    ) -> None:
        super().__init__()
        self.out_channels = branch1 + branch3 + branch5 + pool
        self.branch1 = nn.Conv2d(in_channels, branch1, 1, stride=2, bias=False)
        self.branch3 = nn.Sequential(
            *_conv_bn_relu(in_channels, reduce3, 1),
            nn.Conv2d(reduce3, branch3, 3, stride=2, padding=1, bias=False),
        )
        self.branch5 = nn.Sequential(
            *_conv_bn_relu(in_channels, reduce5, 1),
            nn.Conv2d(reduce5, branch5, 5, stride=2, padding=2, bias=False),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(in_channels, pool, 1, bias=False)
        )
        self.concat = DepthConcat()
        self.norm = nn.BatchNorm2d(self.out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, self.out_channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(self.out_channels),
        )
        self.add = Addition()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        merged = self.norm(self.concat(branches))  # [B, out, H/2, W/2]
        return self.relu(self.add(merged, self.shortcut(x)))


class HybridResInception(nn.Module):
    """003's hybrid of inception modules and residual connections, as a registry backbone.

    Maps [B, 3, H, W] images to [B, 512, H/32, W/32]; `feature_pyramid` gives the three modules'
    maps at strides 8, 16 and 32.
    """

    def __init__(self) -> None:
        super().__init__()
        # GoogLeNet's order: pooling right after the 7x7 convolution puts the 1x1 and 3x3 at a
        # quarter of the resolution, which more than halves the network's cost.
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, 32, 7, stride=2),  # reduce the image at once (003)
            nn.MaxPool2d(3, stride=2, padding=1),  # stride 4
            *_conv_bn_relu(32, 32, 1),
            *_conv_bn_relu(32, 64, 3),
        )
        blocks = [
            InceptionResidualBlock(64, 32, 32, 64, 16, 16, 16),  # 128 channels, stride 8
            InceptionResidualBlock(128, 64, 64, 128, 16, 32, 32),  # 256, stride 16
            InceptionResidualBlock(256, 128, 96, 256, 32, 64, 64),  # 512, stride 32
        ]
        self.widths = [block.out_channels for block in blocks]
        self.blocks = nn.Sequential(*blocks)
        self.num_features: int = self.widths[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(images))  # [B, 512, H/32, W/32]

    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of the maps `feature_pyramid` returns (strides 8, 16, 32)."""
        return list(self.widths)

    @property
    def pyramid_strides(self) -> list[int]:
        return [8, 16, 32]

    def feature_pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The three inception modules' maps, finest first."""
        maps, x = [], self.stem(images)
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps


COUNTED_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, DepthConcat, Addition)


def matlab_layer_count(backbone: nn.Module) -> int:
    """Layers of a classifier on `backbone`, counted as MATLAB's layer graph lists them (003's
    count): the image input, every convolution, normalisation, ReLU, pooling, concatenation and
    addition of the backbone, and the five head layers."""
    return 1 + sum(isinstance(m, COUNTED_LAYERS) for m in backbone.modules()) + HEAD_LAYERS
