"""A second stage that re-scores detections: a classifier looks at each detected box, cropped from
the image at its own resolution, and gives the probability of each class (and of background).

Why: the detector's class scores confuse look-alike parts. On pcb-components most of its `ic`
false alarms sit on connectors, diodes, inductors and transistors, while a classifier that sees
the box alone, enlarged to `crop_size`, tells them apart (BENCHMARKS.md, "A second look at each
box"). How its answer becomes a confidence is `detect.box_scores`, shared with the ONNX detector.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align

from ewaste_vision.detect.box_scores import BoxClassifierSettings, rescore
from ewaste_vision.detect.metrics import DetectionPrediction, count_matches
from ewaste_vision.detect.tiling import as_arrays, as_tensors
from ewaste_vision.hardware import autocast
from ewaste_vision.models.classifier import ImageClassifier
from ewaste_vision.models.normalise import Normalise
from ewaste_vision.models.registry import create_backbone

STATE_PREFIX = "box_classifier."
"""Where the box classifier's weights live in a detect run's `model.pt`, beside the detector's."""

GAMMA_GRID = tuple(round(0.3 + 0.05 * step, 2) for step in range(25))
"""Exponents tried when fitting gamma (0.3 to 1.5)."""


def box_crops(image: torch.Tensor, boxes: torch.Tensor, crop_size: int, padding: float) -> torch.Tensor:
    """Crops [N, 3, crop_size, crop_size] of float `image` [3, H, W] around pixel `boxes` [N, 4],
    each widened by `padding` of its size (at least 2 px) on every side, bilinear (RoIAlign).

    Written with tensor operations only, so that the exported graph keeps N free."""
    sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)  # [N, 2] width, height
    margin = (sizes * padding).clamp(min=2.0)
    widened = torch.cat([boxes[:, :2] - margin, boxes[:, 2:] + margin], dim=1)
    rois = torch.cat([torch.zeros_like(widened[:, :1]), widened], dim=1).float()  # [N, 5]
    return roi_align(image[None].float(), rois, crop_size, sampling_ratio=2, aligned=True)


def build_box_network(
    backbone: str, num_classes: int, pretrained: bool = True, weights: str | None = None
) -> ImageClassifier:
    """The classifier network: the backbone with a head over the classes and background (last)."""
    network, _ = create_backbone(backbone, pretrained=pretrained, weights=weights)
    return ImageClassifier(network, num_classes + 1)


