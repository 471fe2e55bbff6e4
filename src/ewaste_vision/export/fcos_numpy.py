"""torchvision's FCOS pre- and postprocessing in numpy, for the exported head graph.

Each step follows `GeneralizedRCNNTransform` and `FCOS.postprocess_detections` (torchvision
0.19-0.29) line by line, so boxes match the PyTorch detector's: resize so the long side is the
input size (bilinear, half-pixel centres, no antialias), pad to a multiple of 32, then per level
keep (point, class) pairs scoring above the floor, the best `topk_candidates` of them, decode,
clip, class-wise NMS (`detect.nms`, shared with the tile merge), and scale boxes back to the image
given.
"""

from __future__ import annotations

import math

import numpy as np

from ewaste_vision.detect.nms import batched_nms
from ewaste_vision.export.metadata import FcosSettings


def resize_bilinear(image: np.ndarray, settings: FcosSettings) -> np.ndarray:
    """[3, H, W] float32 -> [3, h, w], as `torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, recompute_scale_factor=True)` with FCOS's scale factor."""
    height, width = image.shape[1:]
    scale = min(settings.min_size / min(height, width), settings.max_size / max(height, width))
    out_h, out_w = math.floor(height * scale), math.floor(width * scale)
    rows = _linear_taps(height, out_h)
    cols = _linear_taps(width, out_w)
    top = image[:, rows[0], :] * rows[2][None, :, None] + image[:, rows[1], :] * rows[3][None, :, None]
    return (top[:, :, cols[0]] * cols[2] + top[:, :, cols[1]] * cols[3]).astype(np.float32)


def _linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of each output pixel along one axis (PyTorch's half-pixel rule)."""
    scale = np.float32(size_in) / np.float32(size_out)  # float division, as PyTorch's kernel
    source = np.maximum((np.arange(size_out, dtype=np.float32) + 0.5) * scale - 0.5, 0).astype(np.float32)
    low = source.astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    weight_high = (source - low).astype(np.float32)
    return low, high, (1 - weight_high).astype(np.float32), weight_high


def pad_batch(images: list[np.ndarray], mean: np.ndarray, divisible: int) -> np.ndarray:
    """Resized images -> [B, 3, H, W] padded on the bottom and right to multiples of `divisible`.

    Padding holds `mean`, which the graph normalises to 0: torchvision pads with zeros after
    normalising.
    """
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    height, width = (-(-side // divisible) * divisible for side in (height, width))
    batch = np.empty((len(images), 3, height, width), dtype=np.float32)
    batch[:] = mean.reshape(1, 3, 1, 1)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch


def level_anchors(grid: tuple[int, int], padded: tuple[int, int], anchor_size: int) -> np.ndarray:
    """[h * w, 4] anchors of one level, row-major, as torchvision's `AnchorGenerator` (one square
    anchor per cell, centred on the cell's top-left corner in input pixels)."""
    stride_y, stride_x = padded[0] // grid[0], padded[1] // grid[1]
    half = float(np.round(anchor_size / 2))
    ys, xs = np.meshgrid(
        np.arange(grid[0], dtype=np.float32) * stride_y,
        np.arange(grid[1], dtype=np.float32) * stride_x,
        indexing="ij",
    )
    x, y = xs.reshape(-1), ys.reshape(-1)  # [h * w]
    return np.stack([x - half, y - half, x + half, y + half], axis=1).astype(np.float32)


def decode_boxes(regression: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """FCOS's `BoxLinearCoder(normalize_by_size=True).decode`: [n, 4] distances -> [n, 4] xyxy."""
    centre_x = 0.5 * (anchors[:, 0] + anchors[:, 2])
    centre_y = 0.5 * (anchors[:, 1] + anchors[:, 3])
    width, height = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    scaled = regression * np.stack([width, height, width, height], axis=1)
    return np.stack(
        [centre_x - scaled[:, 0], centre_y - scaled[:, 1], centre_x + scaled[:, 2], centre_y + scaled[:, 3]],
        axis=1,
    ).astype(np.float32)


def postprocess(
    levels: list[tuple[np.ndarray, np.ndarray]],
    padded: tuple[int, int],
    resized: tuple[int, int],
    original: tuple[int, int],
    settings: FcosSettings,
) -> dict[str, np.ndarray]:
    """One image's detections from its head outputs.

    Args:
        levels: per level, scores [C, h, w] and box regression [4, h, w] of this image.
        padded: (H, W) of the batch given to the graph.
        resized: (h, w) of this image after resizing, before padding.
        original: (h, w) of the image as given.
        settings: the postprocess settings from the file.

    Returns:
        `boxes` [N, 4] float32 xyxy in pixels of the original image, `scores` [N] float32,
        `labels` [N] int64, best score first.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for (scores, regression), anchor_size in zip(levels, settings.anchor_sizes, strict=True):
        classes, grid = scores.shape[0], scores.shape[1:]
        flat = scores.reshape(classes, -1).T.reshape(-1)  # [h * w * C], point-major like torchvision
        candidates = np.flatnonzero(flat > settings.score_thresh)
        best = np.argsort(-flat[candidates], kind="stable")[: settings.topk_candidates]
        candidates = candidates[best]
        points = candidates // classes
        anchors = level_anchors((int(grid[0]), int(grid[1])), padded, anchor_size)[points]
        boxes = decode_boxes(regression.reshape(4, -1).T[points], anchors)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, resized[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, resized[0])
        all_boxes.append(boxes)
        all_scores.append(flat[candidates])
        all_labels.append(candidates % classes)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    labels = np.concatenate(all_labels).astype(np.int64)
    keep = batched_nms(boxes, scores, labels, settings.nms_thresh)[: settings.detections_per_img]
    ratio = np.asarray(original, dtype=np.float32) / np.asarray(resized, dtype=np.float32)  # (h, w)
    scale = np.asarray([ratio[1], ratio[0], ratio[1], ratio[0]], dtype=np.float32)
    return {"boxes": (boxes[keep] * scale).astype(np.float32), "scores": scores[keep], "labels": labels[keep]}
