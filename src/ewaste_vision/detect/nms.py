"""Non-maximum suppression in numpy, as torchvision's CPU `nms` and `batched_nms` compute it.

Both the ONNX detector's postprocess and the tile merge use it, so neither needs torch.
"""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, best score first, as `torchvision.ops.nms` on the CPU.

    A box goes when its IoU with a kept one is above `threshold`. As in torchvision's kernel, the
    sort is stable, the IoU is float32 arithmetic on the boxes' own dtype, and it is compared with
    the threshold in float64.

    Args:
        boxes: [n, 4] xyxy boxes.
        scores: [n] confidences.
        threshold: IoU above which the lower-scoring box of a pair is dropped.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])  # [r, 2]
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.clip(high - low, 0, None).prod(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = overlap / (areas[best] + areas[rest] - overlap)
        # Two empty boxes (clipped at the border) have IoU 0/0; torchvision keeps both, so NaN keeps.
        order = rest[~(iou.astype(np.float64) > threshold)]
    return np.asarray(kept, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Class-wise NMS: kept indices, best score first, equal scores in index order.

    That order is what `torchvision.ops.batched_nms` gives on up to 1,000 boxes (one stable sort
    over all of them); past that torchvision's order among equal scores is unspecified.
    """
    kept = [
        np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], threshold)]
        for label in np.unique(labels)
    ]
    merged = np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]
