"""Tiled inference: detect small parts on large board photos without shrinking them away.

A 4080x3060 photo resized to a 640 px detector input shrinks every part about 6.4 times, so a
12 px resistor becomes 2 px and is lost. Cutting the photo into overlapping detector-sized tiles
keeps the native resolution.

Merging the tiles' detections is the hard part. Plain class-wise NMS is not enough: an object
lying across a tile edge is seen whole in one tile and cut in the next, and the cut fragment
often overlaps the whole box with IoU below any sensible NMS threshold, so it survives as a
duplicate. Weighted box fusion would average the fragment into the whole box and shrink it. So
the rule here is, per class:

1. a box touching an interior tile edge (a "cut" box) is dropped when a box from another tile,
   not cut, mostly contains it: the overlap shows the object whole elsewhere;
2. cut boxes left over belong to objects larger than the overlap, cut in every tile; fragments
   from neighbouring tiles that agree inside the region both tiles see are fused into their union;
3. `torchvision.ops.batched_nms` then removes ordinary duplicates from the overlaps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch
from torchvision.ops import batched_nms, box_iou

from ewaste_vision.detect.metrics import DetectionPrediction

DetectFn = Callable[[list[torch.Tensor]], Sequence[Mapping[str, Any]]]
"""A detector: a list of [3, h, w] tiles in, one dict shaped like `DetectionPrediction` per tile
out, boxes in tile pixels (a torchvision detector in eval mode fits as it is)."""


class _HasShape(Protocol):
    """An image as `detect_images` takes it: a torch tensor or a numpy array, [..., H, W]."""

    @property
    def shape(self) -> tuple[int, ...]: ...


ImageT = TypeVar("ImageT", bound=_HasShape)
ResultT = TypeVar("ResultT")

Window = tuple[int, int, int, int]
"""(x0, y0, x1, y1) of a tile in image pixels, end-exclusive."""

_CONTAINED = 0.7
"""Share of a cut box's area that a whole box must cover to show the same object."""


def tile_windows(width: int, height: int, tile: int = 640, overlap: float = 0.2) -> list[Window]:
    """Square windows of side `tile` that cover the whole image, overlapping by `overlap`.

    Windows step by `tile * (1 - overlap)`; the last window in each row and column is shifted
    inward to end on the image border, so no window pads past the image and the last overlap may
    be larger. Along a side no longer than `tile` there is one window as long as the side.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        tile: window side in pixels, the detector's input size.
        overlap: fraction of `tile` shared by neighbouring windows, in [0, 1). Objects smaller
            than `tile * overlap` are seen whole in at least one window.

    Returns:
        Windows in row-major order, (x0, y0, x1, y1) with x1 and y1 exclusive.

    Raises:
        ValueError: on a non-positive size or tile, or an overlap outside [0, 1).
    """
    if width < 1 or height < 1 or tile < 1:
        raise ValueError(f"need positive sizes, got width={width}, height={height}, tile={tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, round(tile * (1.0 - overlap)))
    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in _starts(height, tile, stride)
        for x0 in _starts(width, tile, stride)
    ]


def needs_tiling(width: int, height: int, tile: int = 640, slack: float = 0.25) -> bool:
    """Whether an image is large enough that whole-image inference would shrink it noticeably.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        tile: the detector's input size.
        slack: how much larger than `tile` the long side may be before tiling pays; a little
            down-scaling costs less than the extra passes and the merging.

    Returns:
        True when the long side exceeds `tile * (1 + slack)`.
    """
    return max(width, height) > tile * (1.0 + slack)


