"""The two-stream RGB-X network of 002 (Fig. 1, Sec. III-B.2) over two trained classifiers.

Each stream is a classifier of the registry (`ImageClassifier`, or iCAM's `IcamClassifier`): its
extractor (the backbone) and aggregator (global pooling, or iCAM's feature aggregator) give a
feature vector, its classification layer (dropout + linear) the stream's logits g. As in 002, the
softmax is dropped and the two streams' logits are concatenated and fed to a fusion layer (linear,
2C -> C) that ends in the softmax. The fusion layer starts as the mean of the two streams' logits,
so stage 2 starts from the two streams' ensemble rather than from noise.

Fusion modes (002, Table VI): `fast` trains only the two classification layers and the fusion
layer; `slow` also trains the higher layers of each extractor (the backbone registry's
`trainable_tail`, what `--strategy finetune` trains). Extractor layers below, and the aggregators,
stay frozen in both.
"""

from __future__ import annotations

import torch
from torch import nn

from ewaste_vision.models.classifier import ImageClassifier, frozen_batchnorm_modules, set_backbone_trainable

FUSION_MODES = ("fast", "slow")


def stream_features(stream: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, S, S] (normalised) -> the stream's features before its classifier [B, F].

    iCAM streams give their aggregated features (all iterations); plain ones the pooled map.
    """
    aggregated = getattr(stream, "aggregated_features", None)
    if aggregated is not None:
        return aggregated(images)
    return stream.pool_features(stream.forward_features(images))


class TwoStreamFusion(nn.Module):
    """(RGB images, X-ray images) -> fused class logits [B, C]."""

    def __init__(self, rgb: ImageClassifier, xray: ImageClassifier, num_classes: int) -> None:
        super().__init__()
        self.rgb = rgb
        self.xray = xray
        self.fusion = nn.Linear(2 * num_classes, num_classes)
        with torch.no_grad():
            eye = torch.eye(num_classes)
            self.fusion.weight.copy_(torch.cat([eye, eye], dim=1) / 2)  # [C, 2C]: the mean
            self.fusion.bias.zero_()

    def stream_logits(
        self, rgb_features: torch.Tensor, xray_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stream's classification-layer output g [B, C] from its features [B, F]."""
        return self.rgb.forward_head(rgb_features), self.xray.forward_head(xray_features)

    def fuse(self, rgb_features: torch.Tensor, xray_features: torch.Tensor) -> torch.Tensor:
        """Fused logits [B, C] from the two streams' features (cached ones, in fast fusion)."""
        g_rgb, g_xray = self.stream_logits(rgb_features, xray_features)
        return self.fusion(torch.cat([g_rgb, g_xray], dim=1))  # [B, 2C] -> [B, C]

    def forward(self, rgb_images: torch.Tensor, xray_images: torch.Tensor) -> torch.Tensor:
        return self.fuse(stream_features(self.rgb, rgb_images), stream_features(self.xray, xray_images))


class FeatureFusion(nn.Module):
    """The layers fast fusion trains, over cached stream features: (F_rgb, F_xray) -> logits.

    Only the two classification layers (with their dropouts) and the fusion layer are submodules,
    so the checkpoints of fast fusion hold these alone, not two frozen backbones every epoch.
    """

    def __init__(self, model: TwoStreamFusion) -> None:
        super().__init__()
        self.rgb_head, self.xray_head = model.rgb.head, model.xray.head
        self.rgb_dropout, self.xray_dropout = model.rgb.dropout, model.xray.dropout
        self.fusion = model.fusion
        self._fuse = model.fuse  # the same layers, called as the whole network calls them

    def forward(self, rgb_features: torch.Tensor, xray_features: torch.Tensor) -> torch.Tensor:
        return self._fuse(rgb_features, xray_features)


def set_fusion_trainable(model: TwoStreamFusion, mode: str, backbones: tuple[str, str]) -> None:
    """Freeze `model` for fusion `mode` (`fast` or `slow`, see the module docstring).

    Args:
        model: the two-stream network.
        mode: `fast` or `slow`.
        backbones: the registry names of the RGB and the X-ray stream's backbones.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"unknown fusion mode {mode!r}; choose one of {FUSION_MODES}")
    model.requires_grad_(False)
    for stream, backbone in zip((model.rgb, model.xray), backbones, strict=True):
        stream.head.requires_grad_(True)
        if mode == "slow":
            set_backbone_trainable(stream.backbone, backbone, "finetune")
    model.fusion.requires_grad_(True)


def frozen_batchnorm(model: TwoStreamFusion) -> list[nn.Module]:
    """Both streams' batch-norm layers with frozen parameters (kept in eval mode while training)."""
    return frozen_batchnorm_modules(model.rgb) + frozen_batchnorm_modules(model.xray)
