"""Merging the detections of overlapping tiles into one list per image, in numpy.

Plain class-wise NMS is not enough: an object lying across a tile edge is seen whole in one tile
and cut in the next, and the cut fragment often overlaps the whole box with IoU below any
sensible NMS threshold, so it survives as a duplicate. Weighted box fusion would average the
fragment into the whole box and shrink it. So the rule here is, per class:

1. a box touching an interior tile edge (a "cut" box) is dropped when a box from another tile,
   not cut, mostly contains it: the overlap shows the object whole elsewhere;
2. cut boxes left over belong to objects larger than the overlap, cut in every tile; fragments
   from neighbouring tiles that agree inside the region both tiles see are fused into their union;
3. class-wise NMS then removes ordinary duplicates from the overlaps.

This is the one implementation, for the PyTorch and the ONNX detector alike: it runs after the
network, on a few hundred boxes, so numpy costs nothing next to the network and keeps ONNX-only
installs free of torch. The arithmetic follows torchvision's `box_iou` and CPU `nms` (`detect.nms`)
operation by operation in float32, so the PyTorch detector's boxes did not change when the merge
moved here from torch; only the order of equal scores among more than 1,000 boxes may differ,
which torchvision leaves unspecified.
"""

from __future__ import annotations

import numpy as np

from ewaste_vision.detect.nms import batched_nms

Window = tuple[int, int, int, int]
"""(x0, y0, x1, y1) of a tile in image pixels, end-exclusive."""

ArrayDetections = dict[str, np.ndarray]
"""`boxes` [N, 4] float32 xyxy pixels, `scores` [N] float32, `labels` [N] int64."""

CONTAINED = 0.7
"""Share of a cut box's area that a whole box must cover to show the same object."""


def touches_interior_edge(
    local: np.ndarray, window: Window, width: int, height: int, tolerance: float
) -> np.ndarray:
    """[n] bool: the box (tile pixels, [n, 4]) reaches a side of its tile that is not also a side
    of the image (`width` x `height`)."""
    x0, y0, x1, y1 = window
    low = np.float32(tolerance)
    high_x, high_y = np.float32((x1 - x0) - tolerance), np.float32((y1 - y0) - tolerance)
    # Image borders are real ends of objects, not cuts, so only interior sides count.
    return (
        ((local[:, 0] <= low) & (x0 > 0))
        | ((local[:, 1] <= low) & (y0 > 0))
        | ((local[:, 2] >= high_x) & (x1 < width))
        | ((local[:, 3] >= high_y) & (y1 < height))
    )


def merge_tiles(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    tile_ids: np.ndarray,
    cut: np.ndarray,
    windows: np.ndarray,
    iou_merge: float,
) -> ArrayDetections:
    """Steps 1 to 3 of the module docstring on all tiles' boxes.

    Args:
        boxes: [n, 4] float32 boxes in image pixels.
        scores: [n] float32 confidences.
        labels: [n] int64 classes.
        tile_ids: [n] index into `windows` of the tile each box came from.
        cut: [n] bool, from `touches_interior_edge`.
        windows: [t, 4] float32 tile windows in image pixels.
        iou_merge: IoU above which two same-class boxes are one object (NMS, fragment fusion).

    Returns:
        Boxes [K, 4] float32, scores [K] float32 and labels [K] int64, highest score first.
    """
    keep = np.ones(len(boxes), dtype=bool)
    boxes, scores = boxes.copy(), scores.copy()

    # Step 1: contained[k, j] is the share of the k-th cut box that box j covers. Only cut boxes
    # get a row, so a board with a thousand whole detections costs no thousand-square matrix.
    cut_index = np.flatnonzero(cut)  # [c]
    area = np.maximum(_area(boxes[cut_index]), np.float32(1e-6))
    contained = _intersection(boxes[cut_index], boxes) / area[:, None]  # [c, n]
    seen_whole = (
        (contained >= np.float32(CONTAINED))
        & (labels[cut_index, None] == labels[None, :])
        & (tile_ids[cut_index, None] != tile_ids[None, :])
        & ~cut[None, :]
    )  # [c, n]
    keep[cut_index[seen_whole.any(axis=1)]] = False

    # Step 2: fuse cut fragments from different tiles that agree inside the region both tiles see.
    fragments = np.flatnonzero(cut & keep).tolist()
    parent = {index: index for index in fragments}
    for position, i in enumerate(fragments):
        for j in fragments[position + 1 :]:
            if labels[i] != labels[j] or tile_ids[i] == tile_ids[j]:
                continue
            if _agree_in_shared_view(
                boxes[i], boxes[j], windows[tile_ids[i]], windows[tile_ids[j]], iou_merge
            ):
                parent[_root(parent, j)] = _root(parent, i)
    for index in fragments:
        root = _root(parent, index)
        if root != index:
            boxes[root, :2] = np.minimum(boxes[root, :2], boxes[index, :2])
            boxes[root, 2:] = np.maximum(boxes[root, 2:], boxes[index, 2:])
            scores[root] = max(scores[root], scores[index])
            keep[index] = False

    # Step 3: ordinary duplicates in the overlaps, best score first.
    kept = np.flatnonzero(keep)
    order = kept[batched_nms(boxes[kept], scores[kept], labels[kept], iou_merge)]
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


def _agree_in_shared_view(
    box_a: np.ndarray, box_b: np.ndarray, window_a: np.ndarray, window_b: np.ndarray, iou_merge: float
) -> bool:
    """Whether two fragments show the same object where both tiles look: IoU of their clipped parts."""
    shared = _clip(window_a, window_b)  # [4]
    if shared[2] <= shared[0] or shared[3] <= shared[1]:
        return False  # tiles that do not overlap are linked through a fragment between them
    a, b = _clip(box_a, shared), _clip(box_b, shared)  # [4] each
    inter = _intersection(a[None], b[None])[0, 0]
    # As torchvision's `box_iou`: a pair clipped to nothing is 0 / 0, NaN, which is no match.
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (_area(a[None])[0] + _area(b[None])[0] - inter)
    return bool(iou > np.float32(iou_merge))


def _root(parent: dict[int, int], index: int) -> int:
    while parent[index] != index:
        parent[index] = parent[parent[index]]
        index = parent[index]
    return index


def _clip(box: np.ndarray, region: np.ndarray) -> np.ndarray:
    low = np.maximum(box[:2], region[:2])
    high = np.maximum(np.minimum(box[2:], region[2:]), low)  # an empty clip has zero area
    return np.concatenate([low, high])


def _area(boxes: np.ndarray) -> np.ndarray:
    zero = np.float32(0)
    return np.maximum(boxes[:, 2] - boxes[:, 0], zero) * np.maximum(boxes[:, 3] - boxes[:, 1], zero)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low = np.maximum(a[:, None, :2], b[None, :, :2])  # [n, m, 2]
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [n, m, 2]
    return np.maximum(high - low, np.float32(0)).prod(axis=2)  # [n, m]