def detect_images(
    images: Sequence[ImageT],
    detect_whole: Callable[[list[ImageT]], Sequence[ResultT]],
    detect_large: Callable[[ImageT], ResultT],
    tile_mode: str,
    tile_size: int,
    batch_size: int = 4,
) -> list[ResultT]:
    """Detections per image: large images one by one through `detect_large` (tiled), the others
    in batches through `detect_whole`. Works on torch tensors and numpy arrays alike.

    Args:
        images: [3, H, W] images.
        detect_whole: detects on a list of up to `batch_size` whole images, one result each.
        detect_large: detects on one image by tiles (`detect_tiled` and the same detector).
        tile_mode: `auto` (tile images that `needs_tiling` says are large), `always` or `never`.
        tile_size: the detector's input size.
        batch_size: whole images per `detect_whole` call.

    Returns:
        One result per image, in the order of `images`.
    """
    results: list[ResultT | None] = [None] * len(images)
    whole = []
    for index, image in enumerate(images):
        height, width = image.shape[-2:]
        if tile_mode == "always" or (tile_mode == "auto" and needs_tiling(width, height, tile_size)):
            results[index] = detect_large(image)
        else:
            whole.append(index)
    for start in range(0, len(whole), batch_size):
        chunk = whole[start : start + batch_size]
        for index, found in zip(chunk, detect_whole([images[i] for i in chunk]), strict=True):
            results[index] = found
    return [r for r in results if r is not None]


