"""How well heatmaps point at the parts that carry a class, scored against YOLO boxes.

Three scores, each next to a baseline that knows nothing about the image (a Gaussian centred on
it), because board photos are framed on the board and a map that simply likes the centre already
scores well:
    pointing game      is the map's peak inside a box of the class (Zhang et al., 2016; no
                       tolerance margin unless asked)
    energy in box      share of the map's mass inside the union of the class's boxes
    ROAD               pytorch-grad-cam's `ROADCombined` (Rong et al., 2022; computed by
                       `explain.road`, which gives its scores in less time): the change of the
                       class logit when the least relevant pixels are imputed minus when the most
                       relevant are, halved; higher is better. For the predicted class of each image.

Boxes are in normalised YOLO coordinates of the whole image; the toolkit's transform resizes the
whole image to S x S (no crop), so they map onto a map of any size by scaling alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ewaste_vision.data.records import ObjectBox
from ewaste_vision.explain.gradcam import upsample_and_normalise
from ewaste_vision.explain.methods import class_activation_maps
from ewaste_vision.models.classifier import ImageClassifier

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""pytorch-grad-cam's default thresholds; each costs two sparse linear solves per image."""


def box_mask(boxes: Sequence[ObjectBox], height: int, width: int) -> np.ndarray:
    """Union of `boxes` on an H x W grid: a pixel is inside when its centre is.

    A box too small to hold a pixel centre still marks the pixel under its own centre.

    Returns:
        bool array [H, W].
    """
    mask = np.zeros((height, width), dtype=bool)
    columns = np.arange(width) + 0.5  # pixel centres in pixel units
    rows = np.arange(height) + 0.5
    for box in boxes:
        x0, x1 = (box.cx - box.w / 2) * width, (box.cx + box.w / 2) * width
        y0, y1 = (box.cy - box.h / 2) * height, (box.cy + box.h / 2) * height
        inside_x = (columns >= x0) & (columns <= x1)
        inside_y = (rows >= y0) & (rows <= y1)
        mask |= inside_y[:, None] & inside_x[None, :]
        row = min(max(int(box.cy * height), 0), height - 1)
        column = min(max(int(box.cx * width), 0), width - 1)
        mask[row, column] = True
    return mask


def pointing_game(
    cam: np.ndarray | torch.Tensor, boxes_of_class: Sequence[ObjectBox], tolerance_px: int = 0
) -> bool:
    """True when the map's peak lies inside any box of the class.

    Args:
        cam: one heatmap [H, W]; ties go to the first peak in row-major order.
        boxes_of_class: the ground-truth boxes of the class explained (normalised coordinates).
        tolerance_px: boxes are grown by this many pixels on every side (the original pointing
            game used 15 px at 224 px); 0 is the strict test.

    Returns:
        Whether the peak is a hit; False when there are no boxes.
    """
    values = _as_array(cam)
    height, width = values.shape
    row, column = np.unravel_index(int(np.argmax(values)), values.shape)
    grown = [
        ObjectBox(b.class_id, b.cx, b.cy, b.w + 2 * tolerance_px / width, b.h + 2 * tolerance_px / height)
        for b in boxes_of_class
    ]
    return bool(box_mask(grown, height, width)[row, column]) if grown else False


def energy_in_boxes(cam: np.ndarray | torch.Tensor, boxes: Sequence[ObjectBox]) -> float:
    """Share of the map's total mass inside the union of `boxes` (0 for an all-zero map).

    Args:
        cam: one non-negative heatmap [H, W].
        boxes: ground-truth boxes (normalised coordinates).
    """
    values = _as_array(cam).astype(np.float64)
    total = float(values.sum())
    if total <= 0:
        return 0.0
    return float(values[box_mask(boxes, *values.shape)].sum() / total)


def centre_gaussian(height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """A Gaussian bump centred on the image, peak 1, standard deviation `sigma_fraction` of each side.

    Returns:
        float32 array [H, W].
    """
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be positive, got {sigma_fraction}")
    ys = (np.arange(height) + 0.5 - height / 2) / (sigma_fraction * height)
    xs = (np.arange(width) + 0.5 - width / 2) / (sigma_fraction * width)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).astype(np.float32)


