"""Detecting at more than one input size, and choosing the sizes on the validation split.

A detector trained at 448 px sees a 640 px board's small parts shrunk by 0.7; run once more at the
photos' own resolution it finds parts the 448 px pass misses, while the 448 px pass keeps the large
ones. The two passes' boxes are merged by class-wise NMS, as one pass's are. Whether the second
pass pays is measured, not assumed: after training, validation mAP@0.5 of the training size alone
is compared with both sizes together, and the run keeps the better (`detect_sizes` in its
metadata). Runs without the entry detect at their training size only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ewaste_vision.detect.nms import batched_nms
from ewaste_vision.detect.tile_merge import ArrayDetections

NATIVE_MARGIN = 1.1
"""A second, native-resolution pass is tried only when photos are this much larger than the input..."""
NATIVE_LIMIT = 2.0
"""... and at most this much larger: the pass costs the square of the ratio (4x at the limit), and
photos far larger are a case for tiles, not for one huge pass."""


def detect_sizes(meta: Any) -> list[int]:
    """The input sizes a saved detector runs at: its `detect_sizes`, or its training size."""
    return [int(size) for size in meta.extra.get("detect_sizes", [meta.image_size])]


def candidate_sizes(image_size: int, source_size: int) -> list[list[int]]:
    """Size sets to compare on validation: the training size, and with it the photos' own size
    (rounded to the backbone's stride of 32) when the photos are clearly, but not hugely, larger."""
    candidates = [[image_size]]
    if image_size * NATIVE_MARGIN < source_size <= image_size * NATIVE_LIMIT:
        candidates.append([image_size, round(source_size / 32) * 32])
    return candidates


def merge_sizes(found: Sequence[ArrayDetections], iou: float, limit: int) -> ArrayDetections:
    """One image's detections from several input sizes as one list: class-wise NMS at the
    detector's own `iou`, best `limit` kept, highest score first."""
    if len(found) == 1:
        return dict(found[0])
    boxes = np.concatenate([f["boxes"] for f in found]).astype(np.float32)
    scores = np.concatenate([f["scores"] for f in found]).astype(np.float32)
    labels = np.concatenate([f["labels"] for f in found]).astype(np.int64)
    keep = batched_nms(boxes, scores, labels, iou)[:limit]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def choose_sizes(
    candidates: Sequence[Sequence[int]],
    detect_at: Callable[[int], list[ArrayDetections]],
    score: Callable[[list[ArrayDetections]], float],
    iou: float,
    limit: int,
) -> tuple[list[int], dict[str, float]]:
    """The candidate size set with the best `score` (validation mAP@0.5); ties keep the fewer sizes.

    Args:
        candidates: size sets, cheapest first.
        detect_at: detections on every validation image at one input size.
        score: the figure to maximise, from one detection list per validation image.
        iou: NMS threshold when merging sizes.
        limit: detections kept per image.

    Returns:
        The chosen sizes and each candidate's score, keyed like "448+640".
    """
    per_size = {size: detect_at(size) for size in {s for sizes in candidates for s in sizes}}
    scores: dict[str, float] = {}
    best: list[int] = list(candidates[0])
    for sizes in candidates:
        merged = [merge_sizes(parts, iou, limit) for parts in zip(*(per_size[s] for s in sizes), strict=True)]
        scores["+".join(map(str, sizes))] = value = score(merged)
        if value > scores["+".join(map(str, best))]:
            best = list(sizes)
    return best, scores