def detect_tiled(
    detect_fn: DetectFn,
    image: torch.Tensor,
    tile: int = 640,
    overlap: float = 0.2,
    iou_merge: float = 0.5,
    batch_size: int = 4,
    edge_tolerance: float = 2.0,
) -> DetectionPrediction:
    """Run a detector on overlapping tiles of a large image and merge the detections.

    Args:
        detect_fn: called with up to `batch_size` tiles, each a [3, h, w] view of `image`;
            returns one dict per tile with boxes in tile pixels.
        image: [3, H, W] float image in [0, 1].
        tile: tile side in pixels.
        overlap: fraction of `tile` shared by neighbouring tiles, in [0, 1).
        iou_merge: IoU above which two same-class boxes are one object (NMS, fragment fusion).
        batch_size: tiles per `detect_fn` call.
        edge_tolerance: a box side within this many pixels of an interior tile edge counts as cut.

    Returns:
        Boxes [K, 4] in image pixels, scores [K] and labels [K] (int64), highest score first, on
        the device of `image`.

    Raises:
        ValueError: if `image` is not [3, H, W], `batch_size` < 1, or `detect_fn` returns the
            wrong number of results.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a [3, H, W] tensor, got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    height, width = image.shape[1:]
    windows = tile_windows(width, height, tile, overlap)
    boxes, scores, labels, tile_ids, cut = [], [], [], [], []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        results = detect_fn([image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in batch])
        if len(results) != len(batch):
            raise ValueError(f"detect_fn returned {len(results)} results for {len(batch)} tiles")
        for offset, (window, result) in enumerate(zip(batch, results, strict=True)):
            local = result["boxes"].to(device=image.device, dtype=torch.float32).reshape(-1, 4)  # [n, 4]
            boxes.append(local + torch.tensor(window[:2] * 2, dtype=torch.float32, device=image.device))
            scores.append(result["scores"].to(device=image.device, dtype=torch.float32).reshape(-1))
            labels.append(result["labels"].to(device=image.device, dtype=torch.long).reshape(-1))
            tile_ids.append(torch.full((len(local),), start + offset, dtype=torch.long, device=image.device))
            cut.append(_touches_interior_edge(local, window, width, height, edge_tolerance))
    return _merge_tiles(
        torch.cat(boxes),
        torch.cat(scores),
        torch.cat(labels),
        torch.cat(tile_ids),
        torch.cat(cut),
        torch.tensor(windows, dtype=torch.float32, device=image.device),
        iou_merge,
    )


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last window ends on the border instead of padding past it
    return starts


def _touches_interior_edge(
    local: torch.Tensor, window: Window, width: int, height: int, tolerance: float
) -> torch.Tensor:
    """[n] bool: the box reaches a side of its tile that is not also a side of the image."""
    x0, y0, x1, y1 = window
    tile_w, tile_h = x1 - x0, y1 - y0
    # Image borders are real ends of objects, not cuts, so only interior sides count.
    return (
        ((local[:, 0] <= tolerance) & (x0 > 0))
        | ((local[:, 1] <= tolerance) & (y0 > 0))
        | ((local[:, 2] >= tile_w - tolerance) & (x1 < width))
        | ((local[:, 3] >= tile_h - tolerance) & (y1 < height))
    )


def _merge_tiles(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    tile_ids: torch.Tensor,
    cut: torch.Tensor,
    windows: torch.Tensor,
    iou_merge: float,
) -> DetectionPrediction:
    """Steps 1 to 3 of the module docstring on all tiles' boxes (image pixels, [n, 4])."""
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    boxes, scores = boxes.clone(), scores.clone()

    # Step 1: contained[k, j] is the share of the k-th cut box that box j covers. Only cut boxes
    # get a row, so a board with a thousand whole detections costs no thousand-square matrix.
    cut_index = torch.nonzero(cut).flatten()  # [c]
    contained = _intersection(boxes[cut_index], boxes) / _area(boxes[cut_index]).clamp(min=1e-6)[:, None]
    seen_whole = (
        (contained >= _CONTAINED)
        & (labels[cut_index, None] == labels[None, :])
        & (tile_ids[cut_index, None] != tile_ids[None, :])
        & ~cut[None, :]
    )  # [c, n]
    keep[cut_index[seen_whole.any(dim=1)]] = False

    # Step 2: fuse cut fragments from different tiles that agree inside the region both tiles see.
    fragments = torch.nonzero(cut & keep).flatten().tolist()
    parent = {index: index for index in fragments}
    for position, i in enumerate(fragments):
        for j in fragments[position + 1 :]:
            if labels[i] != labels[j] or tile_ids[i] == tile_ids[j]:
                continue
            window_i, window_j = windows[tile_ids[i]], windows[tile_ids[j]]
            if _agree_in_shared_view(boxes[i], boxes[j], window_i, window_j, iou_merge):
                parent[_root(parent, j)] = _root(parent, i)
    for index in fragments:
        root = _root(parent, index)
        if root != index:
            boxes[root, :2] = torch.minimum(boxes[root, :2], boxes[index, :2])
            boxes[root, 2:] = torch.maximum(boxes[root, 2:], boxes[index, 2:])
            scores[root] = torch.maximum(scores[root], scores[index])
            keep[index] = False

    # Step 3: ordinary duplicates in the overlaps; batched_nms returns indices best score first.
    kept = torch.nonzero(keep).flatten()
    order = kept[batched_nms(boxes[kept], scores[kept], labels[kept], iou_merge)]
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


def _agree_in_shared_view(
    box_a: torch.Tensor, box_b: torch.Tensor, window_a: torch.Tensor, window_b: torch.Tensor, iou_merge: float
) -> bool:
    """Whether two fragments show the same object where both tiles look: IoU of their clipped parts."""
    shared = _clip(window_a, window_b)  # [4]
    if shared[2] <= shared[0] or shared[3] <= shared[1]:
        return False  # tiles that do not overlap are linked through a fragment between them
    pair = torch.stack([_clip(box_a, shared), _clip(box_b, shared)])  # [2, 4]
    return bool(box_iou(pair[:1], pair[1:])[0, 0] > iou_merge)


def _root(parent: dict[int, int], index: int) -> int:
    while parent[index] != index:
        parent[index] = parent[parent[index]]
        index = parent[index]
    return index


def _clip(box: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    low = torch.maximum(box[:2], region[:2])
    high = torch.maximum(torch.minimum(box[2:], region[2:]), low)  # an empty clip has zero area
    return torch.cat([low, high])


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    low = torch.maximum(a[:, None, :2], b[None, :, :2])  # [n, m, 2]
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # [n, m, 2]
    return (high - low).clamp(min=0).prod(dim=2)  # [n, m]
