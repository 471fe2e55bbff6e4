"""A backbone with global pooling, dropout and a linear head: the network of every classifier
(`build_classifier` also makes the iCAM head of `models.icam`)."""

from __future__ import annotations

import torch
from torch import nn

from ewaste_vision.model_meta import HeadSettings
from ewaste_vision.models.registry import create_backbone, get_backbone_spec


class ImageClassifier(nn.Module):
    """Backbone -> global average pooling -> dropout -> linear.

    The split into `forward_features` and `forward_head` lets the linear strategy cache pooled
    features and lets Grad-CAM reuse one backbone pass for every class.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features: int = int(backbone.num_features)  # type: ignore[arg-type]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)  # [B, C, h, w]

    def pool_features(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.pool(feature_map).flatten(1)  # [B, C]

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(pooled))  # [B, num_classes]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.pool_features(self.forward_features(images)))


def build_classifier(
    backbone: str,
    num_classes: int,
    dropout: float = 0.2,
    pretrained: bool = True,
    weights: str | None = None,
    head: HeadSettings | None = None,
) -> tuple[ImageClassifier, str]:
    """Make a classifier on a registered backbone; returns it and its weights' source.

    Args:
        backbone: a registered backbone name.
        num_classes: outputs of the linear layer.
        dropout: dropout before the linear layer.
        pretrained: load ImageNet weights when they can be had.
        weights: a local weights file for the backbone.
        head: the head (`linear` when None); `icam` makes an `IcamClassifier`.
    """
    network, source = create_backbone(backbone, pretrained=pretrained, weights=weights)
    if head is None or head.kind == "linear":
        return ImageClassifier(network, num_classes, dropout), source
    from ewaste_vision.models.icam import IcamClassifier

    model = IcamClassifier(network, num_classes, dropout, head.iterations, head.aggregate, head.crop_fraction)
    return model, source


def set_trainable(
    model: ImageClassifier, backbone_name: str, strategy: str, freeze_early: bool = False
) -> None:
    """Freeze the backbone as `strategy` says (see `set_backbone_trainable`); the head (and any
    other layer outside the backbone, such as iCAM's aggregator) always trains."""
    set_backbone_trainable(model.backbone, backbone_name, strategy, freeze_early)
    for name, parameter in model.named_parameters():
        if not name.startswith("backbone."):
            parameter.requires_grad = True


def set_backbone_trainable(
    backbone: nn.Module, backbone_name: str, strategy: str, freeze_early: bool = False
) -> None:
    """Freeze a registry backbone as `strategy` says: `linear` all of it, `finetune` all but its
    last stages, `full` none, or only its stride-2 and stride-4 stages with `freeze_early`.

    Pretrained backbones use `freeze_early` (detectors as torchvision's and Detectron2's do):
    those stages' generic ImageNet filters transfer as they are, and their gradients at full
    resolution are a large share of a CPU's backward pass (`bench/bench_detect_training.py`).
    """
    spec = get_backbone_spec(backbone_name)
    for name, parameter in backbone.named_parameters():
        if strategy == "full":
            parameter.requires_grad = not (freeze_early and _under(name, spec.early_stages))
        elif strategy == "finetune":
            parameter.requires_grad = _under(name, spec.trainable_tail)
        else:
            parameter.requires_grad = False


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether parameter `name` belongs to one of the modules named by `prefixes`."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def frozen_batchnorm_modules(model: ImageClassifier) -> list[nn.Module]:
    """Batch-norm layers whose parameters are frozen; they must stay in eval mode while training,
    or their running statistics drift away from the pretrained ones."""
    return [
        module
        for module in model.backbone.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not any(p.requires_grad for p in module.parameters(recurse=False))
    ]