def cam_quality(
    model: ImageClassifier,
    images: torch.Tensor,
    boxes: Sequence[Sequence[ObjectBox]],
    class_names: Sequence[str],
    method: str = "gradcam",
    backbone: str = "",
    target_layer: str | None = None,
    road: bool = True,
    road_percentiles: Sequence[int] = ROAD_PERCENTILES,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score heatmaps against boxes, per class, next to the centre-Gaussian baseline.

    Pointing game and energy are taken for every (image, class present in its boxes) pair, on the
    map of that class upsampled to the input size and scaled to [0, 1] per map (as displayed).
    ROAD is taken for the predicted class (arg-max logit) of every image.

    Args:
        model: the classifier.
        images: normalised images [N, 3, S, S].
        boxes: per image, its ground-truth boxes (`ObjectBox.class_id` indexes `class_names`).
        class_names: the model's classes, in index order.
        method: a registered CAM method.
        backbone: the model's registered backbone (names the default target layer).
        target_layer: optional module name inside the model.
        road: also compute ROAD (costly: two sparse solves per percentile and image).
        road_percentiles: ROAD thresholds.
        batch_size: images per CAM pass.

    Returns:
        `{"cam_pointing": {class: {"cam": hit rate, "centre_baseline": hit rate, "n": pairs}},
        "cam_energy_in_box": {class: {"cam": mean share, "centre_baseline": mean share, "n": pairs}},
        "cam_road": {class: {"cam": mean ROAD, "centre_baseline": mean ROAD, "n": images}}}`,
        classes with no pair left out; plus `"cam_method"`.
    """
    if len(boxes) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but boxes for {len(boxes)}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    baseline = _min_max(centre_gaussian(height, width))
    pointing: dict[int, list[tuple[bool, bool]]] = defaultdict(list)
    energy: dict[int, list[tuple[float, float]]] = defaultdict(list)
    road_scores: dict[int, list[tuple[float, float]]] = defaultdict(list)
    num_classes = len(class_names)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        batch_boxes = boxes[start : start + batch_size]
        raw, logits = class_activation_maps(model, batch, None, method, backbone, target_layer)
        maps = upsample_and_normalise(raw, (height, width)).numpy()  # [b, N, H, W]
        for index, image_boxes in enumerate(batch_boxes):
            by_class: dict[int, list[ObjectBox]] = defaultdict(list)
            for box in image_boxes:
                if not 0 <= box.class_id < num_classes:
                    raise ValueError(f"box class {box.class_id} outside the model's {num_classes} classes")
                by_class[box.class_id].append(box)
            for k, class_boxes in by_class.items():
                cam = maps[index, k]
                pointing[k].append((pointing_game(cam, class_boxes), pointing_game(baseline, class_boxes)))
                energy[k].append((energy_in_boxes(cam, class_boxes), energy_in_boxes(baseline, class_boxes)))
        if road:
            predicted = logits.argmax(dim=1)  # [b]
            chosen = maps[np.arange(len(batch)), predicted.numpy()]  # [b, H, W]
            cam_road = _road(model, batch, chosen, predicted, road_percentiles)
            centred = np.repeat(baseline[None], len(batch), axis=0)  # [b, H, W]
            base_road = _road(model, batch, centred, predicted, road_percentiles)
            for k, score, base in zip(predicted.tolist(), cam_road, base_road, strict=True):
                road_scores[k].append((float(score), float(base)))
    result: dict[str, Any] = {
        "cam_method": method,
        "cam_pointing": _per_class(pointing, class_names),
        "cam_energy_in_box": _per_class(energy, class_names),
    }
    if road:
        result["cam_road"] = _per_class(road_scores, class_names)
    return result


def _road(
    model: ImageClassifier,
    images: torch.Tensor,
    maps: np.ndarray,
    classes: torch.Tensor,
    percentiles: Sequence[int],
) -> np.ndarray:
    from ewaste_vision.explain.road import road_combined

    scores = road_combined(model, images, maps.astype(np.float32), classes.tolist(), percentiles)
    return np.asarray(scores, dtype=np.float64)  # [b]


def _per_class(
    pairs: dict[int, list[tuple[Any, Any]]], class_names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    table: dict[str, dict[str, float | int]] = {}
    for k in sorted(pairs):
        values = np.asarray(pairs[k], dtype=np.float64)  # [n, 2]: cam, baseline
        table[class_names[k]] = {
            "cam": round(float(values[:, 0].mean()), 4),
            "centre_baseline": round(float(values[:, 1].mean()), 4),
            "n": len(values),
        }
    return table


def _min_max(values: np.ndarray) -> np.ndarray:
    shifted = values - values.min()
    return (shifted / (1e-7 + shifted.max())).astype(np.float32)


def _as_array(cam: np.ndarray | torch.Tensor) -> np.ndarray:
    values = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    if values.ndim != 2:
        raise ValueError(f"expected one heatmap [H, W], got shape {values.shape}")
    return values
