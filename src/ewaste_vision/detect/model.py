"""Detectors: torchvision's FCOS over any registered backbone, in sizes n, s and m.

FCOS is anchor-free (one point per feature-map cell, no anchor boxes to tune), so it needs no
dataset-specific anchor search, and torchvision ships it tested. The backbone comes from the
backbone registry, so the offline EfficientNet-Lite weights serve detection too. The sizes differ
in the width of the feature pyramid and the depth of the shared head, as YOLOv5's n/s/m models
that 001 compares differ in width and depth.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ewaste_vision.errors import UserError
from ewaste_vision.models.registry import create_backbone, get_backbone_spec


@dataclass(frozen=True)
class DetectorSize:
    """Width and depth of the parts a detector adds to its backbone."""

    name: str
    pyramid_channels: int
    """Channels of every feature-pyramid level (a multiple of 16: the head uses GroupNorm(16))."""
    head_convs: int
    """3x3 convolutions in each of the head's two towers."""
    summary: str


DETECTOR_SIZES: dict[str, DetectorSize] = {
    size.name: size
    for size in (
        DetectorSize("n", 64, 2, "64-channel pyramid, 2-conv head: fastest on a CPU"),
        DetectorSize("s", 96, 3, "96-channel pyramid, 3-conv head"),
        DetectorSize("m", 128, 4, "128-channel pyramid, 4-conv head (FCOS's own depth)"),
    )
}

SCORE_FLOOR = 0.05
"""Detections kept by the model: low, so mAP sees the whole precision-recall curve; the 0.5
confidence of 001's true-positive rule is applied when counting."""


def detector_size(name: str) -> DetectorSize:
    """The size called `name`, or a `UserError` listing the choices."""
    if name not in DETECTOR_SIZES:
        raise UserError(f"unknown detector size {name!r}; choose one of: {', '.join(DETECTOR_SIZES)}")
    return DETECTOR_SIZES[name]


class PyramidBackbone(nn.Module):
    """A registry backbone's last three stages, fed through a feature pyramid with two extra
    coarser levels (P6, P7), as FCOS expects five levels."""

    def __init__(self, body: Any, channels: int) -> None:
        super().__init__()
        if not hasattr(body, "feature_pyramid"):
            raise UserError(f"backbone {type(body).__name__} has no feature pyramid; it cannot detect")
        self.body: Any = body
        self.fpn = FeaturePyramidNetwork(
            list(body.pyramid_channels), channels, extra_blocks=LastLevelP6P7(channels, channels)
        )
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body.feature_pyramid(images)  # finest first: strides s, 2s, 4s
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_detector(
    backbone: str,
    num_classes: int,
    size: str = "n",
    image_size: int = 640,
    pretrained: bool = True,
    weights: Path | str | None = None,
) -> tuple[FCOS, str]:
    """An FCOS detector for `num_classes` classes over registry backbone `backbone`.

    Images given to it are tensors [3, H, W] in [0, 1]; it normalises with the backbone's own mean
    and std and scales so the short side is `image_size` (long side at most `image_size`).

    Returns:
        The detector and where its backbone's weights came from.
    """
    spec = get_backbone_spec(backbone)
    body: Any
    body, source = create_backbone(backbone, pretrained, weights)
    chosen = detector_size(size)
    pyramid = PyramidBackbone(body, chosen.pyramid_channels)
    finest = int(body.pyramid_strides[0])
    # One anchor point per cell whose size equals the level's stride: FCOS normalises box
    # regression by it.
    anchors = AnchorGenerator(tuple((finest * 2**level,) for level in range(5)), ((1.0,),) * 5)
    head = FCOSHead(chosen.pyramid_channels, 1, num_classes, num_convs=chosen.head_convs)
    detector = FCOS(
        pyramid,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=list(spec.mean),
        image_std=list(spec.std),
        anchor_generator=anchors,
        head=head,
        score_thresh=SCORE_FLOOR,
        detections_per_img=500,
    )
    return detector, source


def at_input_size(detector: FCOS, size: int) -> FCOS:
    """The same detector, sharing every weight, that scales its input to `size` instead.

    A second module rather than a changed transform, so detectors at two sizes can run side by
    side (the web app serves several requests at once).
    """
    transform = detector.transform
    head: Any = detector.head
    return FCOS(
        detector.backbone,
        head.classification_head.num_classes,
        min_size=size,
        max_size=size,
        image_mean=transform.image_mean,
        image_std=transform.image_std,
        anchor_generator=detector.anchor_generator,
        head=head,
        score_thresh=detector.score_thresh,
        nms_thresh=detector.nms_thresh,
        detections_per_img=detector.detections_per_img,
        topk_candidates=detector.topk_candidates,
    ).eval()


def detector_settings(meta_extra: dict[str, Any]) -> str:
    """The size a saved detector was built with (older runs: `n`)."""
    return str(meta_extra.get("detector_size", "n"))


def load_detector(state: dict[str, torch.Tensor], meta: Any, source: Path | str) -> FCOS:
    """Rebuild the detector a run's metadata describes and load its weights; a `RunError` when
    they do not fit (a damaged or foreign file)."""
    from ewaste_vision.errors import RunError

    detector, _ = build_detector(
        meta.backbone, len(meta.class_names), detector_settings(meta.extra), meta.image_size, pretrained=False
    )
    try:
        detector.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(
            f"{source}: weights do not fit a {meta.backbone} detector; the file is damaged"
        ) from exc
    return detector