class BoxProbabilities(nn.Module):
    """Image [1, 3, H, W] in [0, 1] and pixel boxes [N, 4] -> class probabilities [N, C + 1]
    (background last): crop, normalise, classify. The ONNX export traces this module."""

    def __init__(
        self,
        network: ImageClassifier,
        settings: BoxClassifierSettings,
        mean: tuple[float, ...] | list[float],
        std: tuple[float, ...] | list[float],
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.settings = settings
        self.normalise = Normalise(mean, std)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        crops = box_crops(image[0], boxes, self.settings.crop_size, self.settings.padding)
        inputs = self.normalise(crops).contiguous(memory_format=torch.channels_last)
        return self.network(inputs).float().softmax(dim=-1)


class BoxClassifier:
    """A trained box classifier (`BoxProbabilities`, which holds its settings) run in batches;
    `rescore` applies it to one image's boxes."""

    def __init__(self, module: BoxProbabilities, bf16: bool = False, batch_size: int = 64) -> None:
        self.module = module.eval().to(memory_format=torch.channels_last)
        self.bf16 = bf16
        self.batch_size = batch_size
        self.device = "cpu"

    def to(self, device: str) -> BoxClassifier:
        """This classifier with its network on `device` (crops are cut there; probabilities come
        back on the CPU)."""
        self.module.to(device)
        self.device = device
        return self

    @property
    def network(self) -> ImageClassifier:
        return self.module.network

    @property
    def settings(self) -> BoxClassifierSettings:
        return self.module.settings

    @settings.setter
    def settings(self, settings: BoxClassifierSettings) -> None:
        self.module.settings = settings

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, C + 1] (background last) of `boxes` [N, 4] in `image` [3, H, W]."""
        batch, boxes = image[None].to(self.device), boxes.to(self.device)
        parts = [torch.zeros(0, self.network.head.out_features)]
        for start in range(0, len(boxes), self.batch_size):
            with autocast(self.bf16, self.device):
                parts.append(self.module(batch, boxes[start : start + self.batch_size]).float().cpu())
        return torch.cat(parts)

    def rescore(self, image: torch.Tensor, found: DetectionPrediction) -> DetectionPrediction:
        """One image's detections with confidences (score x probability) ** their class's exponent."""
        classify = lambda boxes: self.probabilities(image, torch.from_numpy(boxes)).numpy()  # noqa: E731
        return as_tensors(rescore(as_arrays(found), classify, self.settings), found["scores"].device)


MIN_CLASS_BOXES = 20
"""Validation boxes a class needs for an exponent of its own; rarer classes share the overall one,
since a cut tuned on a handful of boxes fits their noise."""


def fit_gammas(
    products: list[DetectionPrediction], truths: list[dict[str, torch.Tensor]], num_classes: int
) -> tuple[float, tuple[float, ...], float]:
    """Exponents of `GAMMA_GRID` that put the F1-best cut at 0.5 on `products` (validation boxes
    scored by a `BoxClassifier` with gamma 1: score x probability): the overall one by micro-F1,
    and one per class by the class's F1 where it has `MIN_CLASS_BOXES` true boxes (else the
    overall one). Ties keep the exponent nearest 1, per class nearest the overall one. Returns
    them with the micro-F1 that the per-class exponents give."""
    counts = {}  # gamma -> [3, C] TP, FP, FN at the cut that gamma moves to 0.5
    for gamma in GAMMA_GRID:
        cut = 0.5 ** (1.0 / gamma)  # product > cut  <=>  product ** gamma > 0.5
        counts[gamma] = torch.zeros(3, num_classes, dtype=torch.long)
        for found, truth in zip(products, truths, strict=True):
            counts[gamma] += count_matches(found, truth, num_classes, score_threshold=cut)
    overall = max(sorted(GAMMA_GRID, key=lambda g: abs(g - 1.0)), key=lambda g: _f1(counts[g].sum(dim=1)))
    nearest_first = sorted(GAMMA_GRID, key=lambda g: abs(g - overall))
    class_gammas = []
    for label in range(num_classes):
        true_boxes = int(counts[overall][0, label] + counts[overall][2, label])
        if true_boxes < MIN_CLASS_BOXES:
            class_gammas.append(overall)
            continue
        class_gammas.append(max(nearest_first, key=lambda g: _f1(counts[g][:, label])))
    chosen = torch.stack([counts[g][:, label] for label, g in enumerate(class_gammas)], dim=1)
    return overall, tuple(class_gammas), _f1(chosen.sum(dim=1))


def _f1(counts: torch.Tensor) -> float:
    """F1 from TP, FP, FN counts [3]."""
    tp, fp, fn = (int(value) for value in counts)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def load_box_classifier(
    state: dict[str, torch.Tensor], meta: Any, bf16: bool = False
) -> BoxClassifier | None:
    """The box classifier stored in a detect run's weights, or None when the run has none.

    Raises:
        ValueError: if its settings do not give an exponent per class of the run.
    """
    settings = meta.extra.get("box_classifier")
    if not settings:
        return None
    box_settings = BoxClassifierSettings.from_dict(settings, len(meta.class_names))
    network = build_box_network(meta.backbone, len(meta.class_names), pretrained=False)
    network.load_state_dict(
        {key[len(STATE_PREFIX) :]: value for key, value in state.items() if key.startswith(STATE_PREFIX)}
    )
    module = BoxProbabilities(network, box_settings, meta.mean, meta.std)
    return BoxClassifier(module, bf16)


def detector_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The detector's own weights from a run's state (without the box classifier's)."""
    return {key: value for key, value in state.items() if not key.startswith(STATE_PREFIX)}
