"""The networks as exported: inputs in [0, 1], normalisation inside, outputs ready to use.

Label tasks end in their task's activation (softmax or sigmoid), so the ONNX output is
probabilities. The detector is exported up to its per-level head outputs: torchvision's FCOS
postprocess (per-level top-k, box decoding, class-wise NMS) has data-dependent shapes that trace
poorly and would pin one image size, so it runs beside the session in numpy (`fcos_numpy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FCOS

from ewaste_vision.models.classifier import ImageClassifier
from ewaste_vision.models.normalise import Normalise
from ewaste_vision.tasks import LabelTask


class ProbabilityGraph(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> class probabilities [B, C]."""

    def __init__(
        self, model: ImageClassifier, task: LabelTask, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.normalise = Normalise(mean, std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.normalise(images))  # [B, C]
        return self.task.probabilities(logits)


class FcosHeadGraph(nn.Module):
    """Padded images [B, 3, H, W] in [0, 1] -> per pyramid level l, `scores_l` [B, C, h, w] and
    `box_regression_l` [B, 4, h, w].

    Scores are FCOS's sqrt(sigmoid(class) * sigmoid(centerness)); box regression is the distance
    from a cell's point to the box sides, in units of the level's anchor size (FCOS's
    `BoxLinearCoder(normalize_by_size=True)` encoding). H and W must be multiples of
    `size_divisible`, and padding must hold the mean colour so it normalises to 0 as torchvision's
    zero padding after normalisation does.
    """

    def __init__(self, detector: FCOS) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head
        self.normalise = Normalise(detector.transform.image_mean, detector.transform.image_std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.backbone(self.normalise(images)).values())  # 5 levels, finest first
        classification, regression = self.head.classification_head, self.head.regression_head
        outputs: list[torch.Tensor] = []
        for level in features:
            logits = classification.cls_logits(classification.conv(level))  # [B, C, h, w]
            tower = regression.conv(level)
            boxes = torch.relu(regression.bbox_reg(tower))  # [B, 4, h, w], as FCOSRegressionHead
            centerness = regression.bbox_ctrness(tower)  # [B, 1, h, w]
            outputs += [torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(centerness)), boxes]
        return tuple(outputs)


def level_output_names(levels: int) -> list[str]:
    """ONNX output names of `FcosHeadGraph`, in its output order."""
    return [f"{kind}_{level}" for level in range(levels) for kind in ("scores", "box_regression")]
